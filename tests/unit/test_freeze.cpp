// The freeze area: policy rules, rollback weights, release schedule, and the controller that applies
// every freeze and release to the student and the optimizer through one path and saves one state.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/common/error.h"
#include "qkd/freeze/freeze_controller.h"
#include "qkd/freeze/signal_analysis.h"
#include "qkd/quant/student.h"
#include "test_support.h"

namespace {

using qkd::freeze::ChangeKind;
using qkd::freeze::FreezeConfig;
using qkd::freeze::FreezeController;
using qkd::freeze::FreezeMode;
using qkd::freeze::FreezePolicy;
using qkd::freeze::FreezeScope;
using qkd::monitor::EventKind;
using qkd::test::repo_path;

qkd::monitor::SeriesKey grad(int64_t layer, const std::string& projection) {
  return qkd::monitor::SeriesKey::gradient(layer, projection);
}

std::vector<std::string> projections(int layers) {
  std::vector<std::string> out;
  for (int i = 0; i < layers; ++i)
    for (auto p : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                   "mlp.up_proj", "mlp.down_proj"})
      out.push_back("model.layers." + std::to_string(i) + "." + p);
  return out;
}

TEST(FreezePolicy, StaticPolicies) {
  FreezeConfig ov;
  ov.policy = FreezeMode::ov;
  const auto frozen = FreezePolicy(ov, projections(2)).initial();
  EXPECT_EQ(frozen, (std::vector<std::string>{"model.layers.0.self_attn.v_proj", "model.layers.0.self_attn.o_proj",
                                              "model.layers.1.self_attn.v_proj", "model.layers.1.self_attn.o_proj"}));
  FreezeConfig qkv;
  qkv.policy = FreezeMode::modules;
  qkv.modules = {"q_proj", "k_proj", "v_proj"};
  EXPECT_EQ(FreezePolicy(qkv, projections(3)).initial().size(), 9u);
}

TEST(FreezePolicy, AutoReactsToWatchedSpikesInScope) {
  FreezeConfig c;
  c.policy = FreezeMode::automatic;
  c.scope = FreezeScope::layer;
  FreezePolicy policy(c, projections(3));
  EXPECT_TRUE(policy.react({{4, EventKind::spike, grad(1, "q_proj"), 1, 0.1}}, {}).empty());  // not watched
  EXPECT_EQ(policy.react({{4, EventKind::spike, grad(1, "v_proj"), 1, 0.1}}, {}),
            (std::vector<std::string>{"model.layers.1.self_attn.o_proj", "model.layers.1.self_attn.v_proj"}));
  c.scope = FreezeScope::all;
  EXPECT_EQ(FreezePolicy(c, projections(3))
                .react({{4, EventKind::spike, grad(1, "o_proj"), 1, 0.1}}, {"model.layers.0.self_attn.v_proj"})
                .size(),
            5u);
}

TEST(FreezePolicy, RollbackCandidatesAreTheWatchedModulesStillTraining) {
  FreezeConfig c;
  c.policy = FreezeMode::automatic;
  FreezePolicy policy(c, projections(2));
  EXPECT_EQ(policy.rollback_candidates({"model.layers.0.self_attn.v_proj"}),
            (std::vector<std::string>{"model.layers.0.self_attn.o_proj", "model.layers.1.self_attn.v_proj",
                                      "model.layers.1.self_attn.o_proj"}));
  c.rollback = false;
  EXPECT_TRUE(FreezePolicy(c, projections(2)).rollback_candidates({}).empty());
}

TEST(ReleaseSchedule, ReleasesOnceTheLearningRateHasDecayed) {
  const std::vector<std::string> ov0 = {"model.layers.0.self_attn.o_proj", "model.layers.0.self_attn.v_proj"};
  qkd::freeze::ReleaseSchedule schedule(0.25);
  schedule.note_freeze(ov0, 1e-3);
  EXPECT_TRUE(schedule.take_due(5e-4).empty());
  qkd::freeze::ReleaseSchedule resumed(0.25);
  resumed.load_state(schedule.state());
  EXPECT_EQ(resumed.take_due(2.5e-4), ov0);
  EXPECT_TRUE(resumed.take_due(1e-5).empty());  // handed back once
  qkd::freeze::ReleaseSchedule keeps(0.0);      // 0: auto freezes are for good
  keeps.note_freeze(ov0, 1e-3);
  EXPECT_TRUE(keeps.take_due(0.0).empty());
}

TEST(StableWeights, RestoresOnlyCapturedModulesAndRoundTrips) {
  auto model = qkd::checkpoint::load_llama(qkd::test::shipped_teacher());
  const std::string v0 = "model.layers.0.self_attn.v_proj";
  auto params = model->named_parameters();
  const auto original = params[v0 + ".weight"].detach().clone();
  qkd::freeze::StableWeights stable;
  stable.capture(*model, {v0});
  {
    torch::NoGradGuard no_grad;
    params[v0 + ".weight"].add_(1.0);
  }
  qkd::freeze::StableWeights reloaded;
  reloaded.load_state(stable.state(), *model, "test");
  EXPECT_EQ(reloaded.restore(*model, {v0, "model.layers.1.self_attn.v_proj"}), std::vector<std::string>{v0});
  EXPECT_TRUE(torch::equal(params[v0 + ".weight"], original));
  EXPECT_THROW(reloaded.load_state({{"no-bar", original}}, *model, "test"), qkd::Error);
}

// A student with quantizers and an optimizer over every parameter, as a run builds them.
struct Student {
  qkd::model::LlamaForCausalLM model = qkd::checkpoint::load_llama(qkd::test::shipped_teacher());
  std::vector<std::string> quantized = qkd::quant::attach_quantizers(*model, {});
  qkd::optim::AdamW optimizer{qkd::optim::AdamWOptions{}};
  Student() {
    for (auto& item : model->named_parameters()) optimizer.add_parameter(item.key(), item.value(), true);
  }
  FreezeController controller(const FreezeConfig& config) {
    return FreezeController(config, quantized, model, optimizer, [](const std::string&) { return true; });
  }
};

TEST(FreezeController, FrozenProjectionsGetNoGradientAndNoOptimizerState) {
  Student s;
  FreezeConfig ov;
  ov.policy = FreezeMode::ov;
  auto controller = s.controller(ov);
  const auto change = controller.freeze_at_start();
  ASSERT_TRUE(change.has_value());
  EXPECT_EQ(change->kind, ChangeKind::freeze);
  EXPECT_EQ(change->modules.size(), 12u);  // o and v of 6 layers
  EXPECT_EQ(change->trainable_after, qkd::freeze::trainable_parameter_count(*s.model));
  EXPECT_LT(change->trainable_after, change->trainable_before);
  EXPECT_FALSE(s.optimizer.has_parameter("model.layers.0.self_attn.o_proj.weight"));
  EXPECT_TRUE(s.optimizer.has_parameter("model.layers.0.self_attn.q_proj.weight"));
  const auto ids = torch::randint(3, 4000, {2, 16}, torch::kInt64);
  s.model->forward(ids).logsumexp(-1).mean().backward();
  const auto params = s.model->named_parameters();
  EXPECT_FALSE(params["model.layers.0.self_attn.o_proj.weight"].grad().defined());
  EXPECT_FALSE(params["model.layers.0.self_attn.v_proj.weight"].grad().defined());
  EXPECT_TRUE(params["model.layers.0.self_attn.q_proj.weight"].grad().defined());
  EXPECT_TRUE(params["model.layers.1.mlp.up_proj.weight"].grad().defined());
}

// auto freezes on a watched spike, rolls back to the calm weights, schedules the release; its one
// checkpoint state restores the same frozen set, optimizer parameters, rollback weights and schedule.
TEST(FreezeController, AutoFreezeRollbackReleaseAndStateRoundTrip) {
  FreezeConfig config;
  config.policy = FreezeMode::automatic;
  config.scope = FreezeScope::layer;
  config.release_lr_factor = 0.5;
  Student a;
  auto controller = a.controller(config);
  EXPECT_FALSE(controller.freeze_at_start().has_value());
  const std::string v2 = "model.layers.2.self_attn.v_proj";
  auto params = a.model->named_parameters();
  const auto calm = params[v2 + ".weight"].detach().clone();
  controller.keep_calm_weights();
  {
    torch::NoGradGuard no_grad;
    params[v2 + ".weight"].add_(0.5);  // the update that destabilized it
  }
  EXPECT_FALSE(controller.react({{3, EventKind::spike, grad(2, "q_proj"), 1, 0.1}}, 3, 1e-3).change);
  const auto reaction = controller.react({{3, EventKind::spike, grad(2, "v_proj"), 1, 0.1}}, 3, 1e-3);
  ASSERT_TRUE(reaction.change.has_value());
  EXPECT_TRUE(reaction.skip_update);
  EXPECT_EQ(reaction.rolled_back, (std::vector<std::string>{"model.layers.2.self_attn.o_proj", v2}));
  EXPECT_TRUE(torch::equal(params[v2 + ".weight"], calm));
  EXPECT_FALSE(params[v2 + ".weight"].requires_grad());
  EXPECT_FALSE(a.optimizer.has_parameter(v2 + ".weight"));

  Student b;
  auto resumed = b.controller(config);
  resumed.restore(controller.state(), controller.rollback_weights(), "test");
  EXPECT_EQ(resumed.frozen(), controller.frozen());
  EXPECT_EQ(resumed.state(), controller.state());
  EXPECT_EQ(b.optimizer.parameter_names(), a.optimizer.parameter_names());
  EXPECT_FALSE(b.model->named_parameters()[v2 + ".weight"].requires_grad());

  EXPECT_FALSE(resumed.release_due(4, 6e-4).has_value());
  const auto release = resumed.release_due(5, 5e-4);
  ASSERT_TRUE(release.has_value());
  EXPECT_EQ(release->kind, ChangeKind::release);
  EXPECT_EQ(release->step, 5);
  EXPECT_TRUE(resumed.frozen().empty());
  EXPECT_TRUE(b.optimizer.has_parameter(v2 + ".weight"));
  EXPECT_TRUE(b.model->named_parameters()[v2 + ".weight"].requires_grad());
}

// A probe of `layers` layers: every projection's squared gradient norm is 1 (x `jitter`), except the
// types in `scaled` (type -> factor); weights of norm 2 with 100 elements.
qkd::monitor::ProbeSample probe(int layers, const std::map<std::string, double>& scaled, double jitter = 1.0) {
  qkd::monitor::ProbeSample s;
  for (const auto& module : projections(layers)) {
    const auto type = module.substr(module.rfind('.') + 1);
    const int64_t layer = std::stoll(module.substr(13, module.find('.', 13) - 13));
    const auto it = scaled.find(type);
    s.projections.push_back({module, layer, type, (it == scaled.end() ? 1.0 : it->second) * jitter, 2.0, 100});
  }
  for (int l = 0; l < layers; ++l) s.attn_rms[l] = 0.5, s.mlp_rms[l] = 1.5;
  return s;
}

std::vector<std::string> types_of(const qkd::freeze::SignalAnalysis& a) { return a.frozen_types(); }

// The rule: a type whose summed squared gradient norm exceeds factor x the median over the types on
// more than half of the micro-batches starts frozen, in every layer.
TEST(SignalAnalysis, FreezesTypesAboveFactorTimesTheMedianOnMostMicroBatches) {
  const auto modules = projections(2);
  // v 8x and o 3x the median on all three micro-batches; down 3x on one of them only.
  const std::vector<qkd::monitor::ProbeSample> samples = {
      probe(2, {{"v_proj", 8}, {"o_proj", 3}}, 1.0), probe(2, {{"v_proj", 8}, {"o_proj", 3}, {"down_proj", 3}}, 2.0),
      probe(2, {{"v_proj", 8}, {"o_proj", 3}}, 0.5)};
  const auto a = qkd::freeze::analyse_signal_propagation(samples, FreezeScope::all, 2.0, 1e-3, modules);
  EXPECT_EQ(types_of(a), (std::vector<std::string>{"o_proj", "v_proj"}));
  EXPECT_EQ(a.modules,
            (std::vector<std::string>{"model.layers.0.self_attn.v_proj", "model.layers.0.self_attn.o_proj",
                                      "model.layers.1.self_attn.v_proj", "model.layers.1.self_attn.o_proj"}));
  EXPECT_EQ(a.batches_used, 3);
  for (const auto& g : a.groups) {
    EXPECT_EQ(g.layer, -1);
    if (g.type == "v_proj") {
      EXPECT_DOUBLE_EQ(g.median_ratio, 8.0);  // the loss scale (jitter) cancels in the ratio
      EXPECT_EQ(g.outlier_batches, 3);
      EXPECT_DOUBLE_EQ(g.grad_sq, 16.0);  // median over batches of 2 layers x 8
    }
    if (g.type == "down_proj") {
      EXPECT_EQ(g.outlier_batches, 1);  // once is not enough
      EXPECT_FALSE(g.frozen);
    }
    // lr x sqrt(n) / ||W|| over the type's two layers: 1e-3 x sqrt(200) / sqrt(8) = 5e-3.
    EXPECT_NEAR(g.first_update_ratio, 5e-3, 1e-12);
  }
  EXPECT_DOUBLE_EQ(a.activations.at(1).mlp_rms, 1.5);
  // A higher factor keeps only v.
  EXPECT_EQ(types_of(qkd::freeze::analyse_signal_propagation(samples, FreezeScope::all, 4.0, 1e-3, modules)),
            std::vector<std::string>{"v_proj"});
  const auto record = a.to_json();
  EXPECT_EQ(record.at("kind"), "analysis");
  EXPECT_EQ(record.at("step"), 0);
  EXPECT_EQ(record.at("modules").size(), 4u);
  EXPECT_NE(record.at("reason").get<std::string>().find("v_proj 8x"), std::string::npos) << record.dump();
}

TEST(SignalAnalysis, LayerScopeNonFiniteBatchesAndCandidates) {
  // Layer 1's o_proj is an outlier within its layer; layer 0's is not.
  auto sample = probe(2, {{"v_proj", 5}});
  for (auto& p : sample.projections)
    if (p.module == "model.layers.1.self_attn.o_proj") p.grad_sq = 6.0;
  auto broken = sample;
  broken.projections[0].grad_sq = std::nan("");
  const auto a =
      qkd::freeze::analyse_signal_propagation({sample, broken}, FreezeScope::layer, 2.0, 1e-3, projections(2));
  EXPECT_EQ(a.batches_used, 1);
  EXPECT_EQ(a.batches_skipped, 1);
  EXPECT_EQ(a.modules, (std::vector<std::string>{"model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.v_proj",
                                                 "model.layers.1.self_attn.o_proj"}));
  // Projections that are not candidates (not quantized) are neither analysed nor frozen.
  std::vector<std::string> no_v;
  for (const auto& m : projections(2))
    if (m.find("v_proj") == std::string::npos) no_v.push_back(m);
  const auto b =
      qkd::freeze::analyse_signal_propagation({probe(2, {{"v_proj", 5}})}, FreezeScope::all, 2.0, 1e-3, no_v);
  EXPECT_TRUE(b.modules.empty());
  EXPECT_EQ(b.groups.size(), 6u);
  EXPECT_NE(b.summary().find("no outlier"), std::string::npos);
}

TEST(ReleaseSchedule, WaitsForTheCalmStepsAsWellAsTheLearningRate) {
  const std::vector<std::string> v0 = {"model.layers.0.self_attn.v_proj"};
  qkd::freeze::ReleaseSchedule schedule(1.0, 5);
  schedule.note_freeze(v0, 1e-3);
  EXPECT_TRUE(schedule.take_due(1e-3, 4).empty());  // the rate allows it, the calm does not yet
  EXPECT_EQ(schedule.take_due(1e-3, 5), v0);
  qkd::freeze::ReleaseSchedule both(0.5, 5);
  both.note_freeze(v0, 1e-3);
  EXPECT_TRUE(both.take_due(6e-4, 50).empty());  // calm enough, the rate not yet
  EXPECT_EQ(both.take_due(5e-4, 5), v0);
}

// The analysis freezes its outliers through the controller (no gradient, no optimizer state), adds
// their types to what auto watches, and a release waits for calm steps, which an instability restarts.
TEST(FreezeController, AnalysisFreezesOutliersWatchesThemAndReleasesAfterCalmSteps) {
  FreezeConfig config;
  config.policy = FreezeMode::automatic;
  config.auto_watch = {"o_proj"};
  config.release_lr_factor = 1.0;
  config.release_calm_steps = 3;
  Student a;
  auto controller = a.controller(config);
  const auto outcome = controller.start_from_analysis({probe(6, {{"v_proj", 8}, {"down_proj", 4}})}, 1e-3);
  ASSERT_TRUE(outcome.change.has_value());
  EXPECT_EQ(outcome.change->step, 0);
  EXPECT_EQ(outcome.change->modules.size(), 12u);  // v and down of 6 layers
  EXPECT_NE(outcome.change->reason.find("analysis"), std::string::npos);
  EXPECT_FALSE(a.optimizer.has_parameter("model.layers.3.mlp.down_proj.weight"));
  EXPECT_FALSE(a.model->named_parameters()["model.layers.3.self_attn.v_proj.weight"].requires_grad());
  EXPECT_EQ(controller.watched_every_step(), (std::vector<std::string>{"o_proj", "down_proj", "v_proj"}));

  const auto calm = std::vector<qkd::monitor::InstabilityEvent>{};
  controller.react(calm, 1, 1e-3);
  controller.react(calm, 2, 1e-3);
  controller.react({{3, EventKind::spike, grad(0, "q_proj"), 1, 0.1}}, 3, 1e-3);  // not watched, still not calm
  controller.react(calm, 4, 1e-3);
  controller.react(calm, 5, 1e-3);
  EXPECT_FALSE(controller.release_due(6, 1e-3).has_value());  // 2 calm steps since the spike

  Student b;
  auto resumed = b.controller(config);
  resumed.restore(controller.state(), controller.rollback_weights(), "test");
  EXPECT_EQ(resumed.state(), controller.state());
  EXPECT_EQ(resumed.watched_every_step(), controller.watched_every_step());
  resumed.react(calm, 6, 1e-3);
  const auto release = resumed.release_due(7, 1e-3);
  ASSERT_TRUE(release.has_value());
  auto released = release->modules, frozen = outcome.change->modules;
  std::sort(released.begin(), released.end());
  std::sort(frozen.begin(), frozen.end());
  EXPECT_EQ(released, frozen);
  EXPECT_TRUE(b.optimizer.has_parameter("model.layers.3.mlp.down_proj.weight"));
  // Released, the analysed types stay watched: a spike of a v_proj freezes it again.
  const auto again = resumed.react({{8, EventKind::spike, grad(1, "v_proj"), 1, 0.1}}, 8, 1e-3);
  ASSERT_TRUE(again.change.has_value());
  EXPECT_EQ(again.change->modules.size(), 18u);  // scope all: o, v and down of every layer
}

TEST(FreezeController, RestoreRefusesAStateWithoutAFrozenList) {
  Student s;
  auto controller = s.controller({});
  EXPECT_THROW(controller.restore(nlohmann::json{{"release_lr", nullptr}}, {}, "ckpt/state.json"), qkd::Error);
}

}  // namespace
