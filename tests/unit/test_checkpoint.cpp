// Checkpoint directories: config parsing, shards, and the errors a user sees for broken ones.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/checkpoint/hf_config.h"
#include "qkd/common/error.h"
#include "test_support.h"

namespace fs = std::filesystem;
using qkd::test::run_cli;
using qkd::test::scratch_dir;
using qkd::test::fixture_path;

namespace {

std::string copy_model(const std::string& name, const std::string& tag) {
  const auto dir = scratch_dir(tag) + "/" + name;
  fs::copy(fixture_path("models/" + name), dir, fs::copy_options::recursive);
  return dir;
}

void edit_config(const std::string& dir, const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json config;
  std::ifstream(dir + "/config.json") >> config;
  edit(config);
  std::ofstream(dir + "/config.json") << config.dump(2);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const qkd::Error& e) {
    return e.what();
  }
  return "";
}

bool one_line(const std::string& s) { return s.find('\n') == std::string::npos; }

TEST(HfConfig, ReadsOlderAndNewerRopeForms) {
  const auto old_form = qkd::checkpoint::read_llama_config(fixture_path("models/kjv-teacher-7m/config.json"));
  EXPECT_EQ(old_form.hidden_size, 256);
  EXPECT_EQ(old_form.num_key_value_heads, 4);
  EXPECT_EQ(old_form.rope.type, "default");
  EXPECT_DOUBLE_EQ(old_form.rope.theta, 10000.0);
  const auto llama3 =
      qkd::checkpoint::read_llama_config(fixture_path("models/tiny-llama-tied-llama3rope-bf16/config.json"));
  EXPECT_EQ(llama3.rope.type, "llama3");
  EXPECT_DOUBLE_EQ(llama3.rope.theta, 500000.0);
  EXPECT_DOUBLE_EQ(llama3.rope.factor, 8.0);
  EXPECT_EQ(llama3.rope.original_max_position_embeddings, 64);
  EXPECT_TRUE(llama3.tie_word_embeddings);
}

TEST(HfConfig, WrittenConfigParsesBackIdentically) {
  auto config =
      qkd::checkpoint::read_llama_config(fixture_path("models/tiny-llama-tied-llama3rope-bf16/config.json"));
  const auto again = qkd::checkpoint::parse_llama_config(qkd::checkpoint::llama_config_to_json(config), "roundtrip");
  EXPECT_EQ(again.hidden_size, config.hidden_size);
  EXPECT_EQ(again.rope.type, config.rope.type);
  EXPECT_DOUBLE_EQ(again.rope.low_freq_factor, config.rope.low_freq_factor);
  EXPECT_EQ(again.tie_word_embeddings, config.tie_word_embeddings);
}

TEST(HfCheckpoint, ConfigWithoutHiddenSizeNamesFileAndField) {
  const auto dir = copy_model("tiny-llama-gqa-sharded", "nohidden");
  edit_config(dir, [](nlohmann::json& c) { c.erase("hidden_size"); });
  const auto message = error_of([&] { qkd::checkpoint::load_llama(dir); });
  EXPECT_NE(message.find("config.json"), std::string::npos) << message;
  EXPECT_NE(message.find("hidden_size"), std::string::npos) << message;
  EXPECT_TRUE(one_line(message));
}

TEST(HfCheckpoint, MissingShardNamedInIndex) {
  const auto dir = copy_model("tiny-llama-gqa-sharded", "noshard");
  fs::remove(dir + "/model-00003-of-00004.safetensors");
  const auto message = error_of([&] { qkd::checkpoint::load_llama(dir); });
  EXPECT_NE(message.find("model.safetensors.index.json"), std::string::npos) << message;
  EXPECT_NE(message.find("model-00003-of-00004.safetensors"), std::string::npos) << message;
}

TEST(HfCheckpoint, WrongShapeAndMissingTensorsAreListed) {
  const auto dir = copy_model("tiny-llama-tied-llama3rope-bf16", "wrongshape");
  auto tensors = qkd::io::read_safetensors(dir + "/model.safetensors");
  qkd::io::NamedTensors edited;
  for (auto& [name, t] : tensors) {
    if (name == "model.layers.1.mlp.up_proj.weight") continue;  // dropped -> missing
    if (name == "model.layers.0.self_attn.v_proj.weight")
      edited.emplace_back(name, t.narrow(0, 0, 48).clone());
    else
      edited.emplace_back(name, t.clone());
  }
  edited.emplace_back("model.layers.9.extra.weight", torch::zeros({2}));
  tensors.clear();
  qkd::io::write_safetensors(dir + "/model.safetensors", edited);
  const auto message = error_of([&] { qkd::checkpoint::load_llama(dir); });
  EXPECT_NE(message.find("missing tensors: model.layers.1.mlp.up_proj.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("unexpected tensors: model.layers.9.extra.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("model.layers.0.self_attn.v_proj.weight [48, 96] (expected [96, 96])"), std::string::npos)
      << message;
  EXPECT_TRUE(one_line(message));
}

TEST(HfCheckpoint, SavedCheckpointReloadsBitwise) {
  auto model = qkd::checkpoint::load_llama(fixture_path("models/tiny-llama-tied-llama3rope-bf16"));
  const auto out = scratch_dir("save") + "/saved";
  qkd::checkpoint::save_hf_checkpoint(*model, out, torch::kBFloat16,
                                      fixture_path("models/tiny-llama-tied-llama3rope-bf16"));
  auto again = qkd::checkpoint::load_llama(out);
  const auto a = model->named_parameters(), b = again->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& item : a) EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << item.key();
  EXPECT_TRUE(fs::exists(out + "/tokenizer.model"));
}

TEST(LogitsCommand, CorruptInputsExitNonZeroWithOneLine) {
  const auto dir = copy_model("tiny-llama-gqa-sharded", "cli");
  fs::remove(dir + "/model-00002-of-00004.safetensors");
  const auto out = scratch_dir("cli-out");
  const auto result = run_cli("logits --model " + dir + " --input " + dir + "/reference_logits.safetensors --output " +
                              out + "/x.safetensors");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("model-00002-of-00004.safetensors"), std::string::npos) << result.output;
  EXPECT_FALSE(fs::exists(out + "/x.safetensors"));
}

TEST(LogitsCommand, WritesLogitsMatchingReference) {
  const auto dir = fixture_path("models/kjv-teacher-7m");
  const auto out = scratch_dir("cli-logits") + "/logits.safetensors";
  const auto result =
      run_cli("logits --model " + dir + " --input " + dir + "/reference_logits.safetensors --output " + out);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto written = qkd::io::SafetensorsFile::open(out);
  const auto reference = qkd::io::SafetensorsFile::open(dir + "/reference_logits.safetensors");
  const auto a = written.tensor("logits_0"), b = reference.tensor("logits_0");
  EXPECT_EQ(a.scalar_type(), torch::kFloat32);
  EXPECT_LT((a - b).abs().max().item<double>(), 1e-4);
}

}  // namespace
