#pragma once
// Shared helpers for tests: where the reference material lives, scratch directories, running the CLI.
#include <sys/types.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "qkd/model/llama.h"
#include "qkd/quant/quant_spec.h"

namespace qkd::test {

// <repo>/tests/fixtures/<relative>: the reference files the tests read (tests/fixtures/README.md says
// where each came from). Nothing a test reads lives outside the repository.
std::string fixture_path(const std::string& relative);
// <repo>/<relative>
std::string repo_path(const std::string& relative);
// The shipped teacher and its held-out KJV tokens, which most tests train and evaluate on.
std::string shipped_teacher();  // assets/models/kjv-teacher-7m
std::string kjv_val_tokens();   // assets/data/kjv/kjv-val.u16
// A fresh empty directory under the system temp dir, unique per call.
std::string scratch_dir(const std::string& tag);

// Runs `action` and expects a qkd::Error whose message is one line holding every part (a test failure
// otherwise). The message is recorded as the test property "error" (--gtest_output=xml shows it).
void expect_error(const std::function<void()>& action, const std::vector<std::string>& parts);
// One part. (Not `const std::string&`: a braced pair of literals would also convert to that.)
inline void expect_error(const std::function<void()>& action, const char* part) {
  expect_error(action, std::vector<std::string>{part});
}

// A student: the checkpoint at `dir` with quantizers for `spec` attached, in eval mode.
// The small LLaMA shape the unit tests build in memory: vocabulary 100, hidden 64, intermediate 128,
// 2 layers, 4 heads over 2 key/value heads (GQA), head_dim 16.
model::LlamaConfig tiny_llama_config(bool tied_embeddings = false);

model::LlamaForCausalLM load_student(const std::string& dir, const quant::QuantSpec& spec);
// A QuantSpec with these weight settings and the defaults otherwise.
quant::QuantSpec quant_spec(int64_t bits, quant::Granularity granularity, bool symmetric, int64_t group_size = 16);

// Every line of a JSON Lines file (run directories' metrics/signal/events).
std::vector<nlohmann::json> read_jsonl(const std::string& path);

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};
// Runs the built qkd-train binary with `args` (a shell-quoted string) and captures its output.
// `env` ("NAME=value ...") is set for that process only.
// With timeout_seconds > 0 the process is killed after that long (exit code 137: a hang).
CommandResult run_cli(const std::string& args, const std::string& env = "", int timeout_seconds = 0);

// Starts the binary with `args` in the background, stdout and stderr appended to `log`; returns its pid.
// `env` ("NAME=value" each) is added to that process's environment.
pid_t start_cli(const std::vector<std::string>& args, const std::string& log, const std::vector<std::string>& env = {});
// A TCP port on 127.0.0.1 that was free a moment ago (for a rendezvous store).
int free_port();
// Waits up to `seconds`; true (with the wait status) when the process ended by itself.
bool wait_for_exit(pid_t pid, double seconds, int& status);
// `text` single-quoted for a POSIX shell command line.
std::string shell_quote(const std::string& text);
// The whole file ("" when it cannot be read).
std::string read_file(const std::string& path);

}  // namespace qkd::test
