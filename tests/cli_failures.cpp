#include "cli_failures.h"

#include <gtest/gtest.h>

#include <fstream>

namespace qkd::test {

void expect_clean_failure(const CommandResult& r, const std::string& file, const std::string& field) {
  EXPECT_EQ(r.exit_code, 1) << r.output;
  const auto at = r.output.rfind("error: ");
  ASSERT_NE(at, std::string::npos) << r.output;
  const auto line = r.output.substr(at);
  EXPECT_EQ(line.find('\n'), line.size() - 1) << "more than one line: " << line;
  EXPECT_LT(line.size(), 400u) << line;
  EXPECT_NE(line.find(file), std::string::npos) << line;
  if (!field.empty()) EXPECT_NE(line.find(field), std::string::npos) << line;
}

nlohmann::json two_step_run(const std::string& run_dir) {
  using nlohmann::json;
  return {{"run_dir", run_dir},
          {"teacher", {{"path", qkd::test::shipped_teacher()}}},
          {"data", {{"sources", {{{"path", repo_path("assets/data/kjv/kjv-train.u16")}}}}, {"seq_len", 32}}},
          {"train", {{"steps", 2}, {"micro_batch", 2}, {"threads", 1}}},
          {"eval",
           {{"ppl", {qkd::test::kjv_val_tokens()}},
            {"seq_len", 32},
            {"max_windows", 2},
            {"at_start", false},
            {"baselines", false}}},
          {"checkpoint", {{"interval", 1}}},
          {"export", {{"formats", json::array()}}}};
}

std::string write_run_config(const std::string& dir, const std::string& name, const nlohmann::json& config) {
  const auto path = dir + "/" + name;
  std::ofstream(path) << config.dump(2);
  return path;
}

}  // namespace qkd::test
