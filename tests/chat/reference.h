#pragma once
// The reference side of the chat-template comparison: writes a job for tests/chat/render_reference.py,
// runs it with Debian's python3-jinja2 (QKD_PYTHON overrides the interpreter) and reads its results.
// A missing python3 or jinja2 fails the test with the set-up command to run; nothing is skipped.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "chat/conversations.h"
#include "test_support.h"

namespace qkd::test::chat {

struct ReferenceResult {
  bool ok = false;
  std::string text;   // when ok
  std::string error;  // the exception's message otherwise
};

struct ReferenceRun {
  std::vector<ReferenceResult> results;  // one per case and add_generation_prompt value, in job order
  double seconds = 0.0;                  // python's time spent rendering
};

// Where the template comes from: a tokenizer_config.json (the script reads chat_template and the
// special tokens itself, as transformers does) or a .jinja file with the special tokens given.
struct TemplateSource {
  std::string tokenizer_config;
  std::string template_file;
  Json special_tokens = Json::object();
};

inline std::string python_interpreter() {
  if (const char* python = std::getenv("QKD_PYTHON"); python && *python) return python;
  // Debian's interpreter, where apt's python3-jinja2 lives (a PATH python3 may be another install).
  return std::filesystem::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
}

using qkd::test::shell_quote;

// Runs the script on `cases`, each with add_generation_prompt false then true. `fixed_now` is an
// ISO date-time for strftime_now ("" for the real clock); `repeat` renders everything that many
// times (for timing).
inline ReferenceRun render_reference(const TemplateSource& source, const std::vector<Case>& cases,
                                     const std::string& fixed_now, const std::string& scratch, int repeat = 1) {
  Json job = Json::object();
  if (!source.tokenizer_config.empty()) {
    job["tokenizer_config"] = source.tokenizer_config;
  } else {
    job["template_file"] = source.template_file;
    job["special_tokens"] = source.special_tokens;
  }
  job["fixed_now"] = fixed_now.empty() ? Json(nullptr) : Json(fixed_now);
  job["repeat"] = repeat;
  job["cases"] = Json::array();
  for (const auto& c : cases) {
    for (const bool prompt : {false, true}) {
      job["cases"].push_back(
          Json{{"messages", c.messages}, {"add_generation_prompt", prompt}, {"variables", c.variables}});
    }
  }
  const std::string job_path = scratch + "/job.json", out_path = scratch + "/reference.jsonl";
  const std::string log_path = scratch + "/reference.log";
  std::ofstream(job_path) << job.dump();
  const std::string script = std::string(QKD_SOURCE_DIR) + "/tests/chat/render_reference.py";
  const std::string command = shell_quote(python_interpreter()) + " " + shell_quote(script) + " " +
                              shell_quote(job_path) + " " + shell_quote(out_path) + " 2> " + shell_quote(log_path);
  if (std::system(command.c_str()) != 0) {
    std::ifstream log(log_path);
    throw std::runtime_error("the jinja2 reference renderer failed (" + command +
                             "): " + std::string(std::istreambuf_iterator<char>(log), {}) +
                             " -- python3 and python3-jinja2 are installed by `bash scripts/bootstrap.sh test`");
  }
  ReferenceRun run;
  std::ifstream in(out_path);
  for (std::string line; std::getline(in, line);) {
    const Json r = Json::parse(line);
    if (r.contains("seconds")) {
      run.seconds = r["seconds"].get<double>();
      continue;
    }
    ReferenceResult result;
    result.ok = r["ok"].get<bool>();
    result.text = r.value("text", "");
    result.error = r.value("error", "");
    run.results.push_back(std::move(result));
  }
  if (run.results.size() != 2 * cases.size())
    throw std::runtime_error("the reference renderer returned too few results");
  return run;
}

}  // namespace qkd::test::chat
