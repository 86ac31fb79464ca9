#pragma once
// What the hostile-input tests expect of a refused command, and the small run they start from.
#include <nlohmann/json.hpp>
#include <string>

#include "test_support.h"

namespace qkd::test {

// The error line: exit 1, one short "error: ..." line naming `file` (and `field` when given).
void expect_clean_failure(const CommandResult& r, const std::string& file, const std::string& field = "");

// Two steps of 2x32 tokens on the shipped teacher, a checkpoint every step, eval on two windows, no
// export: the smallest run that writes everything a resume reads.
nlohmann::json two_step_run(const std::string& run_dir);

// Writes `config` to <dir>/<name> and returns that path.
std::string write_run_config(const std::string& dir, const std::string& name, const nlohmann::json& config);

}  // namespace qkd::test
