#pragma once
// Types shared by the evaluation harness. The harness never sees the model: it calls a LogitsFn, so
// the same code scores the teacher, a quantized student, or a fake in the tests.
#include <torch/torch.h>

#include <cstdint>
#include <functional>

namespace qkd::eval {

// input_ids [B, T] int64 -> logits [B, T, V] in any float dtype, on any device.
using LogitsFn = std::function<torch::Tensor(const torch::Tensor& input_ids)>;

// Called after every batch with (units done, units total); units are windows (perplexity) or
// (item, choice) requests (multiple choice). The library prints nothing itself.
using ProgressFn = std::function<void(int64_t done, int64_t total)>;

}  // namespace qkd::eval
