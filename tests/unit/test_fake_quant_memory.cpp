// Memory of fake-quantized projections: frozen modules quantize their weight once and reuse it until
// it changes; trainable ones recompute it in the backward pass instead of keeping it, with output and
// gradients bitwise those of plain autograd through the straight-through fake-quantizer.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <c10/core/CPUAllocator.h>
#include <c10/core/InferenceMode.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include "qkd/model/linear.h"
#include "qkd/model/llama.h"
#include "qkd/quant/activation_quantizer.h"
#include "qkd/quant/fake_quant.h"
#include "qkd/quant/quant_spec.h"
#include "qkd/quant/range_setting.h"
#include "qkd/quant/student.h"
#include "qkd/quant/weight_quantizer.h"
#include "test_support.h"

using namespace qkd::quant;
using qkd::model::Linear;

namespace {

bool bitwise_equal(const torch::Tensor& a, const torch::Tensor& b) {
  if (!a.defined() || !b.defined()) return a.defined() == b.defined();
  if (a.scalar_type() != b.scalar_type() || !a.sizes().equals(b.sizes())) return false;
  auto ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.numel() * ca.element_size()) == 0;
}

struct Setting {
  ScalePolicy policy;
  RangeMethod range;
  Granularity granularity;
  bool symmetric;
  torch::Dtype dtype;
};

std::string describe(const Setting& s) {
  return std::string(s.policy == ScalePolicy::fixed ? "static" : "dynamic") + "/" +
         (s.range == RangeMethod::search ? "search" : "minmax") + "/" +
         (s.granularity == Granularity::per_channel ? "channel"
          : s.granularity == Granularity::per_group ? "group"
                                                   : "tensor") +
         "/" + (s.symmetric ? "sym" : "asym") + "/" + c10::toString(s.dtype);
}

QuantSpec spec_for(const Setting& s) {
  auto spec = qkd::test::quant_spec(3, s.granularity, s.symmetric, 16);
  spec.scale_policy = s.policy;
  spec.range = s.range;
  spec.search_grid = {0.6, 0.7, 0.8, 0.9, 1.0};
  return spec;
}

// A student projection: Gaussian weight (whose tails a search clips at 3 bits), quantizer attached
// and initialized, then the weight moved so that a static range clips some of it too.
Linear quantized_linear_module(const QuantSpec& spec, int64_t in, int64_t out, bool bias, torch::Dtype dtype) {
  Linear linear(in, out, bias);
  {
    torch::NoGradGuard no_grad;
    linear->weight.normal_(0.0, 0.05);
    if (bias) linear->bias.normal_(0.0, 0.1);
  }
  linear->to(dtype);
  auto q = std::make_shared<WeightQuantizer>(spec, out, in, "m");
  q->initialize(linear->weight);
  linear->set_weight_quantizer(q);
  torch::NoGradGuard no_grad;
  linear->weight.mul_(1.25);
  return linear;
}

WeightQuantizer& weight_quantizer(Linear& linear) {
  return dynamic_cast<WeightQuantizer&>(*linear->weight_quantizer());
}

// WeightQuantizer::fake_quantize as it was before the recomputing path, rebuilt from public pieces:
// the autograd composition the new path has to reproduce bitwise.
torch::Tensor reference_fake_quantize(WeightQuantizer& q, const torch::Tensor& w) {
  const auto& spec = q.spec();
  if (w.scalar_type() == torch::kHalf && w.device().is_cpu())
    return reference_fake_quantize(q, w.to(torch::kFloat)).to(torch::kHalf);
  std::vector<int64_t> shape;
  switch (spec.granularity) {
    case Granularity::per_channel: shape = {w.size(0), 1, w.size(1)}; break;
    case Granularity::per_group: shape = {w.size(0), w.size(1) / spec.group_size, spec.group_size}; break;
    case Granularity::per_tensor: shape = {1, 1, w.numel()}; break;
  }
  const auto blocks = w.reshape(shape);
  const auto p = q.params_for(w);
  if (spec.scale_policy == ScalePolicy::dynamic) {
    return fake_quant_ste(blocks, p.scale, p.zero, q.levels(), spec.range == RangeMethod::search).reshape(w.sizes());
  }
  const auto scale = spec.learnable_scale ? p.scale.clamp_min(min_scale(torch::kFloat)) : p.scale;
  const double factor = spec.learnable_scale && spec.lsq_grad_scale
                            ? 1.0 / std::sqrt(static_cast<double>(shape.back()) * q.levels().qmax)
                            : 1.0;
  return fake_quant_ste(blocks.to(torch::kFloat), scale, p.zero, q.levels(), true, factor)
      .to(w.scalar_type())
      .reshape(w.sizes());
}

struct Grads {
  torch::Tensor y, x, w, b;
};

// Output and gradients of sum(y * g) for the module's forward and for the reference composition on
// copies of the same leaves. `transposed_grad` makes the gradient reaching y non-contiguous.
std::pair<Grads, Grads> both_paths(Linear& linear, const torch::Tensor& x_value, bool transposed_grad,
                                   std::string* grad_fn_name = nullptr) {
  auto& q = weight_quantizer(linear);
  auto run = [&](bool module_path) {
    auto x = x_value.clone().requires_grad_(true);
    auto w = linear->weight;
    auto b = linear->bias;
    if (!module_path) {
      w = linear->weight.detach().clone().requires_grad_(linear->weight.requires_grad());
      if (b.defined()) b = linear->bias.detach().clone().requires_grad_(linear->bias.requires_grad());
    }
    const auto input = linear->input_quantizer() ? linear->input_quantizer()->fake_quantize(x) : x;
    auto y = module_path ? linear->forward(x) : torch::nn::functional::linear(input, reference_fake_quantize(q, w), b);
    if (module_path && grad_fn_name) *grad_fn_name = y.grad_fn() ? y.grad_fn()->name() : "";
    torch::manual_seed(7);
    if (transposed_grad) {
      const auto g = torch::randn(y.transpose(0, 1).sizes()).to(y.scalar_type());
      (y.transpose(0, 1) * g).sum().backward();
    } else {
      y.backward(torch::randn(y.sizes()).to(y.scalar_type()));
    }
    Grads out{y.detach(), x.grad(), w.grad(), b.defined() ? b.grad() : torch::Tensor()};
    if (module_path) {
      linear->weight.mutable_grad() = torch::Tensor();
      if (b.defined()) linear->bias.mutable_grad() = torch::Tensor();
    }
    return out;
  };
  auto reference = run(false);
  auto recomputed = run(true);
  return {recomputed, reference};
}

void expect_same(const Grads& got, const Grads& want, const std::string& where) {
  EXPECT_TRUE(bitwise_equal(got.y, want.y)) << where << ": output";
  EXPECT_TRUE(bitwise_equal(got.x, want.x)) << where << ": input gradient";
  EXPECT_TRUE(bitwise_equal(got.w, want.w)) << where << ": weight gradient";
  EXPECT_TRUE(bitwise_equal(got.b, want.b)) << where << ": bias gradient";
}

// CPU allocator that counts the bytes alive, installed for the scope of a CountingScope; tensors it
// allocated keep its deleter. Context and data are the same pointer, as raw_allocate() (used inside
// some kernels) requires, so the inner allocation is found again through a table.
// The overloads without `override` are deliberate: LibTorch 1.13 declares allocate() const, 2.x
// declares it non-const and adds copy_data(); defining both compiles against either.
class CountingAllocator final : public c10::Allocator {
 public:
  explicit CountingAllocator(c10::Allocator* inner) : inner_(inner) {}

  c10::DataPtr allocate(size_t n) const { return counted(n); }
  c10::DataPtr allocate(size_t n) { return counted(n); }
  void copy_data(void* dest, const void* src, std::size_t count) const { std::memcpy(dest, src, count); }
  c10::DeleterFnPtr raw_deleter() const override { return &CountingAllocator::release; }

  static int64_t live() { return table().live.load(); }

 private:
  struct Table {
    std::mutex mutex;
    std::unordered_map<void*, std::pair<c10::DataPtr, int64_t>> allocations;
    std::atomic<int64_t> live{0};
  };
  static Table& table() {
    static Table* t = new Table;  // never destroyed: tensors may be freed during static destruction
    return *t;
  }
  static void release(void* data) {
    auto& t = table();
    std::pair<c10::DataPtr, int64_t> allocation;
    {
      std::lock_guard<std::mutex> lock(t.mutex);
      auto it = t.allocations.find(data);
      allocation = std::move(it->second);
      t.allocations.erase(it);
    }
    t.live.fetch_sub(allocation.second);
  }
  c10::DataPtr counted(size_t n) const {
    auto inner = inner_->allocate(n);
    void* data = inner.get();
    if (data == nullptr) return inner;  // empty
    const auto device = inner.device();
    auto& t = table();
    {
      std::lock_guard<std::mutex> lock(t.mutex);
      t.allocations.emplace(data, std::make_pair(std::move(inner), static_cast<int64_t>(n)));
    }
    t.live.fetch_add(static_cast<int64_t>(n));
    return c10::DataPtr(data, data, &CountingAllocator::release, device);
  }

  c10::Allocator* inner_;
};

class CountingScope {
 public:
  CountingScope() : original_(c10::GetCPUAllocator()) {
    static CountingAllocator counting(original_);  // outlives every tensor it allocated
    counting_ = &counting;
    c10::SetCPUAllocator(counting_);
  }
  ~CountingScope() { c10::SetCPUAllocator(original_); }
  int64_t live() const { return CountingAllocator::live(); }
  bool installed() const { return c10::GetCPUAllocator() == counting_; }

 private:
  c10::Allocator* original_;
  CountingAllocator* counting_ = nullptr;
};

}  // namespace

// Trainable weights: every scale policy and granularity without learned scales takes the recomputing
// path, and its output and gradients are bitwise those of the autograd composition.
TEST(RecomputedFakeQuant, GradientsBitwiseEqualToAutogradPath) {
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    for (auto [policy, range] :
         {std::pair{ScalePolicy::dynamic, RangeMethod::minmax}, std::pair{ScalePolicy::dynamic, RangeMethod::search},
          std::pair{ScalePolicy::fixed, RangeMethod::minmax}, std::pair{ScalePolicy::fixed, RangeMethod::search}}) {
      for (auto g : {Granularity::per_channel, Granularity::per_group, Granularity::per_tensor}) {
        for (bool sym : {true, false}) {
          const Setting s{policy, range, g, sym, dtype};
          for (bool three_d : {true, false}) {
            torch::manual_seed(11);
            auto linear = quantized_linear_module(spec_for(s), 64, 24, /*bias=*/!three_d, dtype);
            const auto x = three_d ? torch::randn({3, 5, 64}).to(dtype) : torch::randn({7, 64}).to(dtype);
            std::string name;
            const auto [got, want] = both_paths(linear, x, /*transposed_grad=*/three_d, &name);
            const auto where = describe(s) + (three_d ? "/3d" : "/2d+bias");
            EXPECT_NE(name.find("QuantizedLinearFunction"), std::string::npos) << where << ": " << name;
            expect_same(got, want, where);
            if (s.range == RangeMethod::search || s.policy == ScalePolicy::fixed) {
              EXPECT_GT((want.w == 0).sum().item<int64_t>(), 0) << where << ": nothing clipped, mask untested";
            }
          }
        }
      }
    }
  }
}

// A learnable scale frozen by the freeze policy (requires_grad false) is a constant: recomputed path.
// A learning one keeps the autograd path, gradients of scale and zero point included.
TEST(RecomputedFakeQuant, LearnableScalesFrozenRecomputeLearningKeepAutograd) {
  for (bool learning : {false, true}) {
    torch::manual_seed(5);
    Setting s{ScalePolicy::fixed, RangeMethod::minmax, Granularity::per_group, false, torch::kFloat};
    auto spec = spec_for(s);
    spec.learnable_scale = true;
    auto linear = quantized_linear_module(spec, 64, 24, true, torch::kFloat);
    auto& q = weight_quantizer(linear);
    for (auto& p : q.parameters()) p.requires_grad_(learning);
    std::string name;
    const auto [got, want] = both_paths(linear, torch::randn({2, 4, 64}), false, &name);
    EXPECT_EQ(name.find("QuantizedLinearFunction") != std::string::npos, !learning) << name;
    expect_same(got, want, learning ? "learning" : "frozen scale");
  }
  // The learning scale's own gradient, through the module and through the reference.
  torch::manual_seed(6);
  auto spec = spec_for({ScalePolicy::fixed, RangeMethod::minmax, Granularity::per_channel, true, torch::kFloat});
  spec.learnable_scale = true;
  auto linear = quantized_linear_module(spec, 32, 8, false, torch::kFloat);
  auto& q = weight_quantizer(linear);
  auto scale = q.named_parameters()["scale"];
  const auto x = torch::randn({4, 32});
  linear->forward(x).sum().backward();
  const auto module_grad = scale.grad().clone();
  scale.mutable_grad() = torch::Tensor();
  torch::nn::functional::linear(x, reference_fake_quantize(q, linear->weight.detach())).sum().backward();
  EXPECT_TRUE(bitwise_equal(module_grad, scale.grad()));
}

// An input quantizer feeds the same product: its own straight-through backward is untouched, the
// weight is still recomputed.
TEST(RecomputedFakeQuant, WithInputQuantizer) {
  torch::manual_seed(8);
  for (auto policy : {ScalePolicy::dynamic, ScalePolicy::fixed}) {
    auto spec = spec_for({policy, RangeMethod::search, Granularity::per_channel, true, torch::kFloat});
    spec.act_bits = 8;
    auto linear = quantized_linear_module(spec, 64, 16, false, torch::kFloat);
    auto act = std::make_shared<ActivationQuantizer>(spec, "m.input_quantizer");
    act->begin_calibration();
    act->observe(torch::randn({8, 64}) * 0.8);  // larger inputs get clipped
    act->end_calibration();
    linear->set_input_quantizer(act);
    std::string name;
    const auto [got, want] = both_paths(linear, torch::randn({2, 6, 64}), false, &name);
    EXPECT_NE(name.find("QuantizedLinearFunction"), std::string::npos);
    expect_same(got, want, "input quantizer");
    EXPECT_GT((want.x == 0).sum().item<int64_t>(), 0);
  }
}

// Shapes and layouts outside the recomputing path (a non-contiguous or 4-d input) and grad-free calls
// give the plain composition.
TEST(RecomputedFakeQuant, OtherInputsKeepPlainComposition) {
  torch::manual_seed(9);
  auto linear = quantized_linear_module(
      spec_for({ScalePolicy::dynamic, RangeMethod::search, Granularity::per_group, true, torch::kFloat}), 64, 16, true,
      torch::kFloat);
  for (const auto& x : {torch::randn({64, 5}).t(), torch::randn({2, 3, 4, 64})}) {
    std::string name;
    const auto [got, want] = both_paths(linear, x, false, &name);
    EXPECT_EQ(name.find("QuantizedLinearFunction"), std::string::npos) << name;
    expect_same(got, want, "fallback " + c10::str(x.sizes()));
  }
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({3, 64});
  auto& q = weight_quantizer(linear);
  EXPECT_TRUE(bitwise_equal(
      linear->forward(x), torch::nn::functional::linear(x, reference_fake_quantize(q, linear->weight), linear->bias)));
}

// What the forward pass leaves alive for the backward pass: the plain composition keeps a weight-sized
// fake-quantized copy, the recomputing path keeps nothing of that size (x, the weight and the bias
// were alive before; the output and the per-block scale are small).
TEST(RecomputedFakeQuant, NoWeightSizedTensorKeptForBackward) {
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    for (auto policy : {ScalePolicy::dynamic, ScalePolicy::fixed}) {
      torch::manual_seed(10);
      auto linear = quantized_linear_module(spec_for({policy, RangeMethod::search, Granularity::per_group, true, dtype}),
                                            1024, 512, false, dtype);
      auto& q = weight_quantizer(linear);
      const auto weight_bytes = linear->weight.numel() * static_cast<int64_t>(linear->weight.element_size());
      const auto x = torch::randn({2, 8, 1024}).to(dtype).requires_grad_(true);
      CountingScope counting;
      ASSERT_TRUE(counting.installed());
      int64_t before = counting.live();
      auto y_plain = torch::nn::functional::linear(x, q.fake_quantize(linear->weight), linear->bias);
      const int64_t kept_plain = counting.live() - before;
      y_plain = torch::Tensor();
      before = counting.live();
      auto y = linear->forward(x);
      const int64_t kept = counting.live() - before;
      const auto where = c10::toString(dtype) + std::string(policy == ScalePolicy::fixed ? " static" : " dynamic");
      RecordProperty(where + " weight_bytes", std::to_string(weight_bytes));
      RecordProperty(where + " kept_plain", std::to_string(kept_plain));
      RecordProperty(where + " kept_recomputing", std::to_string(kept));
      EXPECT_GE(kept_plain, weight_bytes) << where;  // the measurement sees the copy where there is one
      EXPECT_LT(kept, weight_bytes / 4) << where << ": kept " << kept << " bytes";
      y.sum().backward();
      EXPECT_TRUE(linear->weight.grad().defined());
    }
  }
}

// A frozen module quantizes its weight once: the second forward reuses the same tensor and allocates
// nothing weight-sized; the cache holds no autograd history.
TEST(FrozenFakeQuant, QuantizedOnceAndReused) {
  for (auto policy : {ScalePolicy::dynamic, ScalePolicy::fixed}) {
    torch::manual_seed(12);
    auto linear =
        quantized_linear_module(spec_for({policy, RangeMethod::search, Granularity::per_group, false, torch::kFloat}),
                                1024, 512, true, torch::kFloat);
    auto& q = weight_quantizer(linear);
    for (auto& p : linear->parameters()) p.requires_grad_(false);  // what freeze_module does
    const auto expected = reference_fake_quantize(q, linear->weight);
    const auto first = linear->effective_weight();
    EXPECT_TRUE(bitwise_equal(first, expected));
    EXPECT_FALSE(first.requires_grad());
    EXPECT_FALSE(first.grad_fn());
    EXPECT_EQ(linear->effective_weight().data_ptr(), first.data_ptr());

    const auto x = torch::randn({2, 8, 1024}).requires_grad_(true);
    const auto weight_bytes = linear->weight.numel() * static_cast<int64_t>(linear->weight.element_size());
    CountingScope counting;
    ASSERT_TRUE(counting.installed());
    const int64_t before = counting.live();
    auto y = linear->forward(x);
    EXPECT_LT(counting.live() - before, weight_bytes / 8);
    EXPECT_TRUE(bitwise_equal(y, torch::nn::functional::linear(x, expected, linear->bias)));
    y.sum().backward();  // the gradient still reaches the input, as through the uncached weight
    const auto x2 = x.detach().clone().requires_grad_(true);
    torch::nn::functional::linear(x2, expected, linear->bias).sum().backward();
    EXPECT_TRUE(bitwise_equal(x.grad(), x2.grad()));
    EXPECT_EQ(linear->effective_weight().data_ptr(), first.data_ptr());
  }
}

// The cache follows every way the inputs of the quantized weight change while frozen.
TEST(FrozenFakeQuant, FreshValueAfterTheWeightOrTheScaleChanges) {
  torch::manual_seed(13);
  auto linear = quantized_linear_module(
      spec_for({ScalePolicy::fixed, RangeMethod::minmax, Granularity::per_channel, false, torch::kFloat}), 64, 16,
      false, torch::kFloat);
  auto& q = weight_quantizer(linear);
  for (auto& p : linear->parameters()) p.requires_grad_(false);
  auto check = [&](const std::string& after) {
    const auto got = linear->effective_weight();
    EXPECT_TRUE(bitwise_equal(got, reference_fake_quantize(q, linear->weight))) << after;
    const auto x = torch::randn({3, 64}).to(linear->weight.scalar_type());
    EXPECT_TRUE(
        bitwise_equal(linear->forward(x), torch::nn::functional::linear(x, reference_fake_quantize(q, linear->weight))))
        << after;
    return got;
  };
  const auto saved = linear->weight.detach().clone();
  const auto v0 = check("first use").clone();
  torch::NoGradGuard no_grad;
  linear->weight.mul_(0.5);  // an in-place write
  EXPECT_FALSE(bitwise_equal(check("in-place write"), v0));
  linear->weight.copy_(saved);  // a rollback: same values, new version
  EXPECT_TRUE(bitwise_equal(check("rollback"), v0));
  q.named_buffers()["scale"].mul_(2);  // a quantizer state load copies into the buffers
  q.on_state_loaded();
  EXPECT_FALSE(bitwise_equal(check("scale load"), v0));
  q.initialize(linear->weight * 0.25);  // set_data: new storage, same version
  check("re-initialize");
  linear->effective_weight().zero_();  // a caller wrote into the shared tensor
  check("write into the cache");
  linear->to(torch::kBFloat16);  // set_data on the weight
  EXPECT_EQ(check("dtype change").scalar_type(), torch::kBFloat16);
}

// Released modules stop using (and holding) the cache; a cache first made under inference mode still
// serves a training forward that saves it for backward.
TEST(FrozenFakeQuant, ReleaseAndInferenceMode) {
  torch::manual_seed(14);
  auto linear = quantized_linear_module(
      spec_for({ScalePolicy::dynamic, RangeMethod::minmax, Granularity::per_channel, true, torch::kFloat}), 64, 16,
      false, torch::kFloat);
  linear->weight.requires_grad_(false);
  {
    c10::InferenceMode inference;
    linear->forward(torch::randn({2, 64}));
  }
  const auto x = torch::randn({2, 64}).requires_grad_(true);
  linear->forward(x).sum().backward();
  EXPECT_TRUE(x.grad().defined());
  const auto cached = linear->effective_weight();
  linear->weight.requires_grad_(true);
  const auto released = linear->effective_weight();
  EXPECT_NE(released.data_ptr(), cached.data_ptr());
  EXPECT_TRUE(released.requires_grad());
  EXPECT_NE(linear->effective_weight().data_ptr(), released.data_ptr());
}

// A static searched range is searched in initialize() only: a changed weight keeps the stored scale
// (which a new search would have moved), in the quantizer and in the module's forward.
TEST(StaticSearch, ScaleFixedAfterInitialize) {
  torch::manual_seed(15);
  for (bool sym : {true, false}) {
    auto spec = spec_for({ScalePolicy::fixed, RangeMethod::search, Granularity::per_group, sym, torch::kFloat});
    auto linear = quantized_linear_module(spec, 64, 16, false, torch::kFloat);
    auto& q = weight_quantizer(linear);
    const auto stored = q.params_for(linear->weight);
    const auto scale = stored.scale.clone();
    {
      torch::NoGradGuard no_grad;
      linear->weight.mul_(3.0).add_(torch::randn_like(linear->weight) * 0.01);
    }
    const auto blocks = linear->weight.detach().view({16, 4, 16});
    const auto fresh = search_params(blocks, spec.bits, sym, clipping_grid(spec));
    EXPECT_FALSE(torch::equal(fresh.scale, scale));  // a per-forward search would be visible
    EXPECT_TRUE(bitwise_equal(q.params_for(linear->weight).scale, scale));
    const auto expected = fake_quant_value(blocks, scale, stored.zero, q.levels()).view({16, 64});
    EXPECT_TRUE(bitwise_equal(q.fake_quantize(linear->weight).detach(), expected));
    const auto x = torch::randn({4, 64});
    EXPECT_TRUE(bitwise_equal(linear->forward(x).detach(), torch::nn::functional::linear(x, expected)));
    EXPECT_TRUE(bitwise_equal(q.params_for(linear->weight).scale, scale));
  }
}

namespace {

// The quantizer as it was: fake_quantize only, so the Linear computes linear(x, fake_quantize(w), b)
// through plain autograd. The parameter that requires grad keeps the module from counting as frozen
// (which would use the cache).
class PlainQuantizer : public qkd::model::TensorQuantizer {
 public:
  explicit PlainQuantizer(std::shared_ptr<WeightQuantizer> inner) : inner_(register_module("inner", std::move(inner))) {
    register_parameter("never_frozen", torch::zeros({1}));
  }
  torch::Tensor fake_quantize(const torch::Tensor& w) override { return reference_fake_quantize(*inner_, w); }

 private:
  std::shared_ptr<WeightQuantizer> inner_;
};

qkd::model::LlamaForCausalLM tiny_student(const QuantSpec& spec, torch::Dtype dtype, bool plain) {
  qkd::model::LlamaForCausalLM m(qkd::test::tiny_llama_config());
  torch::manual_seed(21);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : m->parameters()) p.normal_(0.0, 0.1);
  }
  m->to(dtype);
  if (!plain) {
    attach_quantizers(*m, spec);
  } else {
    for (auto& [name, linear] : m->named_linears()) {
      if (name == "lm_head") continue;
      auto q = std::make_shared<WeightQuantizer>(spec, linear->out_features(), linear->in_features(), name);
      q->initialize(linear->weight);
      linear->set_weight_quantizer(std::make_shared<PlainQuantizer>(q));
    }
  }
  // ov freeze on layer 0: weight and (for the new path) quantizer parameters.
  for (auto& [name, linear] : m->named_linears()) {
    if (name.rfind("model.layers.0.self_attn.o_proj", 0) != 0 && name.rfind("model.layers.0.self_attn.v_proj", 0) != 0)
      continue;
    linear->weight.requires_grad_(false);
    if (!plain) {
      for (auto& p : linear->weight_quantizer()->parameters()) p.requires_grad_(false);
    }
  }
  return m;
}

}  // namespace

// A whole student, part of it frozen, over two steps with an update and a rollback-like write in
// between: logits and every model gradient are bitwise those of the plain autograd composition.
TEST(WholeStudent, LogitsAndGradientsBitwiseEqualToPlainComposition) {
  std::vector<QuantSpec> specs;
  specs.push_back(spec_for({ScalePolicy::dynamic, RangeMethod::minmax, Granularity::per_channel, true, torch::kFloat}));
  specs.back().bits = 4;
  specs.push_back(spec_for({ScalePolicy::dynamic, RangeMethod::search, Granularity::per_group, false, torch::kFloat}));
  specs.push_back(spec_for({ScalePolicy::fixed, RangeMethod::search, Granularity::per_group, true, torch::kFloat}));
  for (size_t k = 0; k < specs.size(); ++k) {
    for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
      auto fresh = tiny_student(specs[k], dtype, false);
      auto plain = tiny_student(specs[k], dtype, true);
      torch::manual_seed(22);
      const auto ids = torch::randint(0, 100, {2, 8}, torch::kLong);
      const auto g = torch::randn({2, 8, 100});
      for (int step = 0; step < 2; ++step) {
        const auto where = "spec " + std::to_string(k) + " " + c10::toString(dtype) + " step " + std::to_string(step);
        const auto a = fresh->forward(ids);
        const auto b = plain->forward(ids);
        EXPECT_TRUE(bitwise_equal(a, b)) << where << ": logits";
        (a.to(torch::kFloat) * g).sum().backward();
        (b.to(torch::kFloat) * g).sum().backward();
        auto plain_params = plain->named_parameters();
        torch::NoGradGuard no_grad;
        for (auto& item : fresh->named_parameters()) {
          if (item.key().find("_quantizer.") != std::string::npos) continue;
          auto other = plain_params[item.key()];
          EXPECT_TRUE(bitwise_equal(item.value().grad(), other.grad())) << where << ": " << item.key();
          if (item.value().requires_grad()) {
            item.value().sub_(item.value().grad() * 0.05);
            other.sub_(other.grad() * 0.05);
          }
          item.value().mutable_grad() = torch::Tensor();
          other.mutable_grad() = torch::Tensor();
        }
        for (auto* m : {&fresh, &plain}) {
          auto p = (*m)->named_parameters()["model.layers.0.self_attn.v_proj.weight"];
          p.copy_(p * 0.9);  // frozen, written in place like a rollback
        }
      }
    }
  }
}
