#pragma once
// The student a run starts from (student.init): a copy of the teacher whose quantizers round to
// nearest, the teacher quantized by GPTQ on the run's own data, or a checkpoint (a Hugging Face model,
// or a student saved with its quantizers, whose quant section must match the run's).
#include <torch/torch.h>

#include <string>
#include <vector>

#include "qkd/model/llama.h"
#include "qkd/train/run_config.h"

namespace qkd::train {

struct InitialStudent {
  model::LlamaForCausalLM model{nullptr};   // on the run's device, in training mode
  std::vector<std::string> quantized_modules;  // what the freeze policy may freeze
};

InitialStudent build_student(const RunConfig& config, const torch::Device& device);

}  // namespace qkd::train
