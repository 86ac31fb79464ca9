#pragma once
// The ranks of a run and the collectives they use, on PyTorch's c10d: a TCPStore for the rendezvous
// (hosted by rank 0), ProcessGroupGloo on the CPU, ProcessGroupNCCL on CUDA. Every collective waits at
// most `timeout`; a failure or timeout throws qkd::Error naming the ranks that stopped answering
// (each rank beats a heartbeat counter in the store, so the survivors can tell which one is gone).
// A process started without a launcher needs no store and no backend: every collective returns at once.
#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "qkd/common/enum_table.h"
#include "qkd/distributed/launch.h"

namespace qkd::distributed {

enum class Backend { automatic, gloo, nccl };
const EnumTable<Backend>& backends();  // "auto" | "gloo" | "nccl"

struct CommunicatorOptions {
  Backend backend = Backend::automatic;  // automatic: NCCL for CUDA tensors, Gloo for the CPU
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
};

class Communicator {
 public:
  // One process: rank 0 of 1.
  Communicator();
  // Joins the run described by `launch` (blocks until every rank has arrived, at most options.timeout).
  // `device` is where the tensors handed to the collectives live.
  Communicator(const LaunchInfo& launch, const CommunicatorOptions& options, const torch::Device& device);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  bool is_root() const { return rank_ == 0; }
  // Whether collectives run at all: several ranks, or one started by a launcher.
  bool distributed() const { return group_ != nullptr; }
  Backend backend() const { return backend_; }

  // In place; every rank passes tensors of the same shapes and dtypes in the same order.
  void all_reduce_sum(std::vector<torch::Tensor>& tensors);
  void broadcast_from_root(std::vector<torch::Tensor>& tensors) { broadcast(tensors, 0); }
  // `root`'s values of `tensors` on every rank.
  void broadcast(std::vector<torch::Tensor>& tensors, int root);
  // Every rank's `tensor`, stacked in rank order: [world_size, ...].
  torch::Tensor all_gather(const torch::Tensor& tensor);
  void barrier();
  // Every rank's `text` under `key`, in rank order, through the rendezvous store (no process group
  // needed: what ranks compare before their collectives may even match). One process: {text}.
  std::vector<std::string> exchange_text(const std::string& key, const std::string& text);

  // Host wall seconds spent inside collectives since construction (with NCCL, until each is queued
  // behind the caller's stream; the trainer's phase timer synchronizes when asked to).
  double seconds_in_collectives() const { return collective_seconds_; }

 private:
  struct Group;
  torch::Device collective_device() const;  // where buffers are reduced: the GPU for NCCL, else the host
  bool gloo_lacks(torch::ScalarType type) const;  // a dtype Gloo cannot reduce or send (bfloat16)
  [[noreturn]] void fail_collective(const char* what, const std::exception& e);
  template <class Call>
  void run_collective(const char* what, Call&& call);

  int rank_ = 0;
  int world_size_ = 1;
  Backend backend_ = Backend::gloo;
  std::chrono::milliseconds timeout_{0};
  double collective_seconds_ = 0.0;
  std::unique_ptr<Group> group_;
};

}  // namespace qkd::distributed
