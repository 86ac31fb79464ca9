// qkd-train: quantization-aware knowledge distillation for LLaMA-family models.
// This file only dispatches to sub-commands; each lives in src/cli/<name>_command.cpp.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <c10/util/Exception.h>
#include <CLI/CLI.hpp>
#include <csignal>
#include <iostream>

#include "cli/commands.h"
#include "qkd/common/blas_kernels.h"
#include "qkd/common/error.h"
#include "qkd/common/json_io.h"
#include "qkd/common/system.h"

namespace {
// CLI11's own exit codes (104-114) and its two-line messages read as crashes to a script: a usage
// error is one "error:" line and exit 1, like every other bad input. --help still prints and exits 0.
int usage_error(CLI::App& app, const CLI::ParseError& e) {
  if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);
  std::string message = e.what();
  for (auto& c : message)
    if (c == '\n' || c == '\r') c = ' ';
  std::cerr << "error: " << qkd::printable(message, 300) << " (see qkd-train --help)" << std::endl;
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  // A write past `ulimit -f` fails with EFBIG (named by the writer) instead of killing the process.
  std::signal(SIGXFSZ, SIG_IGN);
  qkd::ensure_fast_blas_kernels(argv);
  qkd::keep_freed_memory_for_reuse();
  spdlog::set_default_logger(spdlog::stderr_color_mt("qkd"));
  spdlog::set_pattern("[%H:%M:%S] %^%l%$ %v");
  CLI::App app{"qkd-train: quantization-aware knowledge distillation of LLaMA-family models"};
  app.require_subcommand(0, 1);
  qkd::cli::add_train_command(app);
  qkd::cli::add_eval_command(app);
  qkd::cli::add_ptq_command(app);
  qkd::cli::add_logits_command(app);
  qkd::cli::add_report_command(app);
  qkd::cli::add_export_command(app);
  qkd::cli::add_cache_teacher_command(app);
  qkd::cli::add_tokenize_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return usage_error(app, e);
  } catch (const qkd::Error& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return 1;
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << std::endl;
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
