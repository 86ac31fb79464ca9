// Run-config validation: every mistake names its JSON path; overrides; defaults filled in.
#include <gtest/gtest.h>

#include <filesystem>

#include "qkd/common/error.h"
#include "qkd/train/run_config.h"
#include "qkd/train/training_session.h"
#include "test_support.h"

namespace {

using nlohmann::json;

json minimal() {
  return {{"run_dir", qkd::test::scratch_dir("cfg") + "/run"},
          {"teacher", {{"path", qkd::test::shipped_teacher()}}},
          {"data", {{"sources", {{{"path", qkd::test::kjv_val_tokens()}}}}, {"seq_len", 32}}}};
}

std::string error_of(const json& config) {
  try {
    qkd::train::parse_run_config(config);
  } catch (const qkd::Error& e) {
    return e.what();
  }
  return "";
}

TEST(RunConfig, MinimalConfigGetsDefaults) {
  const auto c = qkd::train::parse_run_config(minimal());
  EXPECT_EQ(c.quant().bits, 4);
  EXPECT_EQ(c.student().init.kind, qkd::train::StudentInit::Kind::teacher);
  EXPECT_EQ(c.freeze().policy, qkd::freeze::FreezeMode::none);
  EXPECT_EQ(c.resolved().at("optim").at("lr"), 1e-4);
  EXPECT_EQ(c.resolved().at("data").at("seq_len"), 32);
}

// Each section lists its fields once for reading and writing: the resolved config (every default
// filled in) reads back to itself, whatever was changed from the defaults.
TEST(RunConfig, ResolvedConfigReadsBackToItself) {
  auto j = minimal();
  j["student"] = {{"dtype", "bfloat16"}};
  j["kd"] = {{"divergence", "jsd"}, {"ce_weight", 0.5}};
  j["optim"] = {{"schedule", "constant"}, {"moment_dtype", "bfloat16"}, {"grad_clip", 0.5}};
  j["train"] = {{"precision", "bf16"}, {"activation_checkpointing", true}, {"seed", 7}};
  j["freeze"] = {{"policy", "auto"}, {"scope", "layer"}};
  j["monitor"] = {{"interval", 3}};
  j["export"] = {{"formats", {"gguf", "packed"}}, {"dtype", "bfloat16"}, {"gguf_type", "q8_0"}};
  const auto c = qkd::train::parse_run_config(j);
  EXPECT_EQ(c.student().dtype, torch::kBFloat16);
  EXPECT_EQ(c.optim().moment_dtype, torch::kBFloat16);
  EXPECT_TRUE(c.compute().activation_checkpointing);
  EXPECT_EQ(c.resolved().at("export").at("formats"), json({"gguf", "packed"}));
  EXPECT_EQ(qkd::train::parse_run_config(c.resolved()).resolved(), c.resolved());
  const auto defaults = qkd::train::parse_run_config(minimal());
  EXPECT_EQ(qkd::train::parse_run_config(defaults.resolved()).resolved(), defaults.resolved());
}

TEST(RunConfig, StudentInitIsTheTeacherOrACheckpointDirectory) {
  auto j = minimal();
  j["student"] = {{"init", qkd::test::shipped_teacher()}};
  const auto c = qkd::train::parse_run_config(j);
  EXPECT_EQ(c.student().init.kind, qkd::train::StudentInit::Kind::checkpoint);
  EXPECT_EQ(c.resolved().at("student").at("init"), qkd::test::shipped_teacher());
  j["student"] = {{"init", "/nonexistent/student"}};
  EXPECT_EQ(error_of(j),
            "student.init: expected \"teacher\", \"gptq\" or a student checkpoint directory, got "
            "\"/nonexistent/student\"");
  j["student"] = {{"init", 3}};
  EXPECT_EQ(error_of(j), "student.init: expected \"teacher\", \"gptq\" or a checkpoint directory, got 3");
}

// init gptq: needs static scales (a dynamic quantizer would replace GPTQ's); its settings read back,
// warn when another init ignores them, and only then belong to the identity a checkpoint resumes against.
TEST(RunConfig, StudentInitGptqNeedsStaticScalesAndOwnsItsSettings) {
  auto j = minimal();
  j["student"] = {{"init", "gptq"},
                  {"gptq_calib_batches", 16},
                  {"gptq_damp", 0.1},
                  {"gptq_act_order", true},
                  {"gptq_latent", "compensated"}};
  EXPECT_EQ(error_of(j),
            "student.init: \"gptq\" needs quant.scale_policy \"static\" (the quantizer keeps GPTQ's scales)");
  j["quant"] = {{"scale_policy", "static"}};
  const auto c = qkd::train::parse_run_config(j);
  EXPECT_EQ(c.student().init.kind, qkd::train::StudentInit::Kind::gptq);
  EXPECT_EQ(c.student().gptq_calib_batches, 16);
  EXPECT_EQ(c.student().gptq_damp, 0.1);
  EXPECT_TRUE(c.student().gptq_act_order);
  EXPECT_EQ(c.student().gptq_latent, qkd::ptq::GptqLatent::compensated);
  EXPECT_EQ(c.resolved().at("student").at("init"), "gptq");
  EXPECT_EQ(qkd::train::parse_run_config(c.resolved()).resolved(), c.resolved());
  EXPECT_EQ(qkd::train::model_identity(c).at("student").at("gptq_damp"), 0.1);
  EXPECT_TRUE(c.unread_settings().empty());
  j["student"]["init"] = "teacher";
  const auto teacher = qkd::train::parse_run_config(j);
  EXPECT_FALSE(qkd::train::model_identity(teacher).at("student").contains("gptq_damp"));
  EXPECT_EQ(teacher.unread_settings(),
            (std::vector<std::string>{"student.gptq_calib_batches: only read with student.init gptq",
                                      "student.gptq_damp: only read with student.init gptq",
                                      "student.gptq_act_order: only read with student.init gptq",
                                      "student.gptq_latent: only read with student.init gptq"}));
  j["student"] = {{"gptq_damp", -1}};
  EXPECT_NE(error_of(j).find("student.gptq_damp"), std::string::npos) << error_of(j);
  j["student"] = {{"gptq_latent", "rounded"}};
  EXPECT_EQ(error_of(j), "student.gptq_latent: expected one of quantized, compensated, got \"rounded\"");
}

// optim.master_weights: bf16_compensated adds to bf16 weights, so it needs a bf16 student; an fp32
// student trains without a master, so the key is reported unread there.
TEST(RunConfig, MasterWeightsNeedsAReducedPrecisionStudent) {
  auto j = minimal();
  j["optim"] = {{"master_weights", "bf16_compensated"}, {"moment_dtype", "int8"}};
  EXPECT_EQ(error_of(j), "optim.master_weights: \"bf16_compensated\" needs student.dtype bfloat16, got float32");
  j["student"] = {{"dtype", "bfloat16"}};
  const auto c = qkd::train::parse_run_config(j);
  EXPECT_EQ(c.optim().master_weights, qkd::optim::MasterWeights::bf16_compensated);
  EXPECT_EQ(c.optim().moment_dtype, torch::kChar);
  EXPECT_TRUE(c.unread_settings().empty());
  j = minimal();
  j["optim"] = {{"master_weights", "none"}};
  const auto fp32 = qkd::train::parse_run_config(j);
  ASSERT_EQ(fp32.unread_settings().size(), 1u);
  EXPECT_NE(fp32.unread_settings()[0].find("optim.master_weights"), std::string::npos);
  j["optim"] = {{"master_weights", "fp64"}};
  EXPECT_EQ(error_of(j), "optim.master_weights: expected one of fp32, bf16_compensated, none, got \"fp64\"");
}

TEST(RunConfig, RetiredAndEnumKeysNameTheirPath) {
  auto j = minimal();
  j["export"] = {{"hf", true}};
  EXPECT_NE(error_of(j).find("export.hf: replaced by export.formats"), std::string::npos) << error_of(j);
  j = minimal();
  j["optim"] = {{"moment_dtype", "float16"}};
  EXPECT_EQ(error_of(j), "optim.moment_dtype: expected one of float32, bfloat16, int8, got \"float16\"");
  j = minimal();
  j["export"] = {{"gguf_type", "q5_k"}};
  EXPECT_EQ(error_of(j), "export.gguf_type: expected one of auto, q4_0, q8_0, mxfp4, nvfp4, f16, f32, got \"q5_k\"");
}

TEST(RunConfig, WrongTypeNamesThePath) {
  auto j = minimal();
  j["optim"] = {{"lr", "fast"}};
  EXPECT_EQ(error_of(j), "optim.lr: expected a positive number, got \"fast\"");
}

TEST(RunConfig, UnknownKeysAreRejectedAtEveryLevel) {
  auto j = minimal();
  j["optim"] = {{"learning_rate", 1e-3}};
  EXPECT_EQ(error_of(j), "optim.learning_rate: unknown key");
  j = minimal();
  j["trian"] = json::object();
  EXPECT_EQ(error_of(j), "trian: unknown key");
  j = minimal();
  j["quant"] = {{"bitz", 4}};
  EXPECT_NE(error_of(j).find("quant.bitz"), std::string::npos) << error_of(j);
}

TEST(RunConfig, OutOfRangeValues) {
  auto j = minimal();
  j["train"] = {{"steps", 0}};
  EXPECT_NE(error_of(j).find("train.steps"), std::string::npos);
  j = minimal();
  j["quant"] = {{"bits", 9}};
  EXPECT_NE(error_of(j).find("quant.bits"), std::string::npos);
  j = minimal();
  j["freeze"] = {{"policy", "sometimes"}};
  EXPECT_EQ(error_of(j), "freeze.policy: expected one of none, ov, auto, modules, got \"sometimes\"");
  j = minimal();
  j["freeze"] = {{"release_lr_factor", 1.5}};
  EXPECT_NE(error_of(j).find("freeze.release_lr_factor"), std::string::npos) << error_of(j);
}

TEST(RunConfig, AutoFreezeNeedsTheMonitor) {
  auto j = minimal();
  j["freeze"] = {{"policy", "auto"}};
  j["monitor"] = {{"enabled", false}};
  EXPECT_EQ(error_of(j), "freeze.policy: \"auto\" needs the monitor (monitor.enabled true)");
  j["monitor"] = {{"interval", 1}};
  const auto c = qkd::train::parse_run_config(j);
  EXPECT_TRUE(c.freeze().rollback);
  EXPECT_DOUBLE_EQ(c.freeze().release_lr_factor, 0.25);
}

// Settings that would silently do nothing: rejected with their key, or reported as unread.
TEST(RunConfig, AutoWatchEntriesMustBeProjectionTypes) {
  auto j = minimal();
  j["freeze"] = {{"policy", "auto"}, {"auto_watch", {"self_attn.o_proj", "self_attn.v_proj"}}};
  EXPECT_EQ(error_of(j),
            "freeze.auto_watch[0]: \"self_attn.o_proj\" is not a projection type (expected one of q_proj, "
            "k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)");
  j["freeze"]["auto_watch"] = json::array();
  EXPECT_EQ(error_of(j), "freeze.auto_watch: empty: auto would watch nothing and never freeze");
  j["freeze"]["auto_watch"] = {"v_proj"};
  EXPECT_EQ(qkd::train::parse_run_config(j).freeze().auto_watch, std::vector<std::string>{"v_proj"});
}

TEST(RunConfig, SettingsAnotherPolicyReadsAreReportedAsUnread) {
  auto j = minimal();
  j["freeze"] = {{"policy", "ov"}, {"scope", "layer"}, {"modules", {"q_proj"}}};
  const auto c = qkd::train::parse_run_config(j);
  EXPECT_EQ(c.unread_settings(), (std::vector<std::string>{"freeze.modules: only read by policy modules; policy is ov",
                                                           "freeze.scope: only read by policy auto; policy is ov"}));
  j["freeze"] = {{"policy", "auto"}, {"scope", "layer"}};
  EXPECT_TRUE(qkd::train::parse_run_config(j).unread_settings().empty());
}

TEST(RunConfig, EvalSettingsWithoutEvalFilesAreReportedAsUnread) {
  auto j = minimal();
  j["eval"] = {{"at_start", true}};
  j["train"] = {{"eval_interval", 5}};
  EXPECT_EQ(qkd::train::parse_run_config(j).unread_settings(),
            (std::vector<std::string>{"train.eval_interval: no eval.ppl or eval.mc file to evaluate",
                                      "eval.at_start: no eval.ppl or eval.mc file to evaluate"}));
}

// Caught when the session opens, where the quantized modules are known, before any step.
TEST(RunConfig, FreezePoliciesThatReachNoQuantizedModuleAreRejected) {
  auto j = minimal();
  j["quant"] = {{"modules", {"q_proj", "k_proj"}}};
  j["freeze"] = {{"policy", "ov"}};
  const auto open = [](const json& config) {
    try {
      qkd::train::open_session(qkd::train::parse_run_config(config));
    } catch (const qkd::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  j["run_dir"] = qkd::test::scratch_dir("ov-nothing") + "/run";
  EXPECT_EQ(open(j),
            "freeze.policy: \"ov\" would freeze nothing: no o_proj or v_proj is quantized (see quant.modules)");
  j["freeze"] = {{"policy", "auto"}};
  EXPECT_EQ(open(j),
            "freeze.auto_watch: no watched projection is quantized (see quant.modules): auto would never freeze");
  EXPECT_FALSE(std::filesystem::exists(j["run_dir"].get<std::string>()));
}

TEST(RunConfig, MissingTeacherPath) {
  auto j = minimal();
  j["teacher"]["path"] = "/nonexistent/teacher";
  EXPECT_EQ(error_of(j), "teacher.path: checkpoint directory not found: /nonexistent/teacher");
  j.erase("teacher");
  EXPECT_NE(error_of(j).find("teacher"), std::string::npos);
}

TEST(RunConfig, OverridesSetNestedValuesAsJson) {
  auto j = minimal();
  qkd::train::apply_override(j, "optim.lr=0.001");
  qkd::train::apply_override(j, "freeze.policy=ov");
  qkd::train::apply_override(j, "quant.modules=[\"v_proj\"]");
  const auto c = qkd::train::parse_run_config(j);
  EXPECT_DOUBLE_EQ(c.optim().lr, 0.001);
  EXPECT_EQ(c.freeze().policy, qkd::freeze::FreezeMode::ov);
  EXPECT_EQ(c.quant().modules, std::vector<std::string>{"v_proj"});
  EXPECT_THROW(qkd::train::apply_override(j, "novalue"), qkd::Error);
}

// The shipped model paths of llama7b.json do not exist here; with them pointed at the shipped teacher
// and data, every other key of the file must validate (typos in the GPU recipe fail here, not on the
// cluster).
std::vector<std::string> llama7b_local_paths(const std::string& run_dir) {
  return {"run_dir=" + run_dir, "teacher.path=" + qkd::test::shipped_teacher(),
          "data.sources=[{\"path\": \"" + qkd::test::repo_path("assets/data/kjv/kjv-train.u16") + "\"}]",
          "eval.ppl=[\"" + qkd::test::kjv_val_tokens() + "\"]",
          "eval.mc=[\"" + qkd::test::repo_path("assets/data/kjv/kjv-cloze-val.jsonl") + "\"]"};
}

TEST(RunConfig, ShippedConfigsValidate) {
  const auto tiny = qkd::train::load_run_config(qkd::test::repo_path("configs/tiny-kjv.json"));
  EXPECT_EQ(tiny.quant().bits, 4);
  try {
    qkd::train::load_run_config(qkd::test::repo_path("configs/llama7b.json"));
    FAIL() << "expected the missing teacher to be reported";
  } catch (const qkd::Error& e) {
    EXPECT_NE(std::string(e.what()).find("teacher.path"), std::string::npos) << e.what();
  }
  const auto llama = qkd::train::load_run_config(qkd::test::repo_path("configs/llama7b.json"),
                                                 llama7b_local_paths(qkd::test::scratch_dir("llama7b") + "/run"));
  EXPECT_TRUE(llama.unread_settings().empty()) << llama.unread_settings().front();
  EXPECT_EQ(llama.student().dtype, torch::kBFloat16);
  EXPECT_EQ(llama.optim().lr, 1e-6);  // the paper's AIMET recipe
}

}  // namespace
