#pragma once
// Each sub-command registers its options and a callback that calls library code; nothing else.
#include <CLI/CLI.hpp>

namespace qkd::cli {

void add_logits_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_ptq_command(CLI::App& app);
void add_report_command(CLI::App& app);
void add_export_command(CLI::App& app);
void add_cache_teacher_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);

}  // namespace qkd::cli
