#include <iostream>

#include "cli/commands.h"
#include "qkd/train/cache_teacher.h"
#include "qkd/train/run_config.h"
#include "qkd/train/stop_signal.h"

namespace qkd::cli {

void add_cache_teacher_command(CLI::App& app) {
  struct Options {
    std::string config;
    std::vector<std::string> overrides;
    train::CacheTeacherOptions cache;
  };
  auto opts = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "cache-teacher", "Store the teacher's top-k log-probabilities for a run's data stream (kd.teacher: cache)");
  cmd->add_option("--config", opts->config, "run config JSON: its teacher, data, train and kd.temperature")->required();
  cmd->add_option("--set", opts->overrides, "override a config value: a.b=value (repeatable)");
  cmd->add_option("--out", opts->cache.out_dir, "cache directory (continued when it holds this config's cache)")
      ->required();
  cmd->add_option("--top-k", opts->cache.top_k, "log-probabilities kept per token (default 32)");
  cmd->add_option("--shard-micro-batches", opts->cache.shard_micro_batches,
                  "micro-batches per shard file (default: about 64 MiB per shard)");
  cmd->callback([opts] {
    train::install_stop_handlers();  // a stop while the config or the teacher loads ends cleanly too
    const auto config = train::load_run_config(opts->config, opts->overrides);
    std::cout << train::format_cache_summary(train::cache_teacher(config, opts->cache)) << std::flush;
  });
}

}  // namespace qkd::cli
