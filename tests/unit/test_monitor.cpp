// Monitor, instability detector and freeze policies, including an injected v_proj spike that must
// trigger `auto` freeze of exactly the configured scope.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/io/safetensors.h"
#include "qkd/loss/kd_loss.h"
#include "qkd/monitor/freeze_policy.h"
#include "qkd/monitor/instability_detector.h"
#include "qkd/quant/student.h"
#include "qkd/train/trainer.h"
#include "test_support.h"

namespace {

using nlohmann::json;
using qkd::monitor::InstabilityEvent;
using qkd::test::read_jsonl;
using qkd::test::repo_path;

qkd::monitor::MonitorConfig detector_config() {
  qkd::monitor::MonitorConfig c;
  c.spike_factor = 3.0;
  c.window = 4;
  c.min_history = 3;
  c.loss_factor = 2.0;
  return c;
}

TEST(InstabilityDetector, SpikeIsJudgedAgainstTheRollingMedian) {
  qkd::monitor::InstabilityDetector d(detector_config());
  std::vector<InstabilityEvent> events;
  for (double v : {1.0, 1.2, 0.9}) d.observe(1, "layer0.v_proj.grad_sq", v, events);
  EXPECT_TRUE(events.empty());
  d.observe(4, "layer0.v_proj.grad_sq", 2.9, events);  // < 3 x median 1.0
  EXPECT_TRUE(events.empty());
  // The window now holds 1.0, 1.2, 0.9, 2.9: median 1.1, threshold 3.3.
  d.observe(5, "layer0.v_proj.grad_sq", 3.2, events);
  EXPECT_TRUE(events.empty());
  // Window 1.2, 0.9, 2.9, 3.2: median 2.05, threshold 6.15.
  d.observe(6, "layer0.v_proj.grad_sq", 6.5, events);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, "spike");
  EXPECT_EQ(events[0].step, 6);
  EXPECT_DOUBLE_EQ(events[0].baseline, 2.05);
}

TEST(InstabilityDetector, NonFiniteValuesAndLossRise) {
  qkd::monitor::InstabilityDetector d(detector_config());
  std::vector<InstabilityEvent> events;
  d.observe(1, "layer1.o_proj.grad_sq", std::nan(""), events);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, "nonfinite");
  events.clear();
  for (double loss : {0.05, 0.04, 0.07, 0.09, 0.10, 0.03, 0.2}) d.observe_loss(1, loss, events);
  // 0.09 > 2 x 0.04 starts one excursion (reported once), 0.2 > 2 x 0.03 a second one.
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kind, "loss_rise");
  EXPECT_DOUBLE_EQ(events[0].value, 0.09);
  EXPECT_DOUBLE_EQ(events[1].baseline, 0.03);
}

TEST(InstabilityDetector, StateRoundTrips) {
  qkd::monitor::InstabilityDetector a(detector_config()), b(detector_config());
  std::vector<InstabilityEvent> ea, eb;
  for (double v : {1.0, 1.1, 0.9}) a.observe(1, "s", v, ea);
  b.load_state(a.state());
  a.observe(2, "s", 5.0, ea);
  b.observe(2, "s", 5.0, eb);
  EXPECT_EQ(ea.size(), eb.size());
  EXPECT_EQ(a.state(), b.state());
}

std::vector<std::string> projections(int layers) {
  std::vector<std::string> out;
  for (int i = 0; i < layers; ++i)
    for (auto p : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"})
      out.push_back("model.layers." + std::to_string(i) + "." + p);
  return out;
}

TEST(FreezePolicy, StaticPolicies) {
  qkd::monitor::FreezeConfig ov;
  ov.policy = "ov";
  const auto frozen = qkd::monitor::FreezePolicy(ov, projections(2)).initial();
  EXPECT_EQ(frozen, (std::vector<std::string>{"model.layers.0.self_attn.v_proj", "model.layers.0.self_attn.o_proj",
                                               "model.layers.1.self_attn.v_proj", "model.layers.1.self_attn.o_proj"}));
  qkd::monitor::FreezeConfig qkv;
  qkv.policy = "modules";
  qkv.modules = {"q_proj", "k_proj", "v_proj"};
  EXPECT_EQ(qkd::monitor::FreezePolicy(qkv, projections(3)).initial().size(), 9u);
}

TEST(FreezePolicy, AutoReactsToWatchedSpikesInScope) {
  qkd::monitor::FreezeConfig c;
  c.policy = "auto";
  c.scope = "layer";
  qkd::monitor::FreezePolicy policy(c, projections(3));
  EXPECT_TRUE(policy.react({{4, "spike", "layer1.q_proj.grad_sq", 1, 0.1}}, {}).empty());  // not watched
  EXPECT_EQ(policy.react({{4, "spike", "layer1.v_proj.grad_sq", 1, 0.1}}, {}),
            (std::vector<std::string>{"model.layers.1.self_attn.o_proj", "model.layers.1.self_attn.v_proj"}));
  c.scope = "all";
  EXPECT_EQ(qkd::monitor::FreezePolicy(c, projections(3)).react({{4, "spike", "layer1.o_proj.grad_sq", 1, 0.1}},
                                                                 {"model.layers.0.self_attn.v_proj"}).size(), 5u);
}

TEST(Freeze, FrozenProjectionsGetNoGradientAtAll) {
  auto student = qkd::checkpoint::load_llama(repo_path("assets/models/kjv-teacher-7m"));
  qkd::quant::attach_quantizers(*student, {});
  for (const auto& module : {"model.layers.0.self_attn.o_proj", "model.layers.0.self_attn.v_proj"})
    qkd::monitor::freeze_module(*student, module);
  const auto ids = torch::randint(3, 4000, {2, 16}, torch::kInt64);
  student->forward(ids).logsumexp(-1).mean().backward();
  const auto params = student->named_parameters();
  EXPECT_FALSE(params["model.layers.0.self_attn.o_proj.weight"].grad().defined());
  EXPECT_FALSE(params["model.layers.0.self_attn.v_proj.weight"].grad().defined());
  EXPECT_TRUE(params["model.layers.0.self_attn.q_proj.weight"].grad().defined());
  EXPECT_TRUE(params["model.layers.1.self_attn.v_proj.weight"].grad().defined());
}

class AutoFreeze : public ::testing::TestWithParam<std::string> {};

TEST_P(AutoFreeze, InjectedVProjSpikeFreezesExactlyTheScope) {
  const std::string scope = GetParam();
  const auto dir = qkd::test::scratch_dir("autofreeze-" + scope);
  const json config = {
      {"run_dir", dir},
      {"teacher", {{"path", repo_path("assets/models/kjv-teacher-7m")}}},
      {"data", {{"sources", {{{"path", repo_path("assets/data/kjv/kjv-val.u16")}}}}, {"seq_len", 16}}},
      {"optim", {{"lr", 1e-4}, {"schedule", "constant"}}},
      {"train", {{"steps", 8}, {"micro_batch", 2}, {"threads", 1}}},
      {"freeze", {{"policy", "auto"}, {"scope", scope}}},
      {"monitor", {{"interval", 1}, {"spike_factor", 1000.0}, {"window", 4}, {"min_history", 2}}},
      {"checkpoint", {{"interval", 1}, {"keep_last", 20}, {"resume", "never"}}},
      {"export", {{"hf", false}}}};
  qkd::train::TrainHooks hooks;
  hooks.before_step = [](int64_t step, qkd::monitor::SignalMonitor& monitor) {
    if (step == 5) monitor.inject_for_test("layer2.v_proj.grad_sq", 1e6);
  };
  qkd::train::run_training(qkd::train::parse_run_config(config), hooks);

  std::vector<std::string> frozen;
  int64_t freeze_step = 0;
  for (const auto& e : read_jsonl(dir + "/events.jsonl"))
    if (e.at("kind") == "freeze") {
      frozen = e.at("modules").get<std::vector<std::string>>();
      freeze_step = e.at("step").get<int64_t>();
    }
  ASSERT_EQ(freeze_step, 5);
  if (scope == "layer") {
    EXPECT_EQ(frozen, (std::vector<std::string>{"model.layers.2.self_attn.o_proj", "model.layers.2.self_attn.v_proj"}));
  } else {
    EXPECT_EQ(frozen.size(), 12u);  // o and v of all 6 layers
  }
  const auto at_freeze = qkd::io::read_safetensors(dir + "/checkpoints/step-00000005/student.safetensors");
  const auto at_end = qkd::io::read_safetensors(dir + "/checkpoints/step-00000008/student.safetensors");
  std::map<std::string, torch::Tensor> end(at_end.begin(), at_end.end());
  int unchanged = 0, moved = 0;
  for (const auto& [name, before] : at_freeze) {
    if (name.find("_quantizer.") != std::string::npos) continue;
    const bool is_frozen = std::any_of(frozen.begin(), frozen.end(), [&](const std::string& m) { return name.rfind(m + ".", 0) == 0; });
    const bool same = torch::equal(before, end.at(name));
    if (is_frozen) {
      EXPECT_TRUE(same) << name << " moved after being frozen";
      ++unchanged;
    } else if (name.find("self_attn") != std::string::npos || name.find("mlp") != std::string::npos) {
      EXPECT_FALSE(same) << name << " should still train";
      ++moved;
    }
  }
  EXPECT_EQ(unchanged, static_cast<int>(frozen.size()));
  EXPECT_GT(moved, 0);
}

INSTANTIATE_TEST_SUITE_P(Scopes, AutoFreeze, ::testing::Values("layer", "all"));

}  // namespace
