#include "qkd/dist/sharding.h"

#include <algorithm>

namespace qkd::dist {

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

void broadcast_from_owners(Communicator& comm, const std::vector<torch::Tensor>& tensors, const std::vector<int>& owners) {
  if (!comm.distributed()) return;
  torch::NoGradGuard no_grad;
  for (int root = 0; root < comm.world_size(); ++root) {
    std::vector<torch::Tensor> owned;  // same storage as the caller's tensors
    for (size_t i = 0; i < tensors.size(); ++i)
      if (owners[i] == root) owned.push_back(tensors[i]);
    comm.broadcast(owned, root);
  }
}

}  // namespace qkd::dist
