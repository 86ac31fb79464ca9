// Seeded fuzzing of every file the program reads: safetensors weights, a Hugging Face config.json,
// run configs and JSONL data, mutated by truncation, byte flips, type swaps, deep nesting, huge and
// negative numbers, and replaced by special files (FIFO, directory, /dev/zero). Each case runs the
// library entry point the CLI uses in a forked child, caught the way main() catches, and must end
// with exit 0 or 1 (never a signal), within a time limit, and, on failure, with one line naming a
// file. QKD_FUZZ_CASES / QKD_FUZZ_SEED change the count and the seed.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <c10/util/Exception.h>
#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/common/error.h"
#include "qkd/data/data_stream.h"
#include "qkd/io/safetensors.h"
#include "qkd/tokenizer/tokenizer.h"
#include "qkd/train/run_config.h"
#include "test_support.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kModel = qkd::test::fixture_path("models/tiny-llama-tied-llama3rope-bf16");

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

struct Outcome {
  int exit_code = -1;  // -1: killed by a signal or the time limit
  int signal = 0;
  bool timed_out = false;
  std::string message;  // what the child printed
};

// Runs `body` in a forked child with a time limit; the child exits 0, or 1 with the error's text.
Outcome run_forked(const std::function<void()>& body, double limit_s) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) return {};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipe_fds[0]);
    int code = 0;
    std::string text;
    try {
      torch::set_num_threads(1);
      body();
    } catch (const qkd::Error& e) {
      code = 1, text = e.what();
    } catch (const c10::Error& e) {
      code = 1, text = e.what_without_backtrace();
    } catch (const std::exception& e) {
      code = 1, text = e.what();
    }
    if (::write(pipe_fds[1], text.data(), text.size()) < 0) code = 2;
    ::_exit(code);
  }
  ::close(pipe_fds[1]);
  Outcome out;
  const auto start = std::chrono::steady_clock::now();
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > limit_s) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      out.timed_out = true;
      break;
    }
    ::usleep(1000);
  }
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0) out.message.append(buffer, static_cast<size_t>(n));
  ::close(pipe_fds[0]);
  if (WIFEXITED(status) && !out.timed_out) out.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status) && !out.timed_out) out.signal = WTERMSIG(status);
  return out;
}

// ---- mutations -----------------------------------------------------------------------------------

std::string mutate_bytes(std::string bytes, std::mt19937_64& rng, size_t focus) {
  switch (rng() % 4) {
    case 0:  // truncation
      return bytes.substr(0, rng() % (bytes.size() + 1));
    case 1: {  // byte flips, mostly where the structure is
      const int flips = 1 + static_cast<int>(rng() % 8);
      for (int i = 0; i < flips && !bytes.empty(); ++i)
        bytes[rng() % std::min(bytes.size(), focus)] ^= static_cast<char>(1 + rng() % 255);
      return bytes;
    }
    case 2: {  // a run of one byte value
      if (bytes.empty()) return bytes;
      const size_t at = rng() % std::min(bytes.size(), focus);
      const size_t len = 1 + rng() % 16;
      for (size_t i = at; i < std::min(bytes.size(), at + len); ++i) bytes[i] = static_cast<char>(rng() % 256);
      return bytes;
    }
    default: {  // digits inserted into the header: huge numbers
      const size_t at = rng() % std::min(bytes.size() + 1, focus);
      return bytes.insert(at, std::string(1 + rng() % 20, static_cast<char>('0' + rng() % 10)));
    }
  }
}

json odd_value(std::mt19937_64& rng) {
  switch (rng() % 10) {
    case 0: return nullptr;
    case 1: return -1;
    case 2: return 0;
    case 3: return std::numeric_limits<int64_t>::max();
    case 4: return -1e308;
    case 5: return "text\x01\x1b[31m";
    case 6: return json::array({1, "a", nullptr});
    case 7: return json::object({{"x", 1}});
    case 8: return true;
    default: {
      json deep = 1;
      for (int i = 0; i < 40; ++i) deep = json::array({deep});
      return deep;
    }
  }
}

// Replaces, removes or re-types one field anywhere in the document.
void mutate_json(json& j, std::mt19937_64& rng) {
  json* node = &j;
  for (int depth = 0; depth < 4 && (node->is_object() || node->is_array()) && !node->empty(); ++depth) {
    auto it = node->begin();
    std::advance(it, static_cast<long>(rng() % node->size()));
    if (rng() % 3 == 0 || !(it->is_object() || it->is_array())) {
      if (rng() % 5 == 0 && node->is_object())
        node->erase(it.key());
      else
        *it = odd_value(rng);
      return;
    }
    node = &*it;
  }
  *node = odd_value(rng);
}

std::string mutate_json_text(const std::string& text, std::mt19937_64& rng) {
  if (rng() % 4 == 0) return mutate_bytes(text, rng, text.size());
  if (rng() % 8 == 0) return std::string(1000 + rng() % 100000, '[');  // nesting
  json j = json::parse(text);
  const int edits = 1 + static_cast<int>(rng() % 3);
  for (int i = 0; i < edits; ++i) mutate_json(j, rng);
  return j.dump();
}

// A special file instead of a regular one: FIFO, directory, or a symlink to /dev/zero.
void make_special(const std::string& path, std::mt19937_64& rng) {
  fs::remove_all(path);
  switch (rng() % 3) {
    case 0: ::mkfifo(path.c_str(), 0600); break;
    case 1: fs::create_directories(path); break;
    default: fs::create_symlink("/dev/zero", path);
  }
}

// ---- the harness ---------------------------------------------------------------------------------

struct Tally {
  int cases = 0, ok = 0, clean_errors = 0;
  std::vector<std::string> problems;
};

void judge(Tally& tally, const Outcome& o, const std::string& label, const std::string& file) {
  ++tally.cases;
  std::string problem;
  if (o.timed_out)
    problem = "hang";
  else if (o.signal != 0)
    problem = "signal " + std::to_string(o.signal);
  else if (o.exit_code == 0)
    ++tally.ok;
  else if (o.exit_code != 1)
    problem = "exit " + std::to_string(o.exit_code);
  else if (o.message.find('\n') != std::string::npos)
    problem = "multi-line message: " + o.message.substr(0, 300);
  else if (o.message.size() > 1000)
    problem = "message of " + std::to_string(o.message.size()) + " bytes";
  else if (o.message.find(file) == std::string::npos)
    problem = "message names no file: " + o.message;
  else
    ++tally.clean_errors;
  if (!problem.empty()) tally.problems.push_back(label + ": " + problem);
}

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : fallback;
}

TEST(Fuzz, MutatedInputsExitCleanlyWithinTheirTimeLimit) {
  const int cases_per_kind = env_int("QKD_FUZZ_CASES", 2400) / 4;
  spdlog::set_level(spdlog::level::err);  // skipped records are expected here by the thousand
  std::mt19937_64 rng(static_cast<uint64_t>(env_int("QKD_FUZZ_SEED", 20261130)));
  const auto dir = qkd::test::scratch_dir("fuzz");
  const auto weights = read_bytes(kModel + "/model.safetensors");
  const auto hf_config = read_bytes(kModel + "/config.json");
  const auto run_config = json{
      {"run_dir", dir + "/run"},
      {"teacher", {{"path", kModel}}},
      {"quant", {{"bits", 4}, {"granularity", "per_group"}, {"group_size", 32}}},
      {"data", {{"sources", {{{"path", dir + "/data.jsonl"}}}}, {"seq_len", 16}}},
      {"kd", {{"ce_weight", 0.5}}},
      {"optim", {{"lr", 1e-3}}},
      {"train", {{"steps", 2}, {"micro_batch", 2}}},
      {"freeze", {{"policy", "ov"}}},
      {"checkpoint",
       {{"interval", 1}}}}.dump();
  std::string jsonl;
  for (int i = 0; i < 12; ++i)
    jsonl += json{{"text", "In the beginning God created the heaven and the earth " + std::to_string(i)}}.dump() + "\n";
  const auto tokenizer = std::make_shared<qkd::tokenizer::Tokenizer>(kModel + "/tokenizer.model");
  Tally tally;
  const auto started = std::chrono::steady_clock::now();

  // The model directory a case loads: a copy of the tiny model with one file changed.
  const auto model = dir + "/model";
  fs::create_directories(model);
  for (const auto* f : {"tokenizer.model"}) fs::copy_file(kModel + "/" + f, model + "/" + f);
  for (int i = 0; i < cases_per_kind; ++i) {
    const bool special = rng() % 20 == 0;
    write_bytes(model + "/config.json", hf_config);
    if (special)
      make_special(model + "/model.safetensors", rng);
    else
      write_bytes(model + "/model.safetensors", mutate_bytes(weights, rng, 4096));
    judge(tally, run_forked([&] { qkd::checkpoint::load_llama(model); }, 20), "safetensors #" + std::to_string(i),
          model + "/model.safetensors");
    fs::remove_all(model + "/model.safetensors");
  }
  fs::copy_file(kModel + "/model.safetensors", model + "/model.safetensors");
  for (int i = 0; i < cases_per_kind; ++i) {
    fs::remove_all(model + "/config.json");
    if (rng() % 20 == 0)
      make_special(model + "/config.json", rng);
    else
      write_bytes(model + "/config.json", mutate_json_text(hf_config, rng));
    judge(tally, run_forked([&] { qkd::checkpoint::load_llama(model); }, 20), "config.json #" + std::to_string(i),
          model + "/config.json");
  }
  write_bytes(dir + "/data.jsonl", jsonl);
  for (int i = 0; i < cases_per_kind; ++i) {
    const auto path = dir + "/run.json";
    fs::remove_all(path);
    if (rng() % 20 == 0)
      make_special(path, rng);
    else
      write_bytes(path, mutate_json_text(run_config, rng));
    judge(tally, run_forked([&] { qkd::train::load_run_config(path, {}); }, 20), "run config #" + std::to_string(i),
          path);
  }
  auto data_config =
      qkd::data::data_config_from_json(json{{"sources", {{{"path", dir + "/data.jsonl"}}}}, {"seq_len", 16}});
  for (int i = 0; i < cases_per_kind; ++i) {
    const auto path = dir + "/data.jsonl";
    fs::remove_all(path);
    if (rng() % 20 == 0) {
      make_special(path, rng);
    } else {
      std::string text = rng() % 2 ? mutate_bytes(jsonl, rng, jsonl.size()) : jsonl;
      if (rng() % 2) text += mutate_json_text(json{{"text", "And God said"}}.dump(), rng) + "\n";
      write_bytes(path, text);
    }
    data_config.strict = rng() % 2 == 0;
    judge(tally,
          run_forked(
              [&] {
                qkd::data::DataStream stream(data_config, tokenizer.get());
                for (int b = 0; b < 3; ++b) stream.next_batch(2);
              },
              20),
          "jsonl #" + std::to_string(i), path);
  }

  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::printf("fuzz: %d cases in %.1f s: %d loaded, %d clean errors, %zu problems (crashes, hangs, bad messages)\n",
              tally.cases, seconds, tally.ok, tally.clean_errors, tally.problems.size());
  for (size_t i = 0; i < tally.problems.size() && i < 30; ++i) ADD_FAILURE() << tally.problems[i];
  EXPECT_GE(tally.cases, 2000);
  EXPECT_TRUE(tally.problems.empty());
}

}  // namespace
