#pragma once
// Activation checkpointing, reentrant style (torch.utils.checkpoint with use_reentrant=True): a block
// runs without keeping its intermediate activations and is run again, with grad enabled, when backward
// reaches it. Trades about one extra forward of compute for the activation memory of the block.
#include <torch/torch.h>

#include <functional>
#include <vector>

namespace qkd::model {

// The checkpointed block. `recomputing` is false in the forward pass and true when backward re-runs
// it, so that side effects that belong to a forward (activation observers) happen once.
using CheckpointedFunction = std::function<torch::Tensor(const torch::Tensor& input, bool recomputing)>;

// function(input, false), keeping only `input` for backward when grad mode is on and `input` or one of
// `parameters` requires grad; otherwise just function(input, false). `parameters` are the tensors the
// block reads that may require grad (the result must require grad when only they do, as for a first
// layer fed by frozen embeddings). Backward re-runs function(input, true) under the autocast settings
// of the forward and backpropagates through it with a nested backward: parameter gradients accumulate
// into their .grad as usual, but torch::autograd::grad() does not reach them through this call.
// `function` must compute the same result both times (nothing here replays random number state) and
// must not modify `input` in place.
torch::Tensor checkpoint(const CheckpointedFunction& function, const torch::Tensor& input,
                         const std::vector<torch::Tensor>& parameters);

}  // namespace qkd::model
