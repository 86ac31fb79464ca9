#pragma once
// Who this process is in a multi-process run, read from the launcher's environment: torchrun
// (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) or SLURM (SLURM_PROCID, SLURM_NTASKS,
// SLURM_LOCALID, the master being MASTER_ADDR or the job's first host). Neither: one process.
#include <functional>
#include <optional>
#include <string>

#include "qkd/common/enum_table.h"

namespace qkd::distributed {

enum class Launcher { single, torchrun, slurm };
const EnumTable<Launcher>& launchers();  // "single" | "torchrun" | "slurm"

struct LaunchInfo {
  Launcher launcher = Launcher::single;
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;                     // the GPU this rank binds on its host
  std::string master_addr = "127.0.0.1";  // host of rank 0, where the rendezvous store listens
  int master_port = 29500;
  bool distributed() const { return world_size > 1; }
};

// An environment variable's value, or nothing when it is unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;

// Throws qkd::Error naming the variable for a value that is not a number or out of range
// ("RANK: 3 is not below WORLD_SIZE 2").
LaunchInfo detect_launch(const EnvLookup& env);
LaunchInfo detect_launch_from_environment();

// The first host of a SLURM node list: "gpu[03-05,7],login1" -> "gpu03".
std::string first_slurm_host(const std::string& nodelist);

}  // namespace qkd::distributed
