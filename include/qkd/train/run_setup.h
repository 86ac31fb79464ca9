#pragma once
// What a run checks and picks before anything heavy is loaded: its device (this rank's GPU under a
// launcher), the frozen teacher model in teacher.dtype, and the token files against the vocabulary.
// The trainer and `cache-teacher` share these, so both draw the same stream through the same teacher.
#include <torch/torch.h>

#include <cstdint>

#include "qkd/data/data_config.h"
#include "qkd/distributed/launch.h"
#include "qkd/model/llama.h"
#include "qkd/train/run_config.h"

namespace qkd::train {

// train.device, checked: a CUDA device fails naming train.device when CUDA is not available.
torch::Device run_device(const RunConfig& config);
// With several ranks, "cuda" means this rank's GPU: the one its local rank names.
torch::Device rank_device(const RunConfig& config, const distributed::LaunchInfo& launch);

// The frozen teacher (no gradients, eval mode) in teacher.dtype; float16 on the CPU computes in float32
// (LibTorch has no fast fp16 matmul there).
model::LlamaForCausalLM load_teacher_model(const RunConfig& config, const torch::Device& device);

// The rows of the teacher's embedding (config.json's vocab_size): what every id the run feeds must be
// below. Fails, naming both, when the tokenizer has more ids than that.
int64_t model_vocab_size(const RunConfig& config, int64_t tokenizer_vocab_size);

// Token files hold ids the embedding must have; one out of range would crash mid-run with torch's
// "index out of range in self".
void check_token_sources(const data::DataConfig& data, int64_t vocab_size);

}  // namespace qkd::train
