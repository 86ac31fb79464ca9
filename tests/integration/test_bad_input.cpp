// Hostile input through the real binary (issue: crashes, hangs, device files, lost records): each
// reproducer exits 1 within its time limit with one line that names the file and the field.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "cli_failures.h"
#include "test_support.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using qkd::test::expect_clean_failure;
using qkd::test::repo_path;
using qkd::test::two_step_run;
using qkd::test::run_cli;
using qkd::test::scratch_dir;

const std::string kTeacher = qkd::test::shipped_teacher();
const std::string kVal = qkd::test::kjv_val_tokens();
const std::string kInput = qkd::test::fixture_path("models/kjv-teacher-7m/reference_logits.safetensors");

std::string deep_json(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

// A copy of the shipped teacher whose config.json has `edit` applied.
std::string teacher_with_config(const std::string& dir, const std::function<void(json&)>& edit) {
  const auto model = dir + "/model";
  fs::copy(kTeacher, model, fs::copy_options::recursive);
  json config;
  std::ifstream(model + "/config.json") >> config;
  edit(config);
  std::ofstream(model + "/config.json") << config.dump();
  return model;
}

qkd::test::CommandResult logits_of(const std::string& model, const std::string& dir) {
  return run_cli("logits --model " + model + " --input " + kInput + " --output " + dir + "/out.safetensors", "", 60);
}

TEST(BadInput, DeeplyNestedJsonConfigFailsWithoutCrashing) {
  const auto dir = scratch_dir("deep");
  std::ofstream(dir + "/d.json") << deep_json(100000);
  expect_clean_failure(run_cli("--config " + dir + "/d.json", "", 60), dir + "/d.json", "nested deeper");
  std::ofstream(dir + "/shallow.json") << deep_json(30000);
  expect_clean_failure(run_cli("--config " + dir + "/shallow.json", "", 60), dir + "/shallow.json");
}

TEST(BadInput, DeeplyNestedOverrideFailsNamingTheKey) {
  const auto dir = scratch_dir("deep-set");
  std::ofstream(dir + "/value") << deep_json(20000);  // --set through a file: argv has a size limit
  const auto r =
      run_cli("--config " + repo_path("configs/tiny-kjv.json") + " --set \"label=$(cat " + dir + "/value)\"", "", 60);
  expect_clean_failure(r, "--set label");
}

TEST(BadInput, DeeplyNestedModelConfigFieldFails) {
  const auto dir = scratch_dir("deep-hf");
  const auto model = teacher_with_config(dir, [](json& c) { c["hidden_act"] = json::parse(deep_json(60)); });
  std::string text;
  {
    std::ifstream in(model + "/config.json");
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  text.replace(text.find("[["), 120, deep_json(50000));  // deeper than any parser should follow
  std::ofstream(model + "/config.json") << text;
  expect_clean_failure(logits_of(model, dir), model + "/config.json");
}

struct ConfigCase {
  std::string name;
  std::function<void(json&)> edit;
  std::string field;
  friend void PrintTo(const ConfigCase& c, std::ostream* os) { *os << c.name; }
};

class InvalidModelConfig : public ::testing::TestWithParam<ConfigCase> {};

TEST_P(InvalidModelConfig, FailsNamingConfigAndField) {
  const auto dir = scratch_dir("model-config-" + GetParam().name);
  const auto model = teacher_with_config(dir, GetParam().edit);
  expect_clean_failure(logits_of(model, dir), model + "/config.json", GetParam().field);
}

INSTANTIATE_TEST_SUITE_P(
    Values, InvalidModelConfig,
    ::testing::Values(
        ConfigCase{"kv_heads_zero", [](json& c) { c["num_key_value_heads"] = 0; }, "num_key_value_heads"},
        ConfigCase{"kv_heads_negative", [](json& c) { c["num_key_value_heads"] = -1; }, "num_key_value_heads"},
        ConfigCase{"rms_eps_negative", [](json& c) { c["rms_norm_eps"] = -1; }, "rms_norm_eps"},
        ConfigCase{"rope_theta_zero", [](json& c) { c["rope_theta"] = 0; }, "rope_theta"},
        ConfigCase{"rope_theta_negative", [](json& c) { c["rope_theta"] = -5; }, "rope_theta"},
        ConfigCase{
            "llama3_factor_zero",
            [](json& c) {
              c["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 0}, {"original_max_position_embeddings", 64}};
            },
            "factor"},
        ConfigCase{"bos_beyond_vocab", [](json& c) { c["bos_token_id"] = 100000; }, "bos_token_id"},
        ConfigCase{"max_positions_negative", [](json& c) { c["max_position_embeddings"] = -1; },
                   "max_position_embeddings"},
        ConfigCase{"rope_type_not_string",
                   [](json& c) {
                     c["rope_scaling"] = {{"rope_type", 3}};
                   },
                   "rope_type"},
        ConfigCase{"million_layers", [](json& c) { c["num_hidden_layers"] = 1000000; }, "num_hidden_layers"}),
    [](const auto& info) { return info.param.name; });

TEST(BadInput, SpecialFilesAsInputsFailInsteadOfBlocking) {
  const auto dir = scratch_dir("fifo");
  const auto fifo = dir + "/fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  expect_clean_failure(
      run_cli("logits --model " + kTeacher + " --input " + fifo + " --output " + dir + "/o.safetensors", "", 30), fifo,
      "a FIFO");
  for (const auto* name : {"model.safetensors", "config.json", "tokenizer.model"}) {
    const auto model = dir + "/" + name + "-model";
    fs::copy(kTeacher, model, fs::copy_options::recursive);
    fs::remove(model + "/" + name);
    ASSERT_EQ(::mkfifo((model + "/" + name).c_str(), 0600), 0);
    const auto r = run_cli("eval --model " + model + " --ppl " + kVal + " --max-windows 1 --seq-len 16", "", 30);
    expect_clean_failure(r, model + "/" + name, "a FIFO");
  }
  const auto zero = dir + "/zero-model";
  fs::copy(kTeacher, zero, fs::copy_options::recursive);
  fs::remove(zero + "/tokenizer.model");
  fs::create_symlink("/dev/zero", zero + "/tokenizer.model");
  expect_clean_failure(run_cli("eval --model " + zero + " --ppl " + kVal + " --max-windows 1 --seq-len 16", "", 30),
                       zero + "/tokenizer.model", "a character device");
}

TEST(BadInput, OutputsNeverReplaceSymlinksOrSpecialFiles) {
  const auto dir = scratch_dir("outputs");
  const auto target = dir + "/target.txt";
  std::ofstream(target) << "keep";
  fs::create_symlink(target, dir + "/link.safetensors");
  expect_clean_failure(
      run_cli("logits --model " + kTeacher + " --input " + kInput + " --output " + dir + "/link.safetensors", "", 60),
      dir + "/link.safetensors", "symbolic link");
  EXPECT_TRUE(fs::is_symlink(dir + "/link.safetensors"));
  const auto fifo = dir + "/out.fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  expect_clean_failure(run_cli("logits --model " + kTeacher + " --input " + kInput + " --output " + fifo, "", 60), fifo,
                       "not a regular file");
  EXPECT_TRUE(fs::is_fifo(fifo));
  // eval checks its --json path before evaluating.
  const auto r = run_cli("eval --model " + kTeacher + " --ppl " + kVal + " --json " + dir + "/nodir/x.json", "", 60);
  expect_clean_failure(r, dir + "/nodir/x.json", "does not exist");
  EXPECT_EQ(r.output.find("evaluating"), std::string::npos)
      << "evaluated before checking the output path: " << r.output;
}

TEST(BadInput, TokensOutsideTheVocabularyNameTheFile) {
  const auto dir = scratch_dir("oov");
  const auto path = dir + "/oov.u16";
  std::ofstream out(path, std::ios::binary);
  for (uint16_t t : {1, 2, 3, 60000, 5, 6, 7, 8}) out.write(reinterpret_cast<const char*>(&t), 2);
  out.close();
  expect_clean_failure(run_cli("eval --model " + kTeacher + " --ppl " + path + " --seq-len 4", "", 60), path, "60000");
}

TEST(BadInput, EvalFilesAreCheckedBeforeTheFirstStep) {
  const auto dir = scratch_dir("late-eval");
  const auto odd = dir + "/odd.u16";
  std::ofstream(odd, std::ios::binary) << "abc";
  auto config = two_step_run(dir + "/run");
  config["eval"]["ppl"] = {odd};
  std::ofstream(dir + "/c.json") << config.dump();
  const auto r = run_cli("--config " + dir + "/c.json", "", 60);
  expect_clean_failure(r, odd);
  EXPECT_EQ(r.output.find("step 1"), std::string::npos) << "trained before checking eval files: " << r.output;
  EXPECT_FALSE(fs::exists(dir + "/run"));
}

// Runs small_run to its end (2 steps), then rewrites its config to 3 steps so that the next run
// resumes from the step-2 checkpoint; returns the config path.
std::string finish_two_steps_then_ask_for_three(const std::string& dir) {
  const auto config = dir + "/c.json";
  std::ofstream(config) << two_step_run(dir + "/run").dump();
  const auto first = run_cli("--config " + config, "", 120);
  EXPECT_EQ(first.exit_code, 0) << first.output;
  auto longer = two_step_run(dir + "/run");
  longer["train"]["steps"] = 3;
  std::ofstream(config) << longer.dump();
  return config;
}

TEST(BadInput, NegativeCheckpointStepIsRefused) {
  const auto dir = scratch_dir("negative-step");
  const auto config = finish_two_steps_then_ask_for_three(dir);
  const auto state = dir + "/run/checkpoints/step-00000002/state.json";
  // As a checkpoint from before checksums, or one forged consistently: the values themselves are checked.
  fs::remove(dir + "/run/checkpoints/step-00000002/checksums.json");
  json j;
  std::ifstream(state) >> j;
  j["step"] = -5;
  std::ofstream(state) << j.dump();
  expect_clean_failure(run_cli("--config " + config, "", 120), state, "step");
  // A state without its fields names the file, not nlohmann's bare "key 'identity' not found".
  j["step"] = 2;
  j.erase("identity");
  std::ofstream(state) << j.dump();
  expect_clean_failure(run_cli("--config " + config, "", 120), state, "identity");
}

TEST(BadInput, LeftoverTemporaryCheckpointsOfDeadProcessesAreRemovedOnStart) {
  const auto dir = scratch_dir("leftovers");
  const auto config = finish_two_steps_then_ask_for_three(dir);
  // pid 2^22 + 1 is above Linux's pid_max limit, so no process can own it.
  const auto stale = dir + "/run/checkpoints/.step-00000003.qkd-tmp-4194305";
  fs::create_directories(stale);
  std::ofstream(stale + "/student.safetensors") << "partial";
  const auto r = run_cli("--config " + config, "", 120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(dir + "/run/checkpoints/step-00000003/state.json"));
}

}  // namespace
