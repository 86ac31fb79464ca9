#include "qkd/distributed/launch.h"

#include <cstdlib>

#include "qkd/common/error.h"

namespace qkd::distributed {

namespace {

int read_int(const EnvLookup& env, const std::string& name, int min, int max) {
  const auto text = env(name);
  if (!text) fail(name, "not set");
  try {
    size_t used = 0;
    const long value = std::stol(*text, &used);
    if (used == text->size() && value >= min && value <= max) return static_cast<int>(value);
  } catch (const std::exception&) {
  }
  fail(name, "expected an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "], got \"" + *text + "\"");
}

// Rank, world size and (optional) local rank from the launcher's three variables.
LaunchInfo ranks_from(const EnvLookup& env, Launcher launcher, const char* rank_name, const char* world_name,
                      const char* local_name) {
  LaunchInfo info;
  info.launcher = launcher;
  info.world_size = read_int(env, world_name, 1, 1 << 20);
  info.rank = read_int(env, rank_name, 0, 1 << 20);
  info.local_rank = env(local_name) ? read_int(env, local_name, 0, 1 << 20) : 0;
  if (info.rank >= info.world_size)
    fail(rank_name, std::to_string(info.rank) + " is not below " + world_name + " " + std::to_string(info.world_size));
  return info;
}

LaunchInfo torchrun(const EnvLookup& env) {
  auto info = ranks_from(env, Launcher::torchrun, "RANK", "WORLD_SIZE", "LOCAL_RANK");
  const auto addr = env("MASTER_ADDR");
  if (addr && !addr->empty())
    info.master_addr = *addr;
  else if (info.distributed())
    fail("MASTER_ADDR", "not set (torchrun sets it; so must a manual launch)");
  if (env("MASTER_PORT") || info.distributed()) info.master_port = read_int(env, "MASTER_PORT", 1, 65535);
  return info;
}

LaunchInfo slurm(const EnvLookup& env) {
  auto info = ranks_from(env, Launcher::slurm, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID");
  if (const auto addr = env("MASTER_ADDR"); addr && !addr->empty()) {
    info.master_addr = *addr;
  } else {
    const auto nodes = env("SLURM_JOB_NODELIST") ? env("SLURM_JOB_NODELIST") : env("SLURM_NODELIST");
    if (info.distributed() && (!nodes || nodes->empty()))
      fail("SLURM_JOB_NODELIST", "not set, and no MASTER_ADDR: rank 0's host is unknown");
    if (nodes && !nodes->empty()) info.master_addr = first_slurm_host(*nodes);
  }
  if (env("MASTER_PORT")) info.master_port = read_int(env, "MASTER_PORT", 1, 65535);
  return info;
}

}  // namespace

const EnumTable<Launcher>& launchers() {
  static const EnumTable<Launcher> table{
      {Launcher::single, "single"}, {Launcher::torchrun, "torchrun"}, {Launcher::slurm, "slurm"}};
  return table;
}

LaunchInfo detect_launch(const EnvLookup& env) {
  // torchrun first: a torchrun inside a SLURM allocation sets both, and its variables describe the ranks.
  if (env("RANK") || env("WORLD_SIZE")) return torchrun(env);
  if (env("SLURM_PROCID") && env("SLURM_NTASKS")) return slurm(env);
  return LaunchInfo{};
}

LaunchInfo detect_launch_from_environment() {
  return detect_launch([](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (!value) return std::nullopt;
    return std::string(value);
  });
}

std::string first_slurm_host(const std::string& nodelist) {
  // The first entry ends at a comma outside brackets: "gpu[03-05,7]" is one entry.
  std::string entry;
  int depth = 0;
  for (char c : nodelist) {
    if (c == ',' && depth == 0) break;
    depth += c == '[' ? 1 : c == ']' ? -1 : 0;
    entry += c;
  }
  const auto open = entry.find('[');
  if (open == std::string::npos) return entry;
  // "gpu[03-05,7]": the prefix, then the first number of the range list, zero padding kept.
  std::string first;
  for (size_t i = open + 1; i < entry.size() && entry[i] != '-' && entry[i] != ',' && entry[i] != ']'; ++i)
    first += entry[i];
  if (first.empty()) fail("SLURM_JOB_NODELIST", "cannot read a host from \"" + nodelist + "\"");
  return entry.substr(0, open) + first + (entry.find(']') + 1 < entry.size() ? entry.substr(entry.find(']') + 1) : "");
}

}  // namespace qkd::distributed
