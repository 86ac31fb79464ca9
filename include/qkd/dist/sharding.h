#pragma once
// Optimizer-state sharding (ZeRO stage 1): each rank keeps the AdamW state (moments, fp32 masters) of
// its share of the parameters and updates only those; the updated values then go from each owner to
// every rank, so the replicas stay equal while the state's memory is divided by the number of ranks.
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "qkd/dist/communicator.h"

namespace qkd::dist {

// The owning rank of each parameter, balanced by size: parameters in order, each to the rank that holds
// the fewest elements so far (the lowest such rank). A pure function of the sizes: every rank computes
// the same assignment, and a run resumed on another number of ranks simply computes a new one.
std::vector<int> shard_owners(const std::vector<int64_t>& sizes, int world_size);

// Each of `tensors` from `owners[i]` to every rank, in place (one broadcast per owner and dtype).
void broadcast_from_owners(Communicator& comm, const std::vector<torch::Tensor>& tensors, const std::vector<int>& owners);

}  // namespace qkd::dist
