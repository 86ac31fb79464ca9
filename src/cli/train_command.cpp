#include <spdlog/spdlog.h>

#include <filesystem>
#include <iostream>
#include "cli/commands.h"

#include "qkd/report/report.h"
#include "qkd/train/run_config.h"
#include "qkd/train/fault_drill.h"
#include "qkd/train/run_digest.h"
#include "qkd/train/stop_signal.h"
#include "qkd/train/trainer.h"

namespace qkd::cli {

namespace {
struct TrainOptions {
  std::string config;
  std::vector<std::string> overrides;
};

void run(const TrainOptions& opts) {
  // From the first moment: SIGTERM while the config or the models load stops the run cleanly (exit 0
  // before step 1), as it does later, instead of killing the process.
  train::install_stop_handlers();
  const auto config = train::load_run_config(opts.config, opts.overrides);
  const auto summary = train::run_training(config, train::drill_hooks_from_environment());
  spdlog::info("{} after {} steps in {:.1f} s ({:.0f} tok/s, peak RSS {:.0f} MB)",
               summary.interrupted ? "stopped" : "finished", summary.totals.steps_completed, summary.totals.wall_seconds,
               summary.totals.tokens_per_second, summary.totals.peak_rss_mb);
  if (summary.ranks.rank != 0) return;  // rank 0 reports for the run
  if (!summary.outputs.final_eval.is_null()) spdlog::info("final eval: {}", summary.outputs.final_eval.dump());
  train::DigestPaths paths{opts.config, ""};
  if (!summary.interrupted) {
    // The report is a convenience: a run that trained and exported does not fail because of it.
    const auto report_path = (std::filesystem::path(config.run_dir()) / "report.html").string();
    try {
      report::write_report({config.run_dir()}, report_path);
      paths.report = report_path;
    } catch (const std::exception& e) {
      spdlog::warn("no report written: {}", e.what());
    }
  }
  std::cout << "\n" << train::format_run_digest(config, summary, paths) << std::flush;
}

void add_train_options(CLI::App& app, TrainOptions& opts, bool required) {
  auto* config = app.add_option("--config", opts.config, "run config JSON (see configs/)");
  if (required) config->required();
  app.add_option("--set", opts.overrides, "override a config value: a.b=value (repeatable)");
}
}  // namespace

void add_train_command(CLI::App& app) {
  // `qkd-train --config FILE` and `qkd-train train --config FILE` are the same job.
  auto top = std::make_shared<TrainOptions>();
  add_train_options(app, *top, false);
  app.callback([top, &app] {
    if (app.get_subcommands().empty()) {
      if (top->config.empty()) throw CLI::CallForHelp();
      run(*top);
    }
  });
  auto opts = std::make_shared<TrainOptions>();
  auto* cmd = app.add_subcommand("train", "Distill a frozen teacher into a fake-quantized student (KD-QAT)");
  add_train_options(*cmd, *opts, true);
  cmd->callback([opts] { run(*opts); });
}

}  // namespace qkd::cli
