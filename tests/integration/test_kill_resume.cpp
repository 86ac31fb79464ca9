// SIGKILL at random points (during start-up, a step, a checkpoint write or the export), then the same
// command again, until the run finishes: the result must be bitwise what an uninterrupted run gives.
// QKD_KILLS / QKD_KILL_SEED change the number of kills and the seed.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "qkd/io/safetensors.h"
#include "test_support.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using qkd::test::repo_path;

const std::string kTeacher = qkd::test::fixture_path("models/tiny-llama-tied-llama3rope-bf16");
constexpr int kSteps = 300;  // long enough on the tiny model for 20 kills at up to 2 s apart

json run_config(const std::string& run_dir) {
  return {
      {"run_dir", run_dir},
      {"teacher", {{"path", kTeacher}}},
      {"quant", {{"bits", 4}}},
      {"data", {{"sources", {{{"path", repo_path("assets/data/kjv/kjv-train.u16")}}}}, {"seq_len", 32}, {"seed", 9}}},
      {"kd", {{"ce_weight", 0.5}}},
      {"optim", {{"lr", 1e-3}, {"warmup_steps", 2}, {"grad_clip", 1.0}}},
      {"train", {{"steps", kSteps}, {"micro_batch", 2}, {"grad_accum", 2}, {"log_interval", 1}, {"threads", 1}}},
      {"eval",
       {{"ppl", {qkd::test::kjv_val_tokens()}}, {"seq_len", 32}, {"max_windows", 4}, {"at_start", false}}},
      {"monitor", {{"interval", 2}}},
      {"freeze", {{"policy", "auto"}, {"scope", "layer"}}},
      {"checkpoint", {{"interval", 1}, {"keep_last", 2}}},
      {"export", {{"formats", {"hf"}}, {"dtype", "float32"}}}};
}

pid_t start(const std::string& config, const std::string& log) {
  return qkd::test::start_cli({"--config", config}, log);
}

std::vector<json> records(const std::string& path) {
  auto lines = qkd::test::read_jsonl(path);
  for (auto& j : lines)
    for (auto key : {"tokens_per_s", "step_seconds", "peak_mem_mb", "phases"}) j.erase(key);
  return lines;
}

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : fallback;
}

TEST(KillResume, RandomSigkillsResumeToTheUninterruptedResultBitwise) {
  const int wanted_kills = env_int("QKD_KILLS", 20);
  std::mt19937_64 rng(static_cast<uint64_t>(env_int("QKD_KILL_SEED", 11)));
  const auto dir = qkd::test::scratch_dir("kill");
  std::ofstream(dir + "/straight.json") << run_config(dir + "/straight").dump();
  std::ofstream(dir + "/killed.json") << run_config(dir + "/killed").dump();

  int status = 0;
  ASSERT_TRUE(qkd::test::wait_for_exit(start(dir + "/straight.json", dir + "/straight.log"), 600, status));
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "see " << dir << "/straight.log";

  int kills = 0, launches = 0;
  bool finished = false;
  std::uniform_real_distribution<double> delay(0.05, 2.0);
  while (!finished && launches < 400) {
    const pid_t pid = start(dir + "/killed.json", dir + "/killed.log");
    ++launches;
    if (kills < wanted_kills && !qkd::test::wait_for_exit(pid, delay(rng), status)) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      ++kills;
      continue;
    }
    if (kills >= wanted_kills) ASSERT_TRUE(qkd::test::wait_for_exit(pid, 600, status));
    ASSERT_TRUE(WIFEXITED(status)) << "signal " << WTERMSIG(status) << " without a kill; see " << dir << "/killed.log";
    ASSERT_EQ(WEXITSTATUS(status), 0) << "see " << dir << "/killed.log";
    finished = true;
  }
  std::printf("kill-resume: %d SIGKILLs over %d launches, then finished\n", kills, launches);
  EXPECT_GE(kills, wanted_kills) << "the run finished before enough kills: make it longer";

  const auto a = qkd::io::read_safetensors(dir + "/straight/export/hf/model.safetensors");
  const auto b = qkd::io::read_safetensors(dir + "/killed/export/hf/model.safetensors");
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i].second, b[i].second)) << a[i].first;
  char last[64];
  std::snprintf(last, sizeof last, "/checkpoints/step-%08d/optimizer.safetensors", kSteps);
  const auto oa = qkd::io::read_safetensors(dir + "/straight" + last);
  const auto ob = qkd::io::read_safetensors(dir + "/killed" + last);
  ASSERT_EQ(oa.size(), ob.size());
  for (size_t i = 0; i < oa.size(); ++i) EXPECT_TRUE(torch::equal(oa[i].second, ob[i].second)) << oa[i].first;
  EXPECT_EQ(records(dir + "/straight/metrics.jsonl"), records(dir + "/killed/metrics.jsonl"));
  EXPECT_EQ(records(dir + "/straight/signal.jsonl"), records(dir + "/killed/signal.jsonl"));
  EXPECT_EQ(records(dir + "/straight/events.jsonl"), records(dir + "/killed/events.jsonl"));
  // Nothing half-written is left behind.
  for (const auto& entry : fs::recursive_directory_iterator(dir + "/killed"))
    EXPECT_EQ(entry.path().filename().string().find(".qkd-tmp-"), std::string::npos) << entry.path();
}

}  // namespace
