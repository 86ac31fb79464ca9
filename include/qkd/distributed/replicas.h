#pragma once
// Data parallelism over the ranks of a Communicator: every rank holds the whole student, computes
// gradients on its own slice of the global batch, and averages them with the others before the
// optimizer step, so that every replica takes the same step.
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "qkd/distributed/communicator.h"

namespace qkd::distributed {

// Averages the gradients of `parameters` over the ranks, `bucket_bytes` at a time (one all-reduce per
// bucket and dtype). Parameters without a gradient (frozen ones, the same on every rank) are skipped.
void average_gradients(Communicator& comm, const std::vector<torch::Tensor>& parameters, int64_t bucket_bytes);

// Rank 0's values of `tensors` on every rank (the student at the start, so replicas start equal).
void copy_from_root(Communicator& comm, const std::vector<torch::Tensor>& tensors);

// FNV-1a over the bytes of `tensors` in order: equal on two ranks exactly when their values are
// bitwise equal (up to hash collisions).
uint64_t fingerprint(const std::vector<torch::Tensor>& tensors);

// Every rank's fingerprint of `tensors`, in rank order.
std::vector<uint64_t> replica_fingerprints(Communicator& comm, const std::vector<torch::Tensor>& tensors);

// The mean over the ranks of each of `values` (every rank passes the same length), in place.
void average_values(Communicator& comm, std::vector<double>& values);

// Rows `rank * rows / world .. (rank + 1) * rows / world` of a global batch: this rank's share.
torch::Tensor local_share(const torch::Tensor& global_batch, int rank, int world_size);

}  // namespace qkd::distributed
