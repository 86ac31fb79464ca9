#include "qkd/ptq/gptq.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>

#include "qkd/common/error.h"
#include "qkd/quant/fake_quant.h"
#include "qkd/quant/range_setting.h"
#include "qkd/quant/student.h"
#include "qkd/quant/weight_quantizer.h"

namespace qkd::ptq {

namespace {

using quant::Granularity;

// The scale (and zero point) of every block of the layer, in quant::WeightQuantizer's static layout,
// filled in as the sweep reaches each group (per group) or set up front (everything else).
struct Grid {
  quant::QuantSpec spec;
  quant::Levels levels;
  torch::Tensor scale;  // fp32 [rows, blocks_per_row, 1]
  torch::Tensor zero;   // fp32, like scale; undefined when symmetric
};

bool per_group(const quant::QuantSpec& spec) { return spec.granularity == Granularity::per_group; }

// The same range setting as WeightQuantizer::initialize, on blocks already in fp32.
quant::QuantParams range_params(const torch::Tensor& blocks, const quant::QuantSpec& spec) {
  if (spec.range == quant::RangeMethod::search)
    return quant::search_params(blocks, spec.bits, spec.symmetric, quant::clipping_grid(spec));
  return quant::minmax_params(blocks, spec.bits, spec.symmetric);
}

std::vector<int64_t> block_shape(const quant::QuantSpec& spec, int64_t out, int64_t in) {
  switch (spec.granularity) {
    case Granularity::per_channel: return {out, 1, in};
    case Granularity::per_group: return {out, in / spec.group_size, spec.group_size};
    case Granularity::per_tensor: return {1, 1, out * in};
  }
  return {};
}

void set_all_blocks(Grid& grid, const torch::Tensor& w) {
  const auto p = range_params(w.to(torch::kFloat).reshape(block_shape(grid.spec, w.size(0), w.size(1))), grid.spec);
  grid.scale = p.scale;
  grid.zero = p.zero;
}

// Per channel and per tensor: every scale from `w` now. Per group: placeholders the sweep fills in.
Grid start_grid(const torch::Tensor& w, const quant::QuantSpec& spec) {
  Grid grid{spec, quant::levels_for(spec.bits, spec.symmetric), {}, {}};
  if (!per_group(spec)) {
    set_all_blocks(grid, w);
    return grid;
  }
  grid.scale = torch::zeros({w.size(0), w.size(1) / spec.group_size, 1}, torch::kFloat);
  if (!spec.symmetric) grid.zero = torch::zeros_like(grid.scale);
  return grid;
}

void set_group(Grid& grid, int64_t group, const torch::Tensor& columns) {
  const auto p = range_params(columns.to(torch::kFloat).unsqueeze(1), grid.spec);
  grid.scale.narrow(1, group, 1).copy_(p.scale);
  if (grid.zero.defined()) grid.zero.narrow(1, group, 1).copy_(p.zero);
}

// Column `column` (original index) of the layer, [out, 1] fp64, rounded onto its block's grid in fp32
// by the quantizer's own arithmetic.
torch::Tensor quantize_column(const Grid& grid, const torch::Tensor& w, int64_t column) {
  const int64_t block = per_group(grid.spec) ? column / grid.spec.group_size : 0;
  const auto scale = grid.scale.select(1, block);
  const auto zero = grid.zero.defined() ? grid.zero.select(1, block) : torch::Tensor();
  return quant::fake_quant_value(w.to(torch::kFloat), scale, zero, grid.levels);
}

// Inputs that never fire carry no information about their weights: the reference zeroes those weights
// and puts a 1 on the diagonal so that H stays invertible.
void zero_dead_inputs(torch::Tensor& w, torch::Tensor& h) {
  const auto dead = h.diagonal() == 0;
  if (!dead.any().item<bool>()) return;
  h.diagonal().masked_fill_(dead, 1.0);
  w.masked_fill_(dead.unsqueeze(0), 0.0);
}

// Upper Cholesky factor U of the damped H⁻¹ (H⁻¹ = Uᵀ U): row i of U, divided by U[i, i], is the OBS
// update that column i's error induces on the columns after it, given those before it are fixed.
torch::Tensor inverse_cholesky_upper(torch::Tensor h, double damp) {
  auto diagonal = h.diagonal();
  diagonal.add_(damp * diagonal.mean().item<double>());
  auto [lower, info] = torch::linalg_cholesky_ex(h);
  if (info.item<int64_t>() == 0) {
    auto [upper, info_inverse] = torch::linalg_cholesky_ex(torch::cholesky_inverse(lower), /*upper=*/true);
    if (info_inverse.item<int64_t>() == 0) return upper;
  }
  fail("gptq", "the input Hessian is not positive definite after damping " + std::to_string(damp) +
                   " (too few calibration tokens for this layer?); raise the damping (--damp, student.gptq_damp)");
}

// Per group without act order, a group's scale is set when the sweep reaches its first column, from
// the group's current weights. The block size is a multiple of the group size (the whole group is in
// the block-local copy) or a divisor of it (the group starts a block, where the layer copy is current).
int64_t sweep_block_size(const quant::QuantSpec& spec, const GptqOptions& o) {
  if (!per_group(spec) || o.act_order) return o.block_size;
  const int64_t g = spec.group_size;
  if (o.block_size >= g) return o.block_size / g * g;
  return g % o.block_size == 0 ? o.block_size : g;
}

struct Sweep {
  torch::Tensor w;             // fp64 [out, in] in sweep order, receiving the error feedback
  torch::Tensor u;             // upper Cholesky factor of H⁻¹ in sweep order
  torch::Tensor q;             // fp32 [out, in] in sweep order
  torch::Tensor rounded;       // fp32 [out, in] in sweep order: what was rounded to q
  std::vector<int64_t> order;  // original column of each sweep position
  torch::Tensor order_tensor;  // the same as a tensor
  bool groups_on_the_fly = false;
};

void maybe_start_group(Grid& grid, Sweep& s, const torch::Tensor& block_w, int64_t i1, int64_t i2, int64_t j) {
  const int64_t g = grid.spec.group_size;
  if (!s.groups_on_the_fly || j % g != 0) return;
  const auto columns = j + g <= i2 ? block_w.slice(1, j - i1, j - i1 + g) : s.w.slice(1, j, j + g);
  set_group(grid, j / g, columns);
}

void sweep_block(Grid& grid, Sweep& s, int64_t i1, int64_t i2) {
  auto block_w = s.w.slice(1, i1, i2).clone();
  auto block_err = torch::zeros_like(block_w);
  const auto block_u = s.u.slice(0, i1, i2).slice(1, i1, i2);
  for (int64_t i = 0; i < i2 - i1; ++i) {
    const int64_t j = i1 + i;
    maybe_start_group(grid, s, block_w, i1, i2, j);
    const auto column = block_w.slice(1, i, i + 1);
    const auto q = quantize_column(grid, column, s.order[j]);
    s.q.slice(1, j, j + 1).copy_(q);
    s.rounded.slice(1, j, j + 1).copy_(column);
    const auto err = (column - q.to(torch::kDouble)) / block_u[i][i];
    block_w.slice(1, i).sub_(err.mm(block_u.slice(0, i, i + 1).slice(1, i)));
    block_err.slice(1, i, i + 1).copy_(err);
  }
  // The lazy batch update: the columns after the block see the block's errors once, together.
  s.w.slice(1, i2).sub_(block_err.mm(s.u.slice(0, i1, i2).slice(1, i2)));
}

void check_inputs(const torch::Tensor& w, const torch::Tensor& h, const quant::QuantSpec& spec, const GptqOptions& o) {
  quant::validate(spec);
  if (w.dim() != 2) fail("gptq", "expected a weight [out, in], got " + c10::str(w.sizes()));
  if (h.dim() != 2 || h.size(0) != w.size(1) || h.size(1) != w.size(1))
    fail("gptq", "expected a Hessian [" + std::to_string(w.size(1)) + ", " + std::to_string(w.size(1)) + "], got " +
                     c10::str(h.sizes()));
  if (per_group(spec) && w.size(1) % spec.group_size != 0)
    fail("quant.group_size",
         std::to_string(spec.group_size) + " does not divide in_features " + std::to_string(w.size(1)));
  if (!(o.damp >= 0)) fail("gptq", "damp must be >= 0, got " + std::to_string(o.damp));
  if (o.block_size < 1) fail("gptq", "block_size must be >= 1, got " + std::to_string(o.block_size));
}

std::vector<int64_t> to_vector(const torch::Tensor& index) {
  const auto i = index.to(torch::kLong).contiguous();
  return std::vector<int64_t>(i.data_ptr<int64_t>(), i.data_ptr<int64_t>() + i.numel());
}

// W and the factor of the damped H⁻¹ in sweep order: natural, or by descending diag H (act order;
// stable, so that equal diagonals keep their order).
Sweep start_sweep(const torch::Tensor& w, const torch::Tensor& h, const quant::QuantSpec& spec, const GptqOptions& o) {
  Sweep s;
  s.order_tensor = torch::arange(w.size(1), torch::kLong);
  if (o.act_order) s.order_tensor = std::get<1>(torch::sort(h.diagonal(), /*stable=*/true, 0, /*descending=*/true));
  s.order = to_vector(s.order_tensor);
  s.w = w.index_select(1, s.order_tensor);
  s.u = inverse_cholesky_upper(h.index_select(0, s.order_tensor).index_select(1, s.order_tensor), o.damp);
  s.q = torch::zeros(w.sizes(), torch::kFloat);
  s.rounded = torch::zeros(w.sizes(), torch::kFloat);
  s.groups_on_the_fly = per_group(spec) && !o.act_order;
  return s;
}

}  // namespace

GptqLayerResult gptq_quantize_weight(const torch::Tensor& weight, const torch::Tensor& hessian,
                                     const quant::QuantSpec& spec, const GptqOptions& o) {
  check_inputs(weight, hessian, spec, o);
  torch::NoGradGuard no_grad;
  auto w = weight.detach().to(torch::kCPU, torch::kDouble).clone();
  auto h = hessian.detach().to(torch::kCPU, torch::kDouble).clone();
  // Per channel and per tensor the reference sets the scales before touching dead inputs; groups after.
  Grid grid = start_grid(w, spec);
  zero_dead_inputs(w, h);
  if (per_group(spec) && o.act_order) set_all_blocks(grid, w);
  Sweep s = start_sweep(w, h, spec, o);
  const int64_t n = w.size(1), block = sweep_block_size(spec, o);
  for (int64_t i1 = 0; i1 < n; i1 += block) sweep_block(grid, s, i1, std::min(i1 + block, n));
  auto q = torch::empty_like(s.q), rounded = torch::empty_like(s.rounded);
  q.index_copy_(1, s.order_tensor, s.q);
  rounded.index_copy_(1, s.order_tensor, s.rounded);
  return GptqLayerResult{q, grid.scale, grid.zero, rounded};
}

torch::Tensor gptq_compensated_latent(const GptqLayerResult& r, const quant::QuantSpec& spec) {
  // 0.01 of a step inside the outer levels: there round() still gives them, and x / scale stays
  // within [qmin, qmax] after its own rounding, where the estimator's mask lets gradient through.
  constexpr double kInside = 0.01;
  const auto levels = quant::levels_for(spec.bits, spec.symmetric);
  const auto zero = r.zero.defined() ? torch::round(r.zero) : torch::zeros_like(r.scale);
  const auto lo = (levels.qmin - zero + kInside) * r.scale;
  const auto hi = (levels.qmax - zero - kInside) * r.scale;
  const auto blocks = r.rounded.reshape(block_shape(spec, r.rounded.size(0), r.rounded.size(1)));
  return torch::min(torch::max(blocks, lo), hi).reshape(r.rounded.sizes());
}

const EnumTable<GptqLatent>& gptq_latents() {
  static const EnumTable<GptqLatent> table{{GptqLatent::quantized, "quantized"}, {GptqLatent::compensated, "compensated"}};
  return table;
}

torch::Tensor gptq_hessian(const torch::Tensor& x) {
  const auto rows = x.detach().reshape({-1, x.size(-1)}).to(torch::kFloat);
  return rows.t().mm(rows) * (2.0 / static_cast<double>(std::max<int64_t>(rows.size(0), 1)));
}

namespace {

// An identity input quantizer that sums x xᵀ over the rows it sees while recording: how the inputs of
// a projection deep inside attention (o_proj) reach GPTQ without a second implementation of attention.
class HessianTap : public model::TensorQuantizer {
 public:
  explicit HessianTap(int64_t in_features) : sum_(torch::zeros({in_features, in_features}, torch::kFloat)) {}
  torch::Tensor fake_quantize(const torch::Tensor& x) override {
    if (recording_) {
      const auto rows = x.detach().reshape({-1, x.size(-1)}).to(torch::kFloat);
      sum_.addmm_(rows.t(), rows);
      count_ += rows.size(0);
    }
    return x;
  }
  torch::Tensor hessian() const { return sum_ * (2.0 / static_cast<double>(std::max<int64_t>(count_, 1))); }
  void stop() { recording_ = false; }

 private:
  torch::Tensor sum_;
  int64_t count_ = 0;
  bool recording_ = true;
};

// Projections are solved on a float copy of the student (the work model): its inputs are tapped, and
// each solved weight is written back into it so that later layers see the quantized ones.
struct Target {
  std::string name;
  model::Linear work;               // in the float copy
  model::Linear student;            // in the student
  quant::QuantSpec spec;            // the module's own (lm_head: lm_head_bits)
  std::shared_ptr<HessianTap> tap;  // decoder projections only
  torch::Tensor scale, zero;        // the student quantizer's state tensors
  double relative_error = 0.0;
};

model::LlamaForCausalLM float_copy(model::LlamaForCausalLMImpl& student) {
  model::LlamaForCausalLM work(student.config());
  const auto source = student.named_parameters(/*recurse=*/true);
  torch::NoGradGuard no_grad;
  for (auto& item : work->named_parameters(/*recurse=*/true))
    item.value().copy_(source[item.key()].detach().to(torch::kCPU, torch::kFloat));
  work->eval();
  return work;
}

std::vector<Target> find_targets(model::LlamaForCausalLMImpl& student, model::LlamaForCausalLMImpl& work) {
  const auto state = quant::quantizer_state(student);
  std::map<std::string, torch::Tensor> by_name(state.begin(), state.end());
  std::map<std::string, model::Linear> work_linears;
  for (auto& [name, linear] : work.named_linears()) work_linears.emplace(name, linear);
  std::vector<Target> targets;
  for (auto& [name, linear] : student.named_linears()) {
    auto q = std::dynamic_pointer_cast<quant::WeightQuantizer>(linear->weight_quantizer());
    if (!q) continue;
    if (q->spec().scale_policy != quant::ScalePolicy::fixed)
      fail("quant.scale_policy", "GPTQ needs \"static\": the student's quantizer must keep GPTQ's scales");
    const auto zero = by_name.find(name + ".weight_quantizer.zero_point");
    targets.push_back({name, work_linears.at(name), linear, q->spec(), nullptr,
                       by_name.at(name + ".weight_quantizer.scale"),
                       zero == by_name.end() ? torch::Tensor() : zero->second});
  }
  return targets;
}

void solve(Target& t, const torch::Tensor& hessian, const GptqOptions& o) {
  torch::NoGradGuard no_grad;
  const auto w = t.work->weight.detach();
  GptqLayerResult r;
  try {
    r = gptq_quantize_weight(w, hessian, t.spec, o);
  } catch (const Error& e) {
    fail(t.name, e.what());
  }
  const double norm = w.norm().item<double>();
  t.relative_error = norm > 0 ? (w - r.q).norm().item<double>() / norm : 0.0;
  t.work->weight.copy_(r.q);
  t.student->weight.copy_(o.latent == GptqLatent::quantized ? r.q : gptq_compensated_latent(r, t.spec));
  t.scale.copy_(r.scale);
  if (t.zero.defined()) t.zero.copy_(r.zero);
}

constexpr int64_t kWindowsPerForward = 8;

// One decoder layer over every calibration window, in place: [N, L, hidden].
void run_layer(model::DecoderLayer& layer, torch::Tensor& hidden, const model::AttentionInputs& inputs) {
  for (int64_t b = 0; b < hidden.size(0); b += kWindowsPerForward) {
    auto chunk = hidden.slice(0, b, std::min(b + kWindowsPerForward, hidden.size(0)));
    chunk.copy_(layer->forward(chunk, inputs, nullptr));
  }
}

void quantize_layer(size_t index, model::LlamaForCausalLMImpl& work, std::vector<Target*>& targets,
                    torch::Tensor& hidden, const GptqOptions& o) {
  auto& layer = work.model->layer_list[index];
  const auto inputs = work.model->attention_inputs(hidden.size(1), torch::kFloat, torch::kCPU);
  for (auto* t : targets) {
    t->tap = std::make_shared<HessianTap>(t->work->in_features());
    t->work->set_input_quantizer(t->tap);
  }
  // Collect on a copy: the layer's output must come from its quantized weights.
  auto probe = hidden.clone();
  run_layer(layer, probe, inputs);
  for (auto* t : targets) {
    t->tap->stop();
    solve(*t, t->tap->hessian(), o);
  }
  run_layer(layer, hidden, inputs);
}

std::vector<Target*> layer_targets(std::vector<Target>& targets, size_t layer) {
  const auto prefix = "model.layers." + std::to_string(layer) + ".";
  std::vector<Target*> in_layer;
  for (auto& t : targets)
    if (t.name.rfind(prefix, 0) == 0) in_layer.push_back(&t);
  return in_layer;
}

}  // namespace

std::vector<std::pair<std::string, double>> gptq_quantize_student(model::LlamaForCausalLMImpl& student,
                                                                  const torch::Tensor& windows, const GptqOptions& o) {
  if (windows.dim() != 2 || windows.size(0) == 0)
    fail("gptq", "expected calibration windows [N, L] with N >= 1, got " + c10::str(windows.sizes()));
  torch::NoGradGuard no_grad;
  auto work = float_copy(student);
  auto targets = find_targets(student, *work);
  auto hidden = work->model->embed_tokens(windows.to(torch::kCPU, torch::kLong)).contiguous();
  const auto& layers = work->model->layer_list;
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto start = std::chrono::steady_clock::now();
    auto in_layer = layer_targets(targets, i);
    quantize_layer(i, *work, in_layer, hidden, o);
    spdlog::info("gptq: layer {}/{}: {} projections in {:.1f} s", i + 1, layers.size(), in_layer.size(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  for (auto& t : targets)
    if (t.name == "lm_head") solve(t, gptq_hessian(work->model->norm(hidden)), o);
  std::vector<std::pair<std::string, double>> errors;
  for (const auto& t : targets) errors.emplace_back(t.name, t.relative_error);
  return errors;
}

}  // namespace qkd::ptq
