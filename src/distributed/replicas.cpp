#include "qkd/distributed/replicas.h"

#include <cstring>

#include "qkd/common/error.h"

namespace qkd::distributed {

void average_gradients(Communicator& comm, const std::vector<torch::Tensor>& parameters, int64_t bucket_bytes) {
  if (!comm.distributed()) return;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> bucket;
  int64_t bytes = 0;
  const double share = 1.0 / static_cast<double>(comm.world_size());
  const auto reduce = [&] {
    if (bucket.empty()) return;
    comm.all_reduce_sum(bucket);
    for (auto& g : bucket) g.mul_(share);
    bucket.clear();
    bytes = 0;
  };
  for (const auto& p : parameters) {
    auto grad = p.grad();
    if (!grad.defined()) continue;
    bucket.push_back(grad);
    bytes += grad.numel() * static_cast<int64_t>(grad.element_size());
    if (bytes >= bucket_bytes) reduce();
  }
  reduce();
}

void copy_from_root(Communicator& comm, const std::vector<torch::Tensor>& tensors) {
  if (!comm.distributed()) return;
  torch::NoGradGuard no_grad;
  auto copies = tensors;  // same storage: the broadcast writes into the tensors themselves
  comm.broadcast_from_root(copies);
}

uint64_t fingerprint(const std::vector<torch::Tensor>& tensors) {
  uint64_t hash = 1469598103934665603ull;
  for (const auto& t : tensors) {
    const auto bytes = t.detach().to(torch::kCPU).contiguous();
    const auto* data = static_cast<const unsigned char*>(bytes.data_ptr());
    const size_t n = static_cast<size_t>(bytes.numel()) * bytes.element_size();
    for (size_t i = 0; i < n; ++i) hash = (hash ^ data[i]) * 1099511628211ull;
  }
  return hash;
}

std::vector<uint64_t> replica_fingerprints(Communicator& comm, const std::vector<torch::Tensor>& tensors) {
  int64_t mine;
  const uint64_t hash = fingerprint(tensors);
  std::memcpy(&mine, &hash, sizeof mine);
  const auto gathered = comm.all_gather(torch::tensor({mine}, torch::kInt64)).to(torch::kCPU);
  std::vector<uint64_t> out;
  for (int64_t r = 0; r < gathered.size(0); ++r) {
    const int64_t value = gathered[r][0].item<int64_t>();
    uint64_t u;
    std::memcpy(&u, &value, sizeof u);
    out.push_back(u);
  }
  return out;
}

void average_values(Communicator& comm, std::vector<double>& values) {
  if (!comm.distributed() || values.empty()) return;
  std::vector<torch::Tensor> buffer{torch::tensor(values, torch::kFloat64)};
  comm.all_reduce_sum(buffer);
  const auto sums = buffer[0].to(torch::kCPU);
  for (size_t i = 0; i < values.size(); ++i)
    values[i] = sums[static_cast<int64_t>(i)].item<double>() / comm.world_size();
}

torch::Tensor local_share(const torch::Tensor& global_batch, int rank, int world_size) {
  const int64_t rows = global_batch.size(0);
  if (rows % world_size != 0)
    fail("distributed batch", std::to_string(rows) + " rows do not split evenly over " + std::to_string(world_size) +
                                  " ranks");
  const int64_t per_rank = rows / world_size;
  return global_batch.narrow(0, rank * per_rank, per_rank);
}

}  // namespace qkd::distributed
