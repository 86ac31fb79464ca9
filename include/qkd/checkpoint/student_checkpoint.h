#pragma once
// A student checkpoint is a Hugging Face checkpoint directory (config.json, model.safetensors with
// the latent float weights, tokenizer.model) plus quantization.json (the QuantSpec) and
// quantizer_state.safetensors (scales, zero points, activation ranges). `eval`, `logits` and `train`
// load it; loading a plain Hugging Face directory gives the float model.
#include <optional>
#include <string>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/quant/quant_spec.h"

namespace qkd::checkpoint {

struct LoadedModel {
  model::LlamaForCausalLM model{nullptr};
  std::optional<quant::QuantSpec> quant;  // set for a student checkpoint
};

// Float model, or student with its quantizers attached and their state restored.
LoadedModel load_model_or_student(const std::string& dir, const LoadOptions& options = {});

bool is_student_checkpoint(const std::string& dir);

// quant::load_quantizer_state with errors that also name the file the state came from.
void load_quantizer_state_from(model::LlamaForCausalLMImpl& model, const io::NamedTensors& tensors,
                               const std::string& source);

void save_student_checkpoint(model::LlamaForCausalLMImpl& student, const quant::QuantSpec& spec, const std::string& dir,
                             torch::Dtype dtype, const std::string& tokenizer_source_dir);

}  // namespace qkd::checkpoint
