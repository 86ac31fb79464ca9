#include "qkd/distributed/sharded_optimizer.h"

#include <algorithm>

#include "qkd/distributed/replicas.h"

namespace qkd::distributed {

std::vector<int> shard_owners(const std::vector<int64_t>& sizes, int world_size) {
  std::vector<int64_t> load(static_cast<size_t>(std::max(1, world_size)), 0);
  std::vector<int> owners;
  owners.reserve(sizes.size());
  for (const auto size : sizes) {
    const auto lightest = std::min_element(load.begin(), load.end()) - load.begin();
    owners.push_back(static_cast<int>(lightest));
    load[lightest] += size;
  }
  return owners;
}

void broadcast_from_owners(Communicator& comm, const std::vector<torch::Tensor>& tensors,
                           const std::vector<int>& owners) {
  if (!comm.distributed()) return;
  torch::NoGradGuard no_grad;
  for (int root = 0; root < comm.world_size(); ++root) {
    std::vector<torch::Tensor> owned;  // same storage as the caller's tensors
    for (size_t i = 0; i < tensors.size(); ++i)
      if (owners[i] == root) owned.push_back(tensors[i]);
    comm.broadcast(owned, root);
  }
}

ShardedOptimizer::ShardedOptimizer(Communicator& ranks, const optim::AdamWOptions& adamw,
                                   const std::vector<std::pair<std::string, torch::Tensor>>& parameters,
                                   const ShardingOptions& options)
    : ranks_(ranks), adamw_(adamw), bucket_bytes_(options.bucket_bytes) {
  if (!options.shard_state || ranks.world_size() < 2) return;
  std::vector<int64_t> sizes;
  for (const auto& [_, p] : parameters) sizes.push_back(p.numel());
  const auto assigned = shard_owners(sizes, ranks.world_size());
  for (size_t i = 0; i < parameters.size(); ++i) owners_[parameters[i].first] = assigned[i];
  adamw_.shard([owners = owners_, rank = ranks.rank()](const std::string& name) { return owners.at(name) == rank; });
}

void ShardedOptimizer::reduce_gradients(const std::vector<torch::Tensor>& trainable) {
  if (ranks_.distributed()) average_gradients(ranks_, trainable, bucket_bytes_);
}

// Every parameter updated this step (it has a gradient and is registered) from its owner; then the
// update norms, each known on its owner only, summed over the ranks.
void ShardedOptimizer::share_updates(std::map<std::string, double>& update_norms,
                                     const std::vector<std::string>& measure) {
  if (!sharded()) return;
  std::vector<torch::Tensor> updated;
  std::vector<int> owners;
  for (const auto& name : adamw_.parameter_names()) {
    const auto param = adamw_.parameter(name);
    if (!param.grad().defined()) continue;
    updated.push_back(param);
    owners.push_back(owners_.at(name));
  }
  broadcast_from_owners(ranks_, updated, owners);
  if (measure.empty()) return;
  // Per name: its norm and 1 on the rank that updated it, 0 and 0 elsewhere; summed over the ranks.
  auto sums = torch::zeros({static_cast<int64_t>(measure.size()), 2}, torch::kFloat64);
  for (size_t i = 0; i < measure.size(); ++i)
    if (const auto it = update_norms.find(measure[i]); it != update_norms.end()) {
      sums[static_cast<int64_t>(i)][0] = it->second;
      sums[static_cast<int64_t>(i)][1] = 1.0;
    }
  std::vector<torch::Tensor> buffer{sums};
  ranks_.all_reduce_sum(buffer);
  update_norms.clear();
  for (size_t i = 0; i < measure.size(); ++i)
    if (sums[static_cast<int64_t>(i)][1].item<double>() > 0.0)
      update_norms[measure[i]] = sums[static_cast<int64_t>(i)][0].item<double>();
}

io::NamedTensors ShardedOptimizer::state() {
  if (!sharded()) return adamw_.state();
  std::map<std::string, optim::ParameterState> parts;
  std::vector<torch::Tensor> tensors;
  std::vector<int> owners;
  for (const auto& name : adamw_.parameter_names()) {
    auto& p = parts[name] = adamw_.parameter_state(name);
    for (const auto& [_, t] : p) {
      tensors.push_back(t);
      owners.push_back(owners_.at(name));
    }
  }
  broadcast_from_owners(ranks_, tensors, owners);
  return adamw_.state_from(parts);
}

}  // namespace qkd::distributed
