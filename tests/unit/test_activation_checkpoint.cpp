// Activation checkpointing (the generic function and per decoder layer) and the cached RoPE tables.
#include "qkd/model/activation_checkpoint.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <c10/core/InferenceMode.h>

#include <map>
#include <string>
#include <vector>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/common/torch_compat.h"
#include "qkd/model/llama.h"
#include "qkd/quant/student.h"
#include "test_support.h"

namespace {

using qkd::model::LlamaForCausalLM;
using qkd::quant::Granularity;
using qkd::quant::QuantSpec;
using qkd::test::fixture_path;

bool is_checkpoint_node(const torch::Tensor& t) {
  return t.grad_fn() && t.grad_fn()->name().find("CheckpointFunction") != std::string::npos;
}

// ---- the generic function ----

struct Calls {
  std::vector<bool> recomputing;
  std::vector<qkd::compat::AutocastState> autocast;
};

qkd::model::CheckpointedFunction block(const torch::Tensor& w, Calls& calls) {
  return [w, &calls](const torch::Tensor& x, bool recomputing) {
    calls.recomputing.push_back(recomputing);
    calls.autocast.push_back(qkd::compat::current_autocast_state());
    return torch::tanh(torch::matmul(x, w)) * x + w.sum();
  };
}

TEST(Checkpoint, GradientsEqualThePlainComputationAndTheBlockRunsOnceMoreInBackward) {
  torch::manual_seed(1);
  const auto x0 = torch::randn({3, 4});
  const auto w0 = torch::randn({4, 4});
  auto x = x0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
  Calls plain_calls;
  const auto plain = block(w, plain_calls)(x, false);
  plain.square().sum().backward();

  auto cx = x0.clone().requires_grad_(true), cw = w0.clone().requires_grad_(true);
  Calls calls;
  const auto out = qkd::model::checkpoint(block(cw, calls), cx, {cw});
  EXPECT_TRUE(is_checkpoint_node(out));
  EXPECT_EQ(calls.recomputing, std::vector<bool>{false});
  EXPECT_TRUE(torch::equal(out, plain));
  out.square().sum().backward();
  EXPECT_EQ(calls.recomputing, (std::vector<bool>{false, true}));
  EXPECT_TRUE(torch::equal(cx.grad(), x.grad()));
  EXPECT_TRUE(torch::equal(cw.grad(), w.grad()));
}

TEST(Checkpoint, ParametersAloneMakeTheResultRequireGrad) {
  torch::manual_seed(2);
  const auto x = torch::randn({3, 4});  // e.g. the output of frozen embeddings
  const auto w0 = torch::randn({4, 4});
  auto w = w0.clone().requires_grad_(true);
  Calls plain_calls;
  block(w, plain_calls)(x, false).square().sum().backward();

  auto cw = w0.clone().requires_grad_(true);
  Calls calls;
  const auto out = qkd::model::checkpoint(block(cw, calls), x, {cw});
  ASSERT_TRUE(out.requires_grad());
  out.square().sum().backward();
  EXPECT_EQ(calls.recomputing, (std::vector<bool>{false, true}));
  EXPECT_TRUE(torch::equal(cw.grad(), w.grad()));
  EXPECT_FALSE(x.grad().defined());
}

TEST(Checkpoint, RunsPlainlyWhenNothingRequiresGradOrGradIsOff) {
  const auto x = torch::randn({3, 4});
  const auto w = torch::randn({4, 4});
  Calls calls;
  const auto out = qkd::model::checkpoint(block(w, calls), x, {w});
  EXPECT_FALSE(out.requires_grad());
  EXPECT_EQ(calls.recomputing, std::vector<bool>{false});

  auto trainable = w.clone().requires_grad_(true);
  torch::NoGradGuard no_grad;
  Calls no_grad_calls;
  const auto out2 = qkd::model::checkpoint(block(trainable, no_grad_calls), x, {trainable});
  EXPECT_FALSE(out2.requires_grad());
  EXPECT_EQ(no_grad_calls.recomputing, std::vector<bool>{false});
}

// The trainer's forward runs in an autocast scope, its backward does not: the recompute must see the
// forward's settings. CPU autocast stands in for CUDA's here; the state covers both.
TEST(Checkpoint, RecomputeRunsUnderTheAutocastStateOfTheForward) {
  const auto before = qkd::compat::current_autocast_state();
  ASSERT_FALSE(before.cpu_enabled);
  auto x = torch::randn({3, 4}).requires_grad_(true);
  auto w = torch::randn({4, 4}).requires_grad_(true);
  Calls calls;
  torch::Tensor out;
  {
    qkd::compat::AutocastState on = before;
    on.cpu_enabled = true;
    on.cpu_dtype = torch::kBFloat16;
    qkd::compat::AutocastStateScope autocast(on);
    out = qkd::model::checkpoint(block(w, calls), x, {w});
  }
  EXPECT_FALSE(qkd::compat::current_autocast_state().cpu_enabled);
  out.to(torch::kFloat32).sum().backward();
  ASSERT_EQ(calls.autocast.size(), 2u);
  for (const auto& state : calls.autocast) {
    EXPECT_TRUE(state.cpu_enabled);
    EXPECT_EQ(state.cpu_dtype, torch::kBFloat16);
    EXPECT_EQ(state.cuda_enabled, before.cuda_enabled);
  }
  const auto after = qkd::compat::current_autocast_state();
  EXPECT_FALSE(after.cpu_enabled);
  EXPECT_EQ(after.cpu_dtype, before.cpu_dtype);
  EXPECT_TRUE(w.grad().defined());
}

// ---- per decoder layer, on tiny LLaMA students ----

struct Observation {
  int64_t layer;
  std::string site;
  torch::Tensor value;
};

struct RecordingObserver : qkd::model::ActivationObserver {
  std::vector<Observation> seen;
  void observe(int64_t layer, const char* site, const torch::Tensor& output) override {
    seen.push_back({layer, site, output.detach().clone()});
  }
};

struct Run {
  torch::Tensor loss;
  std::map<std::string, torch::Tensor> grads;  // undefined: no gradient
  std::vector<Observation> observed;
  size_t observed_after_forward = 0;
  std::vector<bool> checkpointed;  // per layer but the last (hidden_states holds the final norm instead)
};

Run train_step(LlamaForCausalLM& model, const torch::Tensor& ids, bool checkpointing) {
  for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();
  model->train();
  model->set_activation_checkpointing(checkpointing);
  RecordingObserver observer;
  model->set_activation_observer(&observer);
  Run run;
  std::vector<torch::Tensor> hidden;
  const auto logits = model->forward(ids, &hidden);
  for (size_t i = 1; i + 1 < hidden.size(); ++i) run.checkpointed.push_back(is_checkpoint_node(hidden[i]));
  hidden.clear();
  const int64_t vocab = logits.size(-1);
  run.loss = torch::nn::functional::cross_entropy(logits.slice(1, 0, -1).reshape({-1, vocab}).to(torch::kFloat32),
                                                  ids.slice(1, 1).reshape({-1}));
  run.observed_after_forward = observer.seen.size();
  run.loss.backward();
  model->set_activation_observer(nullptr);
  model->set_activation_checkpointing(false);
  run.observed = std::move(observer.seen);
  for (const auto& p : model->named_parameters()) {
    run.grads[p.key()] = p.value().grad().defined() ? p.value().grad().clone() : torch::Tensor();
  }
  return run;
}

// Checkpointing on must give bitwise the same loss, gradients and observations as off: the recompute
// runs the same CPU kernels on the same values (fake-quantizers are deterministic), and the gradient
// contributions meet in the same order.
void expect_same_step(LlamaForCausalLM& model, const torch::Tensor& ids, const std::vector<bool>& checkpointed) {
  const auto plain = train_step(model, ids, false);
  const auto ckpt = train_step(model, ids, true);
  EXPECT_EQ(plain.checkpointed, std::vector<bool>(checkpointed.size(), false));
  EXPECT_EQ(ckpt.checkpointed, checkpointed);
  EXPECT_TRUE(torch::equal(plain.loss, ckpt.loss)) << plain.loss.item<double>() << " vs " << ckpt.loss.item<double>();
  ASSERT_EQ(plain.grads.size(), ckpt.grads.size());
  int with_grad = 0;
  for (const auto& [name, grad] : plain.grads) {
    const auto& other = ckpt.grads.at(name);
    ASSERT_EQ(grad.defined(), other.defined()) << name;
    if (!grad.defined()) continue;
    ++with_grad;
    EXPECT_TRUE(torch::equal(grad, other)) << name << ": max difference " << (grad - other).abs().max().item<double>();
  }
  EXPECT_GT(with_grad, 0);
  // Once per forward: nothing more during the recompute.
  EXPECT_EQ(ckpt.observed.size(), ckpt.observed_after_forward);
  ASSERT_EQ(plain.observed.size(), ckpt.observed.size());
  EXPECT_EQ(plain.observed.size(), 2 * static_cast<size_t>(model->config().num_hidden_layers));
  for (size_t i = 0; i < plain.observed.size(); ++i) {
    EXPECT_EQ(plain.observed[i].layer, ckpt.observed[i].layer);
    EXPECT_EQ(plain.observed[i].site, ckpt.observed[i].site);
    EXPECT_TRUE(torch::equal(plain.observed[i].value, ckpt.observed[i].value)) << i;
  }
}

torch::Tensor token_batch(int64_t vocab, int64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(0, vocab, {2, 12}, torch::kLong);
}

std::string model_dir(const std::string& name) { return fixture_path("models/" + name); }

QuantSpec lsq_spec() {
  auto spec = qkd::test::quant_spec(4, Granularity::per_group, /*symmetric=*/false, 16);
  spec.scale_policy = qkd::quant::ScalePolicy::fixed;
  spec.learnable_scale = true;
  spec.act_bits = 8;
  return spec;
}

void calibrate_inputs(LlamaForCausalLM& model) {
  qkd::quant::begin_activation_calibration(*model);
  torch::NoGradGuard no_grad;
  for (int64_t seed = 100; seed < 102; ++seed) model->forward(token_batch(model->config().vocab_size, seed));
  qkd::quant::end_activation_calibration(*model);
}

// `names`: parameter names, or module prefixes ending in '.'.
void freeze(LlamaForCausalLM& model, const std::vector<std::string>& names) {
  for (auto& p : model->named_parameters()) {
    for (const auto& name : names) {
      const bool prefix = name.back() == '.';
      if (prefix ? p.key().rfind(name, 0) == 0 : p.key() == name) p.value().requires_grad_(false);
    }
  }
}

TEST(LayerCheckpointing, FourBitDynamicWeightsGiveTheSameStep) {
  auto model = qkd::test::load_student(model_dir("tiny-llama-gqa-sharded"),
                                       qkd::test::quant_spec(4, Granularity::per_channel, true));
  expect_same_step(model, token_batch(model->config().vocab_size, 1), {true});
}

TEST(LayerCheckpointing, LearnableScalesAndInputQuantizersGiveTheSameStep) {
  auto model = qkd::test::load_student(model_dir("tiny-llama-gqa-sharded"), lsq_spec());
  calibrate_inputs(model);
  ASSERT_TRUE(model->named_parameters().contains("model.layers.1.mlp.down_proj.weight_quantizer.scale"));
  expect_same_step(model, token_batch(model->config().vocab_size, 2), {true});
}

TEST(LayerCheckpointing, Bf16ComputeGivesTheSameStep) {
  auto model = qkd::checkpoint::load_llama(model_dir("tiny-llama-gqa-sharded"), {torch::kBFloat16, torch::kCPU});
  qkd::quant::attach_quantizers(*model, qkd::test::quant_spec(4, Granularity::per_group, true, 16));
  expect_same_step(model, token_batch(model->config().vocab_size, 3), {true});
}

// Tied embeddings frozen: layer 0's input needs no gradient. Layer 0 frozen too: nothing in it needs
// one, so it runs plainly; layer 1 is checkpointed for its parameters alone; layer 2 (attention frozen,
// the LSQ scales of its MLP training) for its input and the rest.
TEST(LayerCheckpointing, FrozenModulesGiveTheSameStep) {
  auto model = qkd::test::load_student(model_dir("tiny-llama-tied-llama3rope-bf16"), lsq_spec());
  calibrate_inputs(model);
  ASSERT_EQ(model->config().num_hidden_layers, 3);
  freeze(model,
         {"model.embed_tokens.", "model.layers.0.", "model.layers.2.self_attn.", "model.layers.2.mlp.up_proj.weight",
          "model.layers.2.mlp.gate_proj.weight", "model.layers.2.mlp.down_proj.weight"});
  expect_same_step(model, token_batch(model->config().vocab_size, 4), {false, true});
  const auto grads = train_step(model, token_batch(model->config().vocab_size, 4), true).grads;
  EXPECT_FALSE(grads.at("model.layers.0.mlp.up_proj.weight").defined());
  EXPECT_FALSE(grads.at("model.layers.2.mlp.up_proj.weight").defined());
  EXPECT_TRUE(grads.at("model.layers.2.mlp.up_proj.weight_quantizer.scale").defined());
  EXPECT_TRUE(grads.at("model.layers.1.self_attn.q_proj.weight").defined());
}

TEST(LayerCheckpointing, OnlyInTrainingModeWithGradEnabled) {
  auto model = qkd::test::load_student(model_dir("tiny-llama-gqa-sharded"),
                                       qkd::test::quant_spec(4, Granularity::per_channel, true));
  model->set_activation_checkpointing(true);
  EXPECT_TRUE(model->activation_checkpointing());
  const auto ids = token_batch(model->config().vocab_size, 5);
  std::vector<torch::Tensor> hidden;
  model->eval();
  model->forward(ids, &hidden);
  EXPECT_FALSE(is_checkpoint_node(hidden[1]));
  EXPECT_TRUE(hidden[1].requires_grad());
  hidden.clear();
  model->train();
  {
    torch::NoGradGuard no_grad;
    model->forward(ids, &hidden);
    EXPECT_FALSE(hidden[1].requires_grad());
  }
  hidden.clear();
  model->forward(ids, &hidden);
  EXPECT_TRUE(is_checkpoint_node(hidden[1]));
  model->set_activation_checkpointing(false);
  EXPECT_FALSE(model->activation_checkpointing());
}

// ---- RoPE tables ----

TEST(RotaryCache, TablesEqualAFreshComputation) {
  for (const auto* name : {"tiny-llama-gqa-sharded", "tiny-llama-tied-llama3rope-bf16", "kjv-teacher-7m"}) {
    auto model = qkd::checkpoint::load_llama(model_dir(name));
    const auto& rotary = model->model->rotary();
    // More keys than the cache holds, each asked for twice in a row and again in a second pass, so
    // that hits, misses and evictions all occur.
    for (int pass = 0; pass < 2; ++pass) {
      for (const int64_t seq : {1, 7, 12, 64, 255, 512}) {
        for (const auto dtype : {torch::kFloat32, torch::kBFloat16, torch::kFloat16}) {
          const auto [cos, sin] = rotary.tables(seq, dtype, torch::kCPU);
          const auto [fresh_cos, fresh_sin] = rotary.compute_tables(seq, dtype, torch::kCPU);
          ASSERT_EQ(cos.scalar_type(), dtype);
          ASSERT_EQ(cos.sizes(), fresh_cos.sizes()) << name << " seq " << seq;
          EXPECT_TRUE(torch::equal(cos, fresh_cos)) << name << " seq " << seq << " " << dtype;
          EXPECT_TRUE(torch::equal(sin, fresh_sin)) << name << " seq " << seq << " " << dtype;
          const auto again = rotary.tables(seq, dtype, torch::kCPU);
          EXPECT_EQ(again.first.data_ptr(), cos.data_ptr()) << "not cached";
          EXPECT_EQ(again.second.data_ptr(), sin.data_ptr()) << "not cached";
        }
      }
    }
  }
}

// Tables first made in inference mode (evaluation) must still serve a training forward afterwards.
TEST(RotaryCache, TablesMadeInInferenceModeServeTraining) {
  auto model = qkd::checkpoint::load_llama(model_dir("tiny-llama-gqa-sharded"));
  const auto ids = token_batch(model->config().vocab_size, 6);
  {
    c10::InferenceMode inference;
    model->forward(ids);
  }
  EXPECT_FALSE(model->model->rotary().tables(ids.size(1), torch::kFloat32, torch::kCPU).first.is_inference());
  model->train();
  model->forward(ids).sum().backward();
  EXPECT_TRUE(model->model->embed_tokens->weight.grad().defined());
}

}  // namespace
