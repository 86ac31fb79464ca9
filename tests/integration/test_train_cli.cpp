// The main job through the real binary: a short KD-QAT run, SIGTERM + resume equal to an
// uninterrupted run, and bad input failing fast without leaving a run directory behind.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "qkd/io/safetensors.h"
#include "test_support.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using qkd::test::repo_path;
using qkd::test::run_cli;
using qkd::test::scratch_dir;

// Small enough for CI: 6 steps of 2x2x32 tokens on the shipped teacher, one thread so that two runs
// are bitwise comparable.
json small_run(const std::string& run_dir) {
  return {
      {"run_dir", run_dir},
      {"teacher", {{"path", qkd::test::shipped_teacher()}}},
      {"quant", {{"bits", 4}}},
      {"data", {{"sources", {{{"path", repo_path("assets/data/kjv/kjv-train.u16")}}}}, {"seq_len", 32}, {"seed", 3}}},
      {"kd", {{"ce_weight", 0.5}}},
      {"optim", {{"lr", 1e-3}, {"warmup_steps", 2}, {"grad_clip", 1.0}}},
      {"train", {{"steps", 6}, {"micro_batch", 2}, {"grad_accum", 2}, {"log_interval", 1}, {"threads", 1}}},
      {"eval",
       {{"ppl", {qkd::test::kjv_val_tokens()}}, {"seq_len", 32}, {"max_windows", 8}, {"at_start", false}}},
      {"monitor", {{"interval", 2}}},
      {"freeze", {{"policy", "auto"}, {"scope", "layer"}}},
      {"checkpoint", {{"interval", 2}, {"keep_last", 2}}},
      {"export", {{"formats", {"hf"}}, {"dtype", "float32"}}}};
}

std::string write_config(const json& config, const std::string& path) {
  std::ofstream(path) << config.dump(2);
  return path;
}

std::vector<json> jsonl(const std::string& path, bool drop_timing) {
  auto lines = qkd::test::read_jsonl(path);
  if (drop_timing)
    for (auto& j : lines)
      for (auto key : {"tokens_per_s", "step_seconds", "peak_mem_mb", "phases"}) j.erase(key);
  return lines;
}

// A run stopped by a signal and resumed (<dir>/resumed) ends where the uninterrupted one
// (<dir>/straight) did: the same exported weights, bitwise, and the same train records.
void expect_resumed_run_equals_straight(const std::string& dir) {
  const auto a = qkd::io::read_safetensors(dir + "/straight/export/hf/model.safetensors");
  const auto b = qkd::io::read_safetensors(dir + "/resumed/export/hf/model.safetensors");
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i].second, b[i].second)) << a[i].first;
  EXPECT_EQ(jsonl(dir + "/straight/metrics.jsonl", true), jsonl(dir + "/resumed/metrics.jsonl", true));
}

// Polls `path` until it holds `text` or the process ends; true when the text appeared.
bool wait_for_text(const std::string& path, const std::string& text, pid_t pid, double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < until) {
    if (qkd::test::read_file(path).find(text) != std::string::npos) return true;
    if (::waitpid(pid, nullptr, WNOHANG) == pid) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

// A real SIGTERM from outside, mid-run: the step in flight finishes, a checkpoint is written, exit 0,
// and the same command resumes to the uninterrupted result.
TEST(TrainCli, ResumeAfterSigtermMatchesUninterruptedRunBitwise) {
  const auto dir = scratch_dir("resume");
  auto config = small_run(dir + "/straight");
  config["train"]["steps"] = 12;  // room after the signal: the run must not finish before it lands
  const auto straight = write_config(config, dir + "/straight.json");
  config["run_dir"] = dir + "/resumed";
  const auto resumed = write_config(config, dir + "/resumed.json");
  const auto full = run_cli("--config " + straight);
  ASSERT_EQ(full.exit_code, 0) << full.output;

  const auto log = dir + "/stopped.log";
  const pid_t pid = qkd::test::start_cli({"train", "--config", resumed}, log);
  ASSERT_TRUE(wait_for_text(dir + "/resumed/metrics.jsonl", "\"step\":3,", pid, 120)) << qkd::test::read_file(log);
  ::kill(pid, SIGTERM);
  int status = 0;
  ASSERT_TRUE(qkd::test::wait_for_exit(pid, 60, status)) << "no exit within 60 s of SIGTERM";
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << qkd::test::read_file(log);
  const auto output = qkd::test::read_file(log);
  const auto said = output.find("stopped by signal after step ");
  ASSERT_NE(said, std::string::npos) << "the run finished before SIGTERM landed:\n" << output;
  const int stopped_at = std::stoi(output.substr(said + std::string("stopped by signal after step ").size()));
  EXPECT_GE(stopped_at, 3);
  EXPECT_LT(stopped_at, 12);
  EXPECT_TRUE(fs::exists(dir + fmt::format("/resumed/checkpoints/step-{:08d}/state.json", stopped_at)));
  EXPECT_FALSE(fs::exists(dir + "/resumed/export"));  // no export from an interrupted run
  const auto second = run_cli("train --config " + resumed);
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("resumed from"), std::string::npos) << second.output;

  expect_resumed_run_equals_straight(dir);
  EXPECT_EQ(jsonl(dir + "/straight/signal.jsonl", false), jsonl(dir + "/resumed/signal.jsonl", false));
  // keep_last 2: the end checkpoint and one before it.
  EXPECT_TRUE(fs::exists(dir + "/straight/checkpoints/step-00000012"));
  EXPECT_TRUE(fs::exists(dir + "/straight/checkpoints/step-00000010"));
  EXPECT_FALSE(fs::exists(dir + "/straight/checkpoints/step-00000008"));
}

// SIGTERM during the start-of-run evaluation (baselines, then the step-0 eval with the cloze set: tens
// of seconds) abandons it at the next batch instead of waiting for it. Nothing is checkpointed, and
// the next start begins afresh, without the records the stopped attempt wrote.
TEST(TrainCli, SigtermDuringStartEvaluationStopsPromptlyAndTheNextStartBeginsAfresh) {
  const auto dir = scratch_dir("stop-at-start");
  auto config = small_run(dir + "/run");
  config["train"]["steps"] = 2;
  config["eval"] = {{"ppl", {qkd::test::kjv_val_tokens()}},
                    {"mc", {repo_path("assets/data/kjv/kjv-cloze-val.jsonl")}},
                    {"seq_len", 32},
                    {"max_windows", 8},
                    {"at_start", true},
                    {"baselines", true}};
  const auto path = write_config(config, dir + "/c.json");
  const auto log = dir + "/stopped.log";
  const pid_t pid = qkd::test::start_cli({"--config", path}, log);
  // The baseline record is written; the step-0 evaluation of the cloze set has begun.
  ASSERT_TRUE(wait_for_text(dir + "/run/metrics.jsonl", "\"type\":\"baseline\"", pid, 120))
      << qkd::test::read_file(log);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ::kill(pid, SIGTERM);
  const auto signalled = std::chrono::steady_clock::now();
  int status = 0;
  ASSERT_TRUE(qkd::test::wait_for_exit(pid, 60, status));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - signalled).count();
  const auto output = qkd::test::read_file(log);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << output;
  EXPECT_NE(output.find("stopped by signal during the start-of-run evaluation"), std::string::npos) << output;
  EXPECT_NE(output.find("Stopped before step 1"), std::string::npos) << output;
  EXPECT_LT(seconds, 5.0) << "waited for the evaluation to finish";
  EXPECT_FALSE(fs::exists(dir + "/run/checkpoints") && !fs::is_empty(dir + "/run/checkpoints"));

  // Started again without the start-of-run evaluation: the stale baseline record is gone.
  const auto again =
      run_cli("--config " + path + " --set eval.at_start=false --set eval.baselines=false --set eval.mc=[]");
  ASSERT_EQ(again.exit_code, 0) << again.output;
  const auto records = jsonl(dir + "/run/metrics.jsonl", true);
  ASSERT_FALSE(records.empty());
  for (const auto& r : records) EXPECT_NE(r.value("type", ""), "baseline") << r.dump();
  EXPECT_EQ(records.front().at("step"), 1);
}

// The run ends with export/hf: a plain Hugging Face directory holding the dequantized weights, so
// evaluating it as a float model gives the trainer's own final numbers; `qkd-train export` from the
// run's checkpoint writes the same bytes.
TEST(TrainCli, ExportedStudentIsAPlainCheckpointOfTheQuantizedModel) {
  const auto dir = scratch_dir("export");
  auto config = small_run(dir + "/run");
  config["train"]["steps"] = 2;
  const auto result = run_cli("--config " + write_config(config, dir + "/c.json"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_TRUE(fs::exists(dir + "/run/export/hf/generation_config.json"));
  EXPECT_FALSE(fs::exists(dir + "/run/export/hf/quantization.json"));
  const auto eval = run_cli("eval --model " + dir + "/run/export/hf --ppl " + qkd::test::kjv_val_tokens() +
                            " --seq-len 32 --max-windows 8 --threads 1 --json " + dir + "/eval.json");
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  json summary, evaluated;
  std::ifstream(dir + "/run/summary.json") >> summary;
  std::ifstream(dir + "/eval.json") >> evaluated;
  EXPECT_NEAR(summary.at("final_eval").at("ppl").at("kjv-val.u16").get<double>(),
              evaluated.at("ppl").at("kjv-val.u16").get<double>(), 1e-3);
  // 4-bit per channel: at most 16 distinct values in a row of every projection.
  for (const auto& [name, tensor] : qkd::io::read_safetensors(dir + "/run/export/hf/model.safetensors")) {
    if (name.find("_proj.weight") == std::string::npos) continue;
    EXPECT_LE(std::get<0>(at::_unique(tensor[0])).numel(), 16) << name;
  }

  const auto again = run_cli("export --checkpoint " + dir + "/run --format hf --dtype float32 --out " + dir + "/again");
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_EQ(qkd::test::read_file(dir + "/again/hf/model.safetensors"),
            qkd::test::read_file(dir + "/run/export/hf/model.safetensors"));
  EXPECT_EQ(qkd::test::read_file(dir + "/again/hf/config.json"),
            qkd::test::read_file(dir + "/run/export/hf/config.json"));
}

std::map<std::string, torch::Tensor> checkpoint_weights(const std::string& run_dir, int step) {
  std::map<std::string, torch::Tensor> out;
  for (auto& [name, tensor] :
       qkd::io::read_safetensors(fmt::format("{}/checkpoints/step-{:08d}/student.safetensors", run_dir, step)))
    out[name] = tensor;
  return out;
}

// auto's signal-propagation analysis, through the binary: the first event is the analysis (step 0) with
// every projection type's statistics; the types it finds to be outliers (o_proj and v_proj on the shipped
// teacher, as the paper's analysis finds) start frozen at step 0, so the first update leaves them at the
// teacher's weights and step 1 measures no gradient for them; after release_calm_steps calm steps they
// are released and train.
TEST(TrainCli, AutoAnalysisFreezesTheGradientOutliersBeforeTheFirstUpdate) {
  const auto dir = scratch_dir("auto-analysis");
  auto config = small_run(dir + "/run");
  config["optim"] = {{"lr", 1e-3}};
  config["freeze"] = {{"policy", "auto"},
                      {"scope", "all"},
                      {"release_lr_factor", 1.0},
                      {"release_calm_steps", 2},
                      {"release_warmup_steps", 2}};
  // Nothing counts as an instability, so every step is calm and the release comes at step 3.
  config["monitor"] = {{"interval", 1}, {"spike_factor", 1e6}, {"loss_factor", 1e6}};
  config["checkpoint"] = {{"interval", 1}, {"keep_last", 8}};
  config["export"] = {{"formats", json::array()}};
  const auto result = run_cli("--config " + write_config(config, dir + "/c.json"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("analysis of 4 micro-batches before the first update"), std::string::npos)
      << result.output;

  const auto events = jsonl(dir + "/run/events.jsonl", false);
  ASSERT_GE(events.size(), 3u);
  const auto& analysis = events[0];
  EXPECT_EQ(analysis.at("kind"), "analysis");
  EXPECT_EQ(analysis.at("step"), 0);
  EXPECT_EQ(analysis.at("batches_used"), 4);
  ASSERT_EQ(analysis.at("groups").size(), 7u);
  std::set<std::string> outliers;
  for (const auto& g : analysis.at("groups")) {
    const bool frozen = g.at("frozen").get<bool>();
    EXPECT_EQ(frozen, 2 * g.at("outlier_batches").get<int>() > 4) << g.dump();  // the rule, as logged
    EXPECT_GT(g.at("first_update_ratio").get<double>(), 0.0) << g.dump();
    if (frozen) outliers.insert(g.at("type").get<std::string>());
  }
  EXPECT_EQ(outliers, (std::set<std::string>{"o_proj", "v_proj"})) << analysis.dump();
  EXPECT_EQ(analysis.at("activation_rms").size(), 6u);

  const auto& freeze = events[1];
  EXPECT_EQ(freeze.at("kind"), "freeze");
  EXPECT_EQ(freeze.at("step"), 0);
  EXPECT_EQ(freeze.at("modules"), analysis.at("modules"));
  EXPECT_EQ(freeze.at("modules").size(), 12u);
  EXPECT_NE(freeze.at("reason").get<std::string>().find("analysis"), std::string::npos);
  json release;
  for (const auto& e : events)
    if (e.at("kind") == "release") release = e;
  ASSERT_FALSE(release.is_null()) << "no release";
  EXPECT_EQ(release.at("step"), 3);

  const auto signal = jsonl(dir + "/run/signal.jsonl", false);
  for (const auto& layer : signal.at(0).at("layers")) {
    EXPECT_EQ(layer.at("grad_sq").at("v_proj").get<double>(), 0.0);
    EXPECT_GT(layer.at("grad_sq").at("q_proj").get<double>(), 0.0);
  }
  std::map<std::string, torch::Tensor> teacher;
  for (auto& [name, tensor] : qkd::io::read_safetensors(repo_path("assets/models/kjv-teacher-7m/model.safetensors")))
    teacher[name] = tensor.to(torch::kFloat32);
  const auto s1 = checkpoint_weights(dir + "/run", 1), s2 = checkpoint_weights(dir + "/run", 2),
             s4 = checkpoint_weights(dir + "/run", 4);
  for (const auto& module : freeze.at("modules")) {
    const auto w = module.get<std::string>() + ".weight";
    EXPECT_TRUE(torch::equal(s1.at(w), teacher.at(w))) << w << " moved in the first update";
    EXPECT_TRUE(torch::equal(s2.at(w), s1.at(w))) << w << " moved while frozen";
    EXPECT_FALSE(torch::equal(s4.at(w), s2.at(w))) << w << " did not train after its release";
  }
  EXPECT_FALSE(torch::equal(s1.at("model.layers.0.self_attn.q_proj.weight"),
                            teacher.at("model.layers.0.self_attn.q_proj.weight")));
}

// configs/llama7b.json is the GPU recipe; on the CPU, with its paths pointed at the shipped teacher and
// data and the step shrunk (2 steps, one 128-token micro-batch; eval and export bounded), the same file
// trains, evaluates and exports: every key of the recipe is read by a real run.
class Llama7bRecipe : public ::testing::TestWithParam<const char*> {};

// configs/llama7b-80gb.json is the same recipe with the optimizer's memory savings (docs/memory.md).
TEST_P(Llama7bRecipe, RunsTwoStepsOnCpuWithLocalPaths) {
  const auto dir = scratch_dir("llama7b");
  const std::string data = repo_path("assets/data/kjv/kjv-train.u16");
  const auto result =
      run_cli("--config " + repo_path(GetParam()) + " --set run_dir=" + dir + "/run --set teacher.path=" +
              qkd::test::shipped_teacher() + " --set 'data.sources=[{\"path\": \"" + data +
              "\"}]' --set data.seq_len=128 --set 'eval.ppl=[\"" + qkd::test::kjv_val_tokens() +
              "\"]' --set 'eval.mc=[\"" + repo_path("assets/data/kjv/kjv-cloze-val.jsonl") +
              "\"]' --set eval.seq_len=128 --set eval.max_windows=4 --set eval.mc_limit=8 --set train.device=cpu"
              " --set train.steps=2 --set train.micro_batch=1 --set train.grad_accum=1 --set train.threads=2");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  json summary;
  std::ifstream(dir + "/run/summary.json") >> summary;
  EXPECT_EQ(summary.at("steps_completed"), 2);
  ASSERT_EQ(summary.at("exported").size(), 3u);  // hf, packed, gguf
  for (const auto& path : summary.at("exported")) EXPECT_TRUE(fs::exists(path.get<std::string>())) << path;
  // On the CPU the recipe's bf16 autocast is off (the bf16 student computes as it is): said once.
  EXPECT_NE(result.output.find("train.precision: autocast runs on CUDA only"), std::string::npos) << result.output;
}

INSTANTIATE_TEST_SUITE_P(TrainCli, Llama7bRecipe,
                         ::testing::Values("configs/llama7b.json", "configs/llama7b-80gb.json"));

// The console ends with what a newcomer acts on: outputs, perplexities side by side, next commands.
TEST(TrainCli, FinishedRunEndsWithDigestOfOutputsBaselinesAndNextCommands) {
  const auto dir = scratch_dir("digest");
  auto config = small_run(dir + "/run");
  config["train"]["steps"] = 2;
  const auto config_path = write_config(config, dir + "/c.json");
  const auto result = run_cli("--config " + config_path);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto digest = result.output.substr(result.output.rfind("Done: 2 steps"));
  EXPECT_NE(digest.find("student: " + dir + "/run/export/hf"), std::string::npos) << digest;
  EXPECT_NE(digest.find("report:  " + dir + "/run/report.html"), std::string::npos) << digest;
  EXPECT_TRUE(fs::exists(dir + "/run/report.html"));
  EXPECT_NE(digest.find("qkd-train report --run " + dir + "/run"), std::string::npos) << digest;
  EXPECT_NE(digest.find("qkd-train eval --model"), std::string::npos) << digest;

  json summary, baselines;
  std::ifstream(dir + "/run/summary.json") >> summary;
  std::ifstream(dir + "/run/baselines.json") >> baselines;
  const double teacher = baselines.at("teacher").at("kjv-val.u16").get<double>();
  const double rtn = baselines.at("student").at("kjv-val.u16").get<double>();
  const double student = summary.at("final_eval").at("ppl").at("kjv-val.u16").get<double>();
  EXPECT_EQ(summary.at("baselines"), baselines);
  // The teacher baseline is the teacher evaluated on its own, through the eval command.
  const auto eval = run_cli("eval --model " + qkd::test::shipped_teacher() + " --ppl " +
                            qkd::test::kjv_val_tokens() +
                            " --seq-len 32 --max-windows 8 --threads 1 --json " + dir + "/teacher.json");
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  json teacher_eval;
  std::ifstream(dir + "/teacher.json") >> teacher_eval;
  EXPECT_NEAR(teacher, teacher_eval.at("ppl").at("kjv-val.u16").get<double>(), 1e-3);
  const auto row = fmt::format("kjv-val.u16 {:.3f} {:.3f} {:.3f}", teacher, rtn, student);
  std::string squeezed;  // the table's row with its column padding collapsed
  for (char c : digest.substr(digest.find("kjv-val.u16"))) {
    if (c == '\n') break;
    if (c != ' ' || (!squeezed.empty() && squeezed.back() != ' ')) squeezed += c;
  }
  EXPECT_EQ(squeezed, row) << digest;
}

struct BadInput {
  std::string name;
  std::function<void(json&, const std::string& dir)> edit;
  std::string expected;
  friend void PrintTo(const BadInput& input, std::ostream* os) { *os << input.name; }
};

class TrainBadInput : public ::testing::TestWithParam<BadInput> {};

TEST_P(TrainBadInput, FailsFastWithActionableMessageAndNoRunDir) {
  const auto dir = scratch_dir("bad");
  auto config = small_run(dir + "/run");
  GetParam().edit(config, dir);
  const auto path = dir + "/config.json";
  if (GetParam().name == "malformed_json")
    std::ofstream(path) << "{\"run_dir\": ";
  else
    write_config(config, path);
  const auto result = run_cli("--config " + path);
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find(GetParam().expected), std::string::npos) << result.output;
  EXPECT_FALSE(fs::exists(dir + "/run")) << "a failed start must not leave a run directory";
}

INSTANTIATE_TEST_SUITE_P(
    Cases, TrainBadInput,
    ::testing::Values(BadInput{"malformed_json", [](json&, const std::string&) {}, "config.json: bad JSON"},
                      BadInput{"unknown_key", [](json& c, const std::string&) { c["optim"]["lr_max"] = 1; },
                               "optim.lr_max: unknown key"},
                      BadInput{"missing_teacher",
                               [](json& c, const std::string&) { c["teacher"]["path"] = "/no/such/teacher"; },
                               "teacher.path: checkpoint directory not found"},
                      BadInput{"empty_dataset",
                               [](json& c, const std::string& dir) {
                                 std::ofstream(dir + "/empty.jsonl").close();
                                 c["data"]["sources"][0]["path"] = dir + "/empty.jsonl";
                               },
                               "empty.jsonl"},
                      BadInput{"malformed_jsonl_strict",
                               [](json& c, const std::string& dir) {
                                 std::ofstream(dir + "/bad.jsonl") << "{\"text\": \"In the beginning\"}\n{\"text\": \n";
                                 c["data"]["sources"][0]["path"] = dir + "/bad.jsonl";
                                 c["data"]["strict"] = true;
                               },
                               "bad.jsonl:2"}),
    [](const auto& info) { return info.param.name; });

// Polls until `path` exists or the process ends; true when it appeared.
bool wait_for_file(const std::string& path, pid_t pid, double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < until) {
    if (fs::exists(path)) return true;
    if (::waitpid(pid, nullptr, WNOHANG) == pid) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

std::vector<std::string> sorted_names(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// SIGTERM to `pid` once `path` exists; expects exit 0 and returns the process's output.
std::string stop_when_exists(pid_t pid, const std::string& path, const std::string& log) {
  EXPECT_TRUE(wait_for_file(path, pid, 120)) << qkd::test::read_file(log);
  ::kill(pid, SIGTERM);
  int status = 0;
  EXPECT_TRUE(qkd::test::wait_for_exit(pid, 60, status)) << "no exit within 60 s of SIGTERM";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << qkd::test::read_file(log);
  return qkd::test::read_file(log);
}

// The offline teacher: cache-teacher stopped by SIGTERM keeps complete shards only, and the same command
// completes them to the bytes of an uninterrupted build; another config is refused naming the field.
TEST(TrainCli, CacheTeacherStoppedBySigtermContinuesToTheSameBytes) {
  const auto dir = scratch_dir("cache-teacher");
  auto config = small_run(dir + "/run");
  config["train"]["steps"] = 100;  // 200 micro-batches in 50 shards: room for the signal to land mid-way
  const auto path = write_config(config, dir + "/c.json");
  const std::vector<std::string> args{"cache-teacher", "--config", path, "--top-k", "8", "--shard-micro-batches", "4"};
  const auto straight =
      run_cli("cache-teacher --config " + path + " --top-k 8 --shard-micro-batches 4 --out " + dir + "/straight");
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  EXPECT_NE(straight.output.find("Cached 12800 tokens (200 micro-batches, 50 shards)"), std::string::npos)
      << straight.output;

  auto stopped_args = args;
  stopped_args.insert(stopped_args.end(), {"--out", dir + "/resumed"});
  const pid_t pid = qkd::test::start_cli(stopped_args, dir + "/stopped.log");
  const auto output = stop_when_exists(pid, dir + "/resumed/shard-00001.safetensors", dir + "/stopped.log");
  ASSERT_NE(output.find("Stopped by signal"), std::string::npos) << "finished before SIGTERM landed:\n" << output;
  json manifest;
  std::ifstream(dir + "/resumed/manifest.json") >> manifest;
  EXPECT_EQ(manifest.at("complete"), false);
  for (const auto& name : sorted_names(dir + "/resumed"))
    EXPECT_TRUE(name == "manifest.json" || name.rfind(".safetensors") == name.size() - 12) << name;

  const auto second =
      run_cli("cache-teacher --config " + path + " --top-k 8 --shard-micro-batches 4 --out " + dir + "/resumed");
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("complete shards"), std::string::npos) << second.output;
  ASSERT_EQ(sorted_names(dir + "/resumed"), sorted_names(dir + "/straight"));
  for (const auto& name : sorted_names(dir + "/straight"))
    EXPECT_EQ(qkd::test::read_file(dir + "/resumed/" + name), qkd::test::read_file(dir + "/straight/" + name)) << name;

  const auto other =
      run_cli("cache-teacher --config " + path + " --set data.seed=4 --top-k 8 --out " + dir + "/straight");
  EXPECT_NE(other.exit_code, 0);
  EXPECT_NE(other.output.find(dir + "/straight/manifest.json: data.seed: cached 3, config 4"), std::string::npos)
      << other.output;
}

// Training from the cache (kd.teacher cache): the teacher model is never loaded, the summary and report are
// written without a teacher baseline, SIGTERM + resume equals an uninterrupted run bitwise, and a run the
// cache does not cover fails before it starts.
TEST(TrainCli, TrainingFromTheTeacherCacheResumesBitwiseWithoutTheTeacher) {
  const auto dir = scratch_dir("from-cache");
  auto config = small_run(dir + "/run");
  config["train"]["steps"] = 12;
  const auto built =
      run_cli("cache-teacher --config " + write_config(config, dir + "/c.json") + " --top-k 8 --out " + dir + "/cache");
  ASSERT_EQ(built.exit_code, 0) << built.output;
  config["kd"]["teacher"] = "cache";
  config["kd"]["teacher_cache"] = dir + "/cache";
  config["run_dir"] = dir + "/straight";
  const auto straight = write_config(config, dir + "/straight.json");
  config["run_dir"] = dir + "/resumed";
  const auto resumed = write_config(config, dir + "/resumed.json");

  const auto full = run_cli("--config " + straight);
  ASSERT_EQ(full.exit_code, 0) << full.output;
  EXPECT_NE(full.output.find("the teacher model is not loaded"), std::string::npos) << full.output;
  EXPECT_EQ(full.output.find("computed in float32"), std::string::npos) << "the teacher was loaded:\n" << full.output;
  json summary;
  std::ifstream(dir + "/straight/summary.json") >> summary;
  EXPECT_TRUE(summary.at("baselines").at("teacher").is_null());
  EXPECT_TRUE(summary.at("baselines").at("student").contains("kjv-val.u16"));
  EXPECT_TRUE(summary.at("final_eval").at("ppl").contains("kjv-val.u16"));
  EXPECT_TRUE(fs::exists(dir + "/straight/report.html"));

  const auto log = dir + "/stopped.log";
  const pid_t pid = qkd::test::start_cli({"train", "--config", resumed}, log);
  ASSERT_TRUE(wait_for_text(dir + "/resumed/metrics.jsonl", "\"step\":3,", pid, 120)) << qkd::test::read_file(log);
  ::kill(pid, SIGTERM);
  int status = 0;
  ASSERT_TRUE(qkd::test::wait_for_exit(pid, 60, status));
  ASSERT_NE(qkd::test::read_file(log).find("stopped by signal after step "), std::string::npos)
      << qkd::test::read_file(log);
  const auto second = run_cli("train --config " + resumed);
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("resumed from"), std::string::npos) << second.output;
  expect_resumed_run_equals_straight(dir);

  const auto longer = run_cli("--config " + straight + " --set train.steps=13 --set run_dir=" + dir + "/longer");
  EXPECT_NE(longer.exit_code, 0);
  EXPECT_NE(longer.output.find("kd.teacher_cache: " + dir +
                               "/cache/manifest.json: micro_batches: cached 24, the run "
                               "needs 26"),
            std::string::npos)
      << longer.output;
  EXPECT_FALSE(fs::exists(dir + "/longer"));
}

TEST(TrainCli, CheckpointFromAnotherModelIsRefusedWithTheDifference) {
  const auto dir = scratch_dir("othermodel");
  auto config = small_run(dir + "/run");
  config["train"]["steps"] = 2;
  config["export"]["formats"] = json::array();
  ASSERT_EQ(run_cli("--config " + write_config(config, dir + "/a.json")).exit_code, 0);
  config["quant"]["bits"] = 3;
  const auto result = run_cli("--config " + write_config(config, dir + "/b.json"));
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("different model or quantizer config"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("/quant/bits: checkpoint 4, config 3"), std::string::npos) << result.output;
}

// GPTQ as the student's start: `ptq --method gptq` (calibrated on a run config's data section) writes a
// student that `eval --student` reads and that a run with the same quant section starts from;
// `student.init: gptq` runs it inside the trainer. A misspelt method and a dynamic-scale gptq run fail
// with one line.
TEST(TrainCli, GptqStudentFromPtqAndFromStudentInit) {
  const auto dir = scratch_dir("gptq");
  const auto teacher = qkd::test::shipped_teacher();
  auto config = small_run(dir + "/run");
  config["quant"] = {{"bits", 3}, {"scale_policy", "static"}};
  config["train"]["steps"] = 2;
  config["freeze"] = {{"policy", "none"}};
  config["export"]["formats"] = json::array();
  const auto config_path = write_config(config, dir + "/c.json");
  const auto ptq = run_cli("ptq --method gptq --model " + teacher + " --out " + dir + "/gptq --bits 3 --calib-config " +
                           config_path + " --calib-batches 8 --calib-seq-len 32");
  ASSERT_EQ(ptq.exit_code, 0) << ptq.output;
  EXPECT_NE(ptq.output.find("gptq: layer 6/6"), std::string::npos) << ptq.output;
  const auto eval = run_cli("eval --model " + teacher + " --student " + dir + "/gptq --ppl " +
                            qkd::test::kjv_val_tokens() +
                            " --seq-len 32 --max-windows 8 --threads 1 --json " + dir + "/eval.json");
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  json evaluated;
  std::ifstream(dir + "/eval.json") >> evaluated;
  const double ppl = evaluated.at("ppl").at("kjv-val.u16").get<double>();
  EXPECT_TRUE(std::isfinite(ppl) && ppl > 1.0) << evaluated.dump();

  auto from_checkpoint = config;
  from_checkpoint["run_dir"] = dir + "/from-checkpoint";
  from_checkpoint["student"] = {{"init", dir + "/gptq"}};
  auto r = run_cli("--config " + write_config(from_checkpoint, dir + "/from-checkpoint.json"));
  EXPECT_EQ(r.exit_code, 0) << r.output;

  auto in_trainer = config;
  in_trainer["run_dir"] = dir + "/in-trainer";
  in_trainer["student"] = {{"init", "gptq"}, {"gptq_calib_batches", 4}, {"gptq_act_order", true}};
  r = run_cli("--config " + write_config(in_trainer, dir + "/in-trainer.json"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("gptq: layer 6/6"), std::string::npos) << r.output;

  // With LSQ the GPTQ scales are where the learned scales start: the static run keeps them, the learned
  // one ends a little away from them.
  auto learned = in_trainer;
  learned["run_dir"] = dir + "/learned";
  learned["quant"]["learnable_scale"] = true;
  r = run_cli("--config " + write_config(learned, dir + "/learned.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto checkpoint = "/checkpoints/step-00000002/student.safetensors";
  std::map<std::string, torch::Tensor> trained;
  for (auto& [name, t] : qkd::io::read_safetensors(dir + "/learned" + checkpoint)) trained[name] = t;
  int scales = 0;
  for (const auto& [name, start] : qkd::io::read_safetensors(dir + "/in-trainer" + checkpoint)) {
    if (name.find("weight_quantizer.scale") == std::string::npos) continue;
    ASSERT_TRUE(trained.count(name)) << name;
    const double moved = ((trained[name] - start).abs() / start.abs()).max().item<double>();
    EXPECT_GT(moved, 0.0) << name;
    EXPECT_LT(moved, 0.1) << name;
    ++scales;
  }
  EXPECT_EQ(scales, 42);  // 7 projections x 6 layers

  in_trainer["quant"]["scale_policy"] = "dynamic";
  r = run_cli("--config " + write_config(in_trainer, dir + "/dynamic.json"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("dynamic.json: student.init: \"gptq\" needs quant.scale_policy \"static\""),
            std::string::npos)
      << r.output;

  from_checkpoint["quant"]["scale_policy"] = "dynamic";
  r = run_cli("--config " + write_config(from_checkpoint, dir + "/mismatch.json"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("scale_policy: checkpoint \"static\", config \"dynamic\""), std::string::npos) << r.output;

  const auto nope = run_cli("ptq --method nope --model " + teacher + " --out " + dir + "/nope");
  EXPECT_NE(nope.exit_code, 0);
  EXPECT_EQ(nope.output, "error: --method: expected rtn or gptq, got \"nope\"\n");
  EXPECT_FALSE(fs::exists(dir + "/nope"));
}

}  // namespace

// data.document_mask and kd.ce_on responses through the binary, on chat records packed with token-file
// windows: both change what the step computes (the loss records differ from a plain run), a teacher
// cache built without the mask is refused by a masked run. (Marks after a data-cursor restore:
// test_data's DataMarks.ResumedStreamRepeatsTheMarks.)
TEST(TrainCli, DocumentMaskAndResponseOnlyCrossEntropyChangeTheStep) {
  const auto dir = scratch_dir("document-mask");
  auto config = small_run(dir + "/plain");
  config["data"]["sources"] = {{{"path", repo_path("assets/data/kjv/kjv-train.u16")}},
                               {{"path", repo_path("tests/fixtures/data/sharegpt.jsonl")}}};
  config["freeze"] = {{"policy", "none"}};
  const auto plain = run_cli("--config " + write_config(config, dir + "/plain.json"));
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  const auto cache =
      run_cli("cache-teacher --config " + write_config(config, dir + "/c.json") + " --top-k 8 --out " + dir + "/cache");
  ASSERT_EQ(cache.exit_code, 0) << cache.output;

  config["data"]["document_mask"] = true;
  config["kd"]["ce_on"] = "responses";
  config["run_dir"] = dir + "/masked";
  const auto masked_config = write_config(config, dir + "/masked.json");
  const auto masked = run_cli("--config " + masked_config);
  ASSERT_EQ(masked.exit_code, 0) << masked.output;
  const auto first_step = [](const std::string& path) {
    for (const auto& record : jsonl(path, true))
      if (record.value("type", "") == "train") return record;
    return json();
  };
  const auto plain_step = first_step(dir + "/plain/metrics.jsonl");
  const auto masked_step = first_step(dir + "/masked/metrics.jsonl");
  ASSERT_TRUE(plain_step.contains("kd") && masked_step.contains("kd"));
  EXPECT_NE(plain_step.at("kd"), masked_step.at("kd"));
  EXPECT_NE(plain_step.at("ce"), masked_step.at("ce"));

  // eval --student reads the run directory's newest checkpoint: on the run's own settings it gives the
  // run's final perplexity; per document (--document-mask) another one where windows hold a BOS.
  const auto summary = json::parse(qkd::test::read_file(dir + "/masked/summary.json"));
  const double run_ppl = summary.at("final_eval").at("ppl").at("kjv-val.u16").get<double>();
  const auto eval_of = [&](int windows, const std::string& flags) {
    const auto out =
        run_cli("eval --model " + qkd::test::shipped_teacher() + " --student " + dir + "/masked --ppl " +
                qkd::test::kjv_val_tokens() + " --seq-len 32 --max-windows " + std::to_string(windows) +
                " --threads 1 --json " + dir + "/eval.json " + flags);
    EXPECT_EQ(out.exit_code, 0) << out.output;
    return json::parse(qkd::test::read_file(dir + "/eval.json")).at("ppl").at("kjv-val.u16").get<double>();
  };
  EXPECT_NEAR(eval_of(8, ""), run_ppl, 1e-4 * run_ppl);  // the run's eval: 8 windows of 32 tokens
  // 64 windows hold chapter starts (the first 8 do not).
  EXPECT_GT(std::abs(eval_of(64, "--document-mask") - eval_of(64, "")), 1e-3);

  const auto refused = run_cli("--config " + masked_config + " --set kd.teacher=cache --set kd.teacher_cache=" + dir +
                               "/cache --set run_dir=" + dir + "/from-cache");
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.output.find("data.document_mask"), std::string::npos) << refused.output;
}

// train.cpu_parallelism rows with 2 threads: each core computes whole rows of the micro-batch and the
// shards' gradients are added. Documents, response-only cross-entropy (whose target count differs
// per shard) and the teacher cache all go through it. The step is the one-pass step up to rounding,
// and a run repeats bitwise.
TEST(TrainCli, RowShardsOnTwoCoresGiveTheOnePassStepAndRepeatBitwise) {
  const auto dir = scratch_dir("row-shards");
  auto config = small_run(dir + "/operators");
  config["data"]["sources"] = {{{"path", repo_path("assets/data/kjv/kjv-train.u16")}},
                               {{"path", repo_path("tests/fixtures/data/sharegpt.jsonl")}}};
  config["data"]["document_mask"] = true;
  config["kd"]["ce_on"] = "responses";
  config["freeze"] = {{"policy", "none"}};
  config["monitor"] = {{"enabled", false}};
  config["train"]["threads"] = 2;
  config["train"]["steps"] = 3;
  config["train"]["micro_batch"] = 3;  // shards of 2 and 1 rows
  config["train"]["cpu_parallelism"] = "operators";
  config["export"]["formats"] = json::array();
  const auto train_records = [&](const std::string& name) {
    config["run_dir"] = dir + "/" + name;
    const auto r = run_cli("--config " + write_config(config, dir + "/" + name + ".json"));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::vector<json> train;
    for (const auto& record : jsonl(dir + "/" + name + "/metrics.jsonl", true))
      if (record.value("type", "") == "train") train.push_back(record);
    return train;
  };
  const auto one_pass = train_records("operators");
  config["train"]["cpu_parallelism"] = "rows";
  const auto rows = train_records("rows");
  const auto again = train_records("rows-again");
  ASSERT_EQ(rows.size(), 3u);
  ASSERT_EQ(one_pass.size(), 3u);
  EXPECT_EQ(rows, again);
  for (const auto* key : {"loss", "kd", "ce"})
    EXPECT_NEAR(rows[0].at(key).get<double>(), one_pass[0].at(key).get<double>(),
                1e-5 * std::abs(one_pass[0].at(key).get<double>()))
        << key;
  EXPECT_NEAR(rows[0].at("grad_norm").get<double>(), one_pass[0].at("grad_norm").get<double>(),
              1e-4 * one_pass[0].at("grad_norm").get<double>());
  // Not bitwise the one pass: the weight gradients were added from two partial sums, so the shards ran.
  EXPECT_NE(rows[0].at("grad_norm").get<double>(), one_pass[0].at("grad_norm").get<double>());
  EXPECT_NEAR(rows[2].at("loss").get<double>(), one_pass[2].at("loss").get<double>(),
              1e-3 * std::abs(one_pass[2].at("loss").get<double>()));

  // From the teacher cache: shards take their rows of the micro-batch's cached top-k.
  const auto cache = run_cli("cache-teacher --config " + write_config(config, dir + "/cache.json") +
                             " --top-k 8 --out " + dir + "/cache");
  ASSERT_EQ(cache.exit_code, 0) << cache.output;
  config["kd"]["teacher"] = "cache";
  config["kd"]["teacher_cache"] = dir + "/cache";
  const auto cached_rows = train_records("cache-rows");
  config["train"]["cpu_parallelism"] = "operators";
  const auto cached_one_pass = train_records("cache-operators");
  ASSERT_EQ(cached_rows.size(), 3u);
  ASSERT_EQ(cached_one_pass.size(), 3u);
  EXPECT_NEAR(cached_rows[0].at("loss").get<double>(), cached_one_pass[0].at("loss").get<double>(),
              1e-5 * std::abs(cached_one_pass[0].at("loss").get<double>()));
}
