#define QKD_COMPAT_C10D
#include "qkd/distributed/communicator.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include <spdlog/spdlog.h>

#include <atomic>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "qkd/common/error.h"
#include "qkd/common/torch_compat.h"

namespace qkd::distributed {

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::milliseconds kHeartbeatPeriod{500};

std::string heartbeat_key(int rank) { return "qkd/heartbeat/" + std::to_string(rank); }

std::string first_line(const std::string& text) {
  const auto end = text.find('\n');
  return end == std::string::npos ? text : text.substr(0, end);
}

bool is_loopback(const std::string& host) { return host == "127.0.0.1" || host == "localhost" || host == "::1"; }

// torchrun's agent already hosts a store at MASTER_ADDR:MASTER_PORT and says so; the ranks then join it
// as clients, under the prefix of the agent's restart attempt (as torch.distributed does).
std::optional<std::string> agent_store_prefix() {
  const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  if (!agent || std::string(agent) != "True") return std::nullopt;
  const char* attempt = std::getenv("TORCHELASTIC_RESTART_COUNT");
  return std::string("/worker/attempt_") + (attempt ? attempt : "0");
}

// The rank's connection to the rendezvous store (rank 0 hosts it, unless torchrun's agent does).
c10::intrusive_ptr<c10d::Store> open_store(const LaunchInfo& launch, bool host, std::chrono::milliseconds timeout) {
  const auto prefix = agent_store_prefix();
  c10d::TCPStoreOptions options;
  options.port = static_cast<std::uint16_t>(launch.master_port);
  options.isServer = host && launch.rank == 0 && !prefix;
  options.waitWorkers = false;  // wait_for_every_rank counts the ranks in, against one deadline
  options.timeout = timeout;
  auto store = c10::make_intrusive<c10d::TCPStore>(launch.master_addr, options);
  if (!prefix) return store;
  return c10::make_intrusive<c10d::PrefixStore>(*prefix, store);
}

// Every rank counts itself in and waits until all have, by one deadline from the rank's start: the
// store's own worker count waited its timeout for the clients and then again for their keys, so a
// rank alone reported a missing peer after about twice dist.timeout_s.
void wait_for_every_rank(c10d::Store& store, const LaunchInfo& launch, Clock::time_point deadline) {
  const std::string key = "qkd/joined";
  int64_t joined = store.add(key, 1);
  while (joined < launch.world_size) {
    if (Clock::now() >= deadline)
      throw std::runtime_error(std::to_string(joined) + " of " + std::to_string(launch.world_size) + " ranks joined");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    joined = store.add(key, 0);
  }
}

// Beats this rank's counter in the store from its own connection, so that a rank stuck in (or killed
// during) a collective can be told from one that is alive.
class Heartbeat {
 public:
  Heartbeat(const LaunchInfo& launch, std::chrono::milliseconds timeout)
      : store_(open_store(launch, /*host=*/false, timeout)), key_(heartbeat_key(launch.rank)) {
    store_->add(key_, 1);
    thread_ = std::thread([this] { beat(); });
  }
  ~Heartbeat() {
    stop_ = true;
    thread_.join();
  }

 private:
  void beat() {
    while (!stop_) {
      std::this_thread::sleep_for(kHeartbeatPeriod);
      try {
        store_->add(key_, 1);
      } catch (const std::exception&) {
        return;  // the store's host is gone; the collective that notices says so
      }
    }
  }
  c10::intrusive_ptr<c10d::Store> store_;
  std::string key_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

Backend resolve_backend(Backend requested, const torch::Device& device) {
  if (requested == Backend::automatic) return device.is_cuda() ? Backend::nccl : Backend::gloo;
  if (requested == Backend::nccl && !device.is_cuda())
    fail("dist.backend", "\"nccl\" needs train.device cuda (Gloo is the CPU backend)");
  return requested;
}

#if QKD_HAVE_GLOO
std::shared_ptr<::gloo::transport::Device> gloo_device(const LaunchInfo& launch) {
  if (const char* iface = std::getenv("GLOO_SOCKET_IFNAME"))
    return c10d::ProcessGroupGloo::createDeviceForInterface(iface);
  // One host: bind loopback, which needs no resolvable host name.
  if (is_loopback(launch.master_addr)) return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}
#endif

c10::intrusive_ptr<compat::CollectiveBackend> make_backend(Backend backend, const LaunchInfo& launch,
                                                           const c10::intrusive_ptr<c10d::Store>& store,
                                                           std::chrono::milliseconds timeout) {
  if (backend == Backend::gloo) {
#if QKD_HAVE_GLOO
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    options->devices.push_back(gloo_device(launch));
    return c10::make_intrusive<c10d::ProcessGroupGloo>(store, launch.rank, launch.world_size, options);
#else
    fail("dist.backend", "this build's LibTorch has no Gloo headers; use \"nccl\" on CUDA");
#endif
  }
#if QKD_HAVE_NCCL
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, launch.rank, launch.world_size, options);
#else
  (void)launch, (void)store, (void)timeout;
  fail("dist.backend", "\"nccl\" needs a CUDA LibTorch 2.x build (docs/cuda.md)");
#endif
}

// Flattens same-dtype tensors into one buffer on `device` (c10d's tensor lists mean one tensor per
// device, and NCCL reduces CUDA memory while Gloo here reduces host memory).
torch::Tensor flatten(const std::vector<torch::Tensor>& tensors, const torch::Device& device) {
  std::vector<torch::Tensor> flat;
  flat.reserve(tensors.size());
  for (const auto& t : tensors) flat.push_back(t.reshape({-1}).to(device));
  return flat.size() == 1 ? flat[0].clone() : torch::cat(flat);
}

void unflatten_into(const torch::Tensor& buffer, std::vector<torch::Tensor>& tensors) {
  int64_t offset = 0;
  for (auto& t : tensors) {
    t.copy_(buffer.narrow(0, offset, t.numel()).view(t.sizes()));
    offset += t.numel();
  }
}

// Indices of `tensors` grouped by dtype, in first-seen order (one collective per dtype).
std::vector<std::vector<size_t>> by_dtype(const std::vector<torch::Tensor>& tensors) {
  std::vector<std::vector<size_t>> groups;
  std::map<int, size_t> index;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const int key = static_cast<int>(tensors[i].scalar_type());
    if (!index.count(key)) {
      index[key] = groups.size();
      groups.emplace_back();
    }
    groups[index[key]].push_back(i);
  }
  return groups;
}

}  // namespace

const EnumTable<Backend>& backends() {
  static const EnumTable<Backend> table{{Backend::automatic, "auto"}, {Backend::gloo, "gloo"}, {Backend::nccl, "nccl"}};
  return table;
}

struct Communicator::Group {
  LaunchInfo launch;
  torch::Device device{torch::kCPU};
  c10::intrusive_ptr<c10d::Store> store;
  std::unique_ptr<Heartbeat> heartbeat;
  c10::intrusive_ptr<compat::CollectiveBackend> backend;

  // Which ranks stopped beating: every counter read twice, a few periods apart.
  std::string lost_ranks() {
    try {
      std::vector<int64_t> before;
      for (int r = 0; r < launch.world_size; ++r) before.push_back(store->add(heartbeat_key(r), 0));
      std::this_thread::sleep_for(4 * kHeartbeatPeriod);
      std::vector<int> lost;
      for (int r = 0; r < launch.world_size; ++r)
        if (r != launch.rank && store->add(heartbeat_key(r), 0) == before[r]) lost.push_back(r);
      if (lost.empty()) return "every other rank is still alive";
      std::ostringstream out;
      out << (lost.size() == 1 ? "lost rank " : "lost ranks ");
      for (size_t i = 0; i < lost.size(); ++i) out << (i ? ", " : "") << lost[i];
      out << " (no heartbeat for " << 4 * kHeartbeatPeriod.count() << " ms)";
      return out.str();
    } catch (const std::exception&) {
      return "lost rank 0 (the rendezvous store at " + launch.master_addr + ":" + std::to_string(launch.master_port) +
             " no longer answers)";
    }
  }
};

Communicator::Communicator() = default;

Communicator::Communicator(const LaunchInfo& launch, const CommunicatorOptions& options, const torch::Device& device)
    : rank_(launch.rank), world_size_(launch.world_size), timeout_(options.timeout) {
  backend_ = resolve_backend(options.backend, device);
  // A launcher's world of one still gets its process group: a 1-GPU torchrun job runs its collectives
  // through NCCL like a larger one (and is how one GPU checks that path).
  if (launch.launcher == Launcher::single) return;
  group_ = std::make_unique<Group>();
  group_->launch = launch;
  group_->device = device;
  const std::string where = "rendezvous at " + launch.master_addr + ":" + std::to_string(launch.master_port);
  const auto deadline = Clock::now() + timeout_;
  try {
    group_->store = open_store(launch, /*host=*/true, timeout_);
    wait_for_every_rank(*group_->store, launch, deadline);
  } catch (const std::exception& e) {
    fail(where, "rank " + std::to_string(rank_) + " of " + std::to_string(world_size_) + " could not join within " +
                    std::to_string(timeout_.count() / 1000) + " s: " + first_line(e.what()));
  }
  group_->heartbeat = std::make_unique<Heartbeat>(launch, timeout_);
  try {
    group_->backend = make_backend(backend_, launch, group_->store, timeout_);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail(where, backends().name(backend_) + " process group: " + first_line(e.what()));
  }
  spdlog::info("rank {} of {} ({} backend, local rank {}, launched by {})", rank_, world_size_, backends().name(backend_),
               launch.local_rank, launchers().name(launch.launcher));
}

Communicator::~Communicator() = default;

void Communicator::fail_collective(const char* what, const std::exception& e) {
  const std::string lost = group_ ? group_->lost_ranks() : "";
  fail(std::string("distributed ") + what,
       "rank " + std::to_string(rank_) + " gave up: " + lost + "; " + backends().name(backend_) + " said: " +
           first_line(e.what()));
}

template <class Call>
void Communicator::run_collective(const char* what, Call&& call) {
  const auto start = Clock::now();
  try {
    auto work = call();
    // On CUDA, wait() orders the caller's stream after NCCL's; no host synchronization is needed.
    if (!work->wait(timeout_)) throw std::runtime_error("no answer within " + std::to_string(timeout_.count()) + " ms");
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail_collective(what, e);
  }
  collective_seconds_ += std::chrono::duration<double>(Clock::now() - start).count();
}

void Communicator::all_reduce_sum(std::vector<torch::Tensor>& tensors) {
  if (!distributed() || tensors.empty()) return;
  for (const auto& indices : by_dtype(tensors)) {
    std::vector<torch::Tensor> same;
    for (auto i : indices) same.push_back(tensors[i]);
    auto flat = flatten(same, collective_device());
    // Gloo has no bfloat16 arithmetic: such sums are taken in fp32 (and rounded once on the way back).
    if (gloo_lacks(flat.scalar_type())) flat = flat.to(torch::kFloat32);
    std::vector<torch::Tensor> buffer{flat};
    run_collective("all_reduce", [&] { return group_->backend->allreduce(buffer, c10d::AllreduceOptions()); });
    unflatten_into(buffer[0], same);
  }
}

void Communicator::broadcast(std::vector<torch::Tensor>& tensors, int root) {
  if (!distributed() || tensors.empty()) return;
  for (const auto& indices : by_dtype(tensors)) {
    std::vector<torch::Tensor> same;
    for (auto i : indices) same.push_back(tensors[i]);
    const auto flat = flatten(same, collective_device());
    // A copy needs no arithmetic: a type Gloo lacks travels as its bytes (same storage).
    std::vector<torch::Tensor> buffer{gloo_lacks(flat.scalar_type()) ? flat.view(torch::kUInt8) : flat};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    run_collective("broadcast", [&] { return group_->backend->broadcast(buffer, options); });
    unflatten_into(flat, same);
  }
}

torch::Tensor Communicator::all_gather(const torch::Tensor& tensor) {
  if (!distributed()) return tensor.unsqueeze(0).clone();
  std::vector<torch::Tensor> input{tensor.to(collective_device()).contiguous()};
  std::vector<std::vector<torch::Tensor>> output(1);
  for (int r = 0; r < world_size_; ++r) output[0].push_back(torch::empty_like(input[0]));
  run_collective("all_gather", [&] { return group_->backend->allgather(output, input, c10d::AllgatherOptions()); });
  return torch::stack(output[0]).to(tensor.device());
}

bool Communicator::gloo_lacks(torch::ScalarType type) const {
  return backend_ == Backend::gloo && type == torch::kBFloat16;
}

torch::Device Communicator::collective_device() const {
  return backend_ == Backend::nccl && group_ ? group_->device : torch::Device(torch::kCPU);
}

std::vector<std::string> Communicator::exchange_text(const std::string& key, const std::string& text) {
  if (!distributed()) return {text};
  const auto slot = [&](int r) { return "qkd/exchange/" + key + "/" + std::to_string(r); };
  std::vector<std::string> out;
  try {
    group_->store->set(slot(rank_), std::vector<uint8_t>(text.begin(), text.end()));
    for (int r = 0; r < world_size_; ++r) {
      const auto bytes = group_->store->get(slot(r));  // waits for that rank, at most the store's timeout
      out.emplace_back(bytes.begin(), bytes.end());
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail_collective("exchange", e);
  }
  return out;
}

void Communicator::barrier() {
  if (!distributed()) return;
  run_collective("barrier", [&] { return group_->backend->barrier(c10d::BarrierOptions()); });
}

}  // namespace qkd::distributed
