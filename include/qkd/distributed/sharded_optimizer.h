#pragma once
// The optimizer of a run on several ranks, and the one place that knows which rank updates which
// parameter. With dist.shard_optimizer (ZeRO stage 1) each rank keeps the AdamW state (moments, fp32
// masters) of its share of the parameters and updates only those; the updated values then go from each
// owner to every rank, so the replicas stay equal while the state's memory is divided by the number of
// ranks. Unsharded, or on one rank, it is the local AdamW and nothing more.
//
// Everything sharding touches goes through here: the owner map, the gradient reduction before the
// step, the update broadcast after it, and the checkpoint's gather (and resume). That is where later
// stages attach: ZeRO-2 turns reduce_gradients into a reduce-scatter to the owners, ZeRO-3 gathers each
// owner's parameters around their use.
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "qkd/distributed/communicator.h"
#include "qkd/io/safetensors.h"
#include "qkd/optim/adamw.h"

namespace qkd::distributed {

// The owning rank of each parameter, balanced by size: parameters in order, each to the rank that holds
// the fewest elements so far (the lowest such rank). A pure function of the sizes: every rank computes
// the same assignment, and a run resumed on another number of ranks simply computes a new one.
std::vector<int> shard_owners(const std::vector<int64_t>& sizes, int world_size);

// Each of `tensors` from `owners[i]` to every rank, in place (one broadcast per owner and dtype).
void broadcast_from_owners(Communicator& comm, const std::vector<torch::Tensor>& tensors, const std::vector<int>& owners);

struct ShardingOptions {
  bool shard_state = true;  // dist.shard_optimizer; meaningless on one rank
  int64_t bucket_bytes = int64_t{25} << 20;  // gradients per all-reduce
};

class ShardedOptimizer {
 public:
  // `parameters`: every parameter of the model by name, in model order, trained now or not: each gets an
  // owner, so a projection released later already has one. Register the trained ones through local().
  ShardedOptimizer(Communicator& ranks, const optim::AdamWOptions& adamw,
                   const std::vector<std::pair<std::string, torch::Tensor>>& parameters, const ShardingOptions& options);

  // The rank-local AdamW that registers, drops and re-adds parameters (freezes and releases go through
  // it). It holds state for this rank's share only.
  optim::AdamW& local() { return adamw_; }
  bool sharded() const { return !owners_.empty(); }

  // Gradients of `trainable` averaged over the ranks (every rank's loss is a mean over the same number
  // of tokens, so the average is the global batch's gradient). Nothing to do on one process.
  void reduce_gradients(const std::vector<torch::Tensor>& trainable);

  // One update at `lr` of this rank's share. Returns the update norms of the parameters named in
  // `measure` that this rank updated. share_updates() must follow before anything reads the weights.
  std::map<std::string, double> step(double lr, const std::vector<std::string>& measure) {
    return adamw_.step(lr, measure);
  }
  // After step(): every updated parameter from its owner to all ranks, and the update norms (each known
  // on its owner only) summed over the ranks. Nothing to do unsharded.
  void share_updates(std::map<std::string, double>& update_norms, const std::vector<std::string>& measure);
  void zero_grad() { adamw_.zero_grad(); }

  // The whole optimizer state, rank-independent (a sharded state is gathered from the owners): every
  // rank calls it, as every rank takes part in the gather.
  io::NamedTensors state();
  // Each rank restores its own share from a whole state. `source` names the file in errors.
  void load_state(const io::NamedTensors& state, const std::string& source) { adamw_.load_state(state, source); }
  // Bytes of optimizer state on this rank.
  int64_t state_bytes() const { return adamw_.state_bytes(); }

 private:
  Communicator& ranks_;
  optim::AdamW adamw_;
  std::map<std::string, int> owners_;  // empty: every rank keeps all of it
  int64_t bucket_bytes_;
};

}  // namespace qkd::distributed
