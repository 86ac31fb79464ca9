#include "qkd/train/run_digest.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

namespace qkd::train {

namespace {

std::string ppl_cell(const nlohmann::json& table, const std::string& file) {
  if (!table.is_object() || !table.contains(file) || !table.at(file).is_number()) return "-";
  return fmt::format("{:.3f}", table.at(file).get<double>());
}

// One row per perplexity file: teacher | round-to-nearest | student.
std::string perplexity_table(const TrainSummary& summary) {
  const auto& final_ppl =
      summary.outputs.final_eval.is_object() ? summary.outputs.final_eval.value("ppl", nlohmann::json()) : nlohmann::json();
  const auto& base = summary.outputs.baselines;
  const auto teacher = base.is_object() ? base.value("teacher", nlohmann::json()) : nlohmann::json();
  const auto rtn = base.is_object() ? base.value("student", nlohmann::json()) : nlohmann::json();
  const auto& files = final_ppl.is_object() && !final_ppl.empty() ? final_ppl : teacher;
  if (!files.is_object() || files.empty()) return "";
  std::string out = "  validation perplexity (lower is better):\n";
  out += fmt::format("    {:<28} {:>10} {:>17} {:>10}\n", "file", "teacher", "round-to-nearest", "student");
  for (const auto& [file, _] : files.items())
    out += fmt::format("    {:<28} {:>10} {:>17} {:>10}\n", file, ppl_cell(teacher, file), ppl_cell(rtn, file),
                       ppl_cell(final_ppl, file));
  return out;
}

std::string cloze_lines(const TrainSummary& summary) {
  if (!summary.outputs.final_eval.is_object() || !summary.outputs.final_eval.contains("mc")) return "";
  std::string out;
  for (const auto& [file, score] : summary.outputs.final_eval.at("mc").items())
    out += fmt::format("  multiple choice {}: acc {:.3f}, acc_norm {:.3f} (n={})\n", file, score.value("acc", 0.0),
                       score.value("acc_norm", 0.0), score.value("n", 0));
  return out;
}

std::string next_commands(const RunConfig& config, const TrainSummary& summary, const DigestPaths& paths) {
  std::string out = "Next:\n";
  if (!paths.report.empty())
    out += fmt::format("  qkd-train report --run {} --run OTHER_RUN_DIR --out compare.html   # overlay another run\n",
                       config.run_dir());
  const auto hf = std::find_if(summary.outputs.exported.begin(), summary.outputs.exported.end(),
                               [](const std::string& p) { return std::filesystem::path(p).filename() == "hf"; });
  if (hf != summary.outputs.exported.end() && !config.eval().ppl.empty())
    out += fmt::format("  qkd-train eval --model {} --ppl {} --json {}/eval.json   # the exported student\n", *hf,
                       config.eval().ppl.front(), config.run_dir());
  if (!paths.config.empty())
    out += fmt::format(
        "  qkd-train --config {} --set freeze.policy=ov --set run_dir={}-ov   # the same run with ov-freeze\n",
        paths.config, config.run_dir());
  return out;
}

}  // namespace

std::string format_run_digest(const RunConfig& config, const TrainSummary& summary, const DigestPaths& paths) {
  if (summary.interrupted && summary.outputs.last_checkpoint.empty())
    return "Stopped before step 1 (nothing to checkpoint yet).\nStart again: run the same command.\n";
  if (summary.interrupted)
    return fmt::format("Stopped after step {} of {}; checkpoint {}\nResume: run the same command again.\n",
                       summary.totals.steps_completed, config.train().steps, summary.outputs.last_checkpoint);
  std::string out =
      fmt::format("Done: {} steps in {:.0f} s ({:.0f} tokens/s), run directory {}\n", summary.totals.steps_completed,
                  summary.totals.wall_seconds, summary.totals.tokens_per_second, config.run_dir());
  for (const auto& path : summary.outputs.exported) out += fmt::format("  student: {}\n", path);
  if (!paths.report.empty()) out += fmt::format("  report:  {}\n", paths.report);
  out += perplexity_table(summary);
  out += cloze_lines(summary);
  return out + next_commands(config, summary, paths);
}

}  // namespace qkd::train
