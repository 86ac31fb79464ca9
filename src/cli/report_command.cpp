#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "qkd/report/report.h"

namespace qkd::cli {

void add_report_command(CLI::App& app) {
  struct Options {
    std::vector<std::string> runs;
    std::string out = "report.html";
    std::string title = "qkd-train report";
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("report", "Self-contained HTML report of one run or an overlaid ablation");
  cmd->add_option("--run", o->runs, "run directory (repeat to overlay several)")->required();
  cmd->add_option("--out", o->out, "HTML file to write");
  cmd->add_option("--title", o->title, "page title");
  cmd->callback([o] {
    report::ReportOptions options;
    options.title = o->title;
    report::write_report(o->runs, o->out, options);
    spdlog::info("report written to {}", o->out);
  });
}

}  // namespace qkd::cli
