// Seeded fuzzing of the binary itself: each case runs qkd-train with a random subcommand and random
// options, each option's value drawn from good values and hostile ones (missing, special or foreign
// paths, the command's own inputs as its output, negative, huge, non-numeric and non-UTF-8 text), and
// run configs changed by random --set overrides. Every case must exit 0 or 1 (never a signal or another
// code) within its time limit; an exit 1 ends with one "error:" line; and no input the cases read (the
// shipped teacher, the data) is ever changed. QKD_CLI_FUZZ_CASES / QKD_CLI_FUZZ_SEED change the count
// and the seed.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <random>

#include "cli_failures.h"
#include "fuzz_support.h"
#include "qkd/common/file_digest.h"
#include "test_support.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace qkd::test;

const std::string kTeacher = qkd::test::shipped_teacher();
const std::string kVal = qkd::test::kjv_val_tokens();
const std::string kCloze = repo_path("assets/data/kjv/kjv-cloze-val.jsonl");

// The paths a case may name: good inputs, good fresh outputs, and hostile ones.
struct Paths {
  std::string dir, fifo, loop, foreign_dir, file, config, student, run;
};

Paths make_paths(const std::string& dir) {
  Paths p{dir, dir + "/fifo", dir + "/loop", dir + "/foreign", dir + "/file.txt", dir + "/run.json", dir + "/student",
          dir + "/run"};
  ::mkfifo(p.fifo.c_str(), 0600);
  fs::create_symlink(p.loop, p.loop);
  fs::create_directories(p.foreign_dir);
  write_bytes(p.foreign_dir + "/notes.txt", "mine");
  write_bytes(p.file, "mine");
  auto config = two_step_run(p.run);
  config["train"]["steps"] = 1;
  write_run_config(dir, "run.json", config);
  return p;
}

template <class T>
const T& pick(std::mt19937_64& rng, const std::vector<T>& options) {
  return options[rng() % options.size()];
}

std::string hostile_text(std::mt19937_64& rng) {
  return pick<std::string>(rng, {"", "-1", "0", "99999999999999999999", "1e308", "nan", "-inf", "abc",
                                 std::string(5000, 'x'), "\xff\xfe\x01", "--", "a,b,,c"});
}

std::string input_path(std::mt19937_64& rng, const Paths& p, const std::string& good) {
  return pick<std::string>(rng, {good, good, good, p.fifo, p.loop, "/dev/zero", p.foreign_dir, p.dir + "/missing",
                                 p.file, "/"});
}

std::string output_path(std::mt19937_64& rng, const Paths& p, const std::string& fresh, const std::string& input) {
  return pick<std::string>(rng, {fresh, fresh, fresh, "/dev/full", p.foreign_dir, p.file, p.loop, input,
                                 p.dir + "/missing/deeper/out"});
}

std::string number(std::mt19937_64& rng, const std::string& good) {
  return rng() % 3 ? good : hostile_text(rng);
}

// One random --set override of the run config: a real key with a good or hostile value, or a bogus key.
std::string random_override(std::mt19937_64& rng) {
  const std::vector<std::string> keys = {"quant.bits", "quant.granularity", "quant.group_size", "data.seq_len",
                                         "train.steps", "train.micro_batch", "train.grad_accum", "optim.lr",
                                         "kd.temperature", "kd.divergence", "freeze.policy", "student.dtype",
                                         "train.threads", "eval.batch_size", "checkpoint.keep_last", "no.such.key",
                                         "export.formats", "data.sources"};
  const std::vector<std::string> values = {"4", "8", "2", "-1", "0", "1e30", "null", "\"ov\"", "\"auto\"", "[]",
                                           "{}", "\"bfloat16\"", "[\"gguf\"]", "16", "true", "\"x\""};
  return pick(rng, keys) + "=" + pick(rng, values);
}

std::vector<std::string> random_command(std::mt19937_64& rng, const Paths& p, int i) {
  const auto fresh = p.dir + "/out" + std::to_string(i);
  switch (rng() % 7) {
    case 0: {
      std::vector<std::string> args = {"--config", input_path(rng, p, p.config)};
      for (int n = static_cast<int>(rng() % 4); n > 0; --n) args.insert(args.end(), {"--set", random_override(rng)});
      return args;
    }
    case 1: {
      const auto ppl = input_path(rng, p, kVal);
      return {"eval",      "--model", input_path(rng, p, kTeacher), "--ppl", ppl, "--seq-len", number(rng, "16"),
              "--max-windows", number(rng, "1"), "--batch-size", number(rng, "2"), "--threads", number(rng, "1"),
              "--json",    output_path(rng, p, fresh + ".json", ppl)};
    }
    case 2:
      return {"eval", "--model", input_path(rng, p, kTeacher), "--mc", input_path(rng, p, kCloze), "--mc-limit",
              number(rng, "2"), "--seq-len", number(rng, "64")};
    case 3: {
      const auto model = input_path(rng, p, kTeacher);
      return {"ptq", "--model", model, "--out", output_path(rng, p, fresh, model), "--bits", number(rng, "4")};
    }
    case 4: {
      const auto student = input_path(rng, p, p.student);
      return {"export", "--checkpoint", student, "--format",
              pick<std::string>(rng, {"hf", "packed", "gguf", "encodings", "hf,gguf", "bogus", ""}), "--out",
              output_path(rng, p, fresh, student)};
    }
    case 5: {
      // An output may name the command's own input (to be refused), never another file the cases read.
      const auto input = input_path(rng, p, kCloze);
      return {"tokenize", "--tokenizer", input_path(rng, p, kTeacher), "--input", input, "--out",
              output_path(rng, p, fresh + ".u16", input)};
    }
    default:
      return {pick<std::string>(rng, {"report", "logits", "cache-teacher", "--bogus", "train"}),
              pick<std::string>(rng, {"--run", "--model", "--config", "--input", "-x"}), input_path(rng, p, p.run)};
  }
}

std::string quoted(const std::vector<std::string>& args) {
  std::string out;
  for (const auto& a : args) out += (out.empty() ? "" : " ") + shell_quote(a);
  return out;
}

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

TEST(CliFuzz, RandomCommandLinesExitZeroOrWithOneErrorLine) {
  const int cases = env_int("QKD_CLI_FUZZ_CASES", 60);
  std::mt19937_64 rng(static_cast<uint64_t>(env_int("QKD_CLI_FUZZ_SEED", 20261207)));
  const auto dir = scratch_dir("cli-fuzz");
  const auto paths = make_paths(dir);
  ASSERT_EQ(run_cli("ptq --model " + kTeacher + " --out " + paths.student, "", 120).exit_code, 0);
  auto inputs = files_in(kTeacher);
  inputs.insert(inputs.end(), {kVal, kCloze});
  const auto inputs_before = qkd::files_digest(inputs);
  int ok = 0, errors = 0;
  std::vector<std::string> problems;
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < cases; ++i) {
    const auto args = quoted(random_command(rng, paths, i));
    const auto r = run_cli(args + " </dev/null", "", 60);
    const auto at = r.output.rfind("error: ");
    std::string problem;
    if (r.exit_code == 137)
      problem = "hang (killed after 60 s)";
    else if (r.exit_code == 0)
      ++ok;
    else if (r.exit_code != 1)
      problem = "exit " + std::to_string(r.exit_code);
    else if (at == std::string::npos || r.output.find('\n', at) != r.output.size() - 1)
      problem = "no single error line at the end";
    else if (r.output.size() - at > 1000)
      problem = "error line of " + std::to_string(r.output.size() - at) + " bytes";
    else
      ++errors;
    if (!problem.empty()) problems.push_back("#" + std::to_string(i) + " " + args.substr(0, 300) + ": " + problem +
                                             ": " + r.output.substr(r.output.size() > 300 ? r.output.size() - 300 : 0));
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::printf("cli fuzz: %d cases in %.1f s: %d succeeded, %d clean errors, %zu problems\n", cases, seconds, ok, errors,
              problems.size());
  for (size_t i = 0; i < problems.size() && i < 20; ++i) ADD_FAILURE() << problems[i];
  EXPECT_EQ(qkd::files_digest(inputs), inputs_before) << "a case changed the shipped teacher or the data";
  EXPECT_EQ(files_in(kTeacher).size() + 2, inputs.size()) << "a case wrote into the shipped teacher's directory";
  struct stat st {};
  EXPECT_TRUE(::stat("/dev/full", &st) == 0 && S_ISCHR(st.st_mode));
  EXPECT_EQ(read_bytes(paths.foreign_dir + "/notes.txt"), "mine");
  EXPECT_EQ(read_bytes(paths.file), "mine");
}

}  // namespace
