#pragma once
// The `dist` section of a run config: how the ranks that torchrun or SLURM started talk to each other
// (launch.h reads who is who).
#include <cstdint>

#include "qkd/common/config_fields.h"
#include "qkd/distributed/communicator.h"

namespace qkd::distributed {

struct DistributedConfig {
  Backend backend = Backend::automatic;  // auto: NCCL on CUDA, Gloo on the CPU
  int64_t timeout_s = 300;               // any collective; a rank gone longer fails the others
  double bucket_mb = 25.0;               // gradients per all-reduce
  // ZeRO stage 1: each rank keeps the AdamW state (moments, fp32 masters) of its share of the parameters.
  bool shard_optimizer = true;
  template <class Fields>
  void fields(Fields& f) {
    f.choice("backend", backend, backends());
    f.integer("timeout_s", timeout_s, 1, 7 * 24 * 3600);
    f.number("bucket_mb", bucket_mb, 0.001, 1 << 20);
    f.flag("shard_optimizer", shard_optimizer);
  }
  CommunicatorOptions communicator() const {
    return {backend, std::chrono::seconds(timeout_s)};
  }
  int64_t bucket_bytes() const { return static_cast<int64_t>(bucket_mb * 1024 * 1024); }
};

}  // namespace qkd::distributed
