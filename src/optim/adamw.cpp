#include "qkd/optim/adamw.h"

#include <algorithm>
#include <cmath>

#include "qkd/common/error.h"

namespace qkd::optim {

namespace {
// fp64 parameters keep their own precision: an fp32 master would be a loss, not a gain.
bool needs_master(const torch::Tensor& param) {
  return param.scalar_type() == torch::kBFloat16 || param.scalar_type() == torch::kFloat16;
}

std::string dtype_text(torch::ScalarType type) { return c10::toString(type); }

int64_t bytes(const torch::Tensor& t) { return t.defined() ? t.numel() * static_cast<int64_t>(t.element_size()) : 0; }

// A resumed moment must be one an update could have produced: finite, and for the second moment not
// negative (its square root would turn every later update into NaN).
void check_moment(const torch::Tensor& t, const std::string& name, bool second, const std::string& source) {
  if (!t.is_floating_point()) fail(source, "tensor '" + name + "': not floating point");
  if (!torch::isfinite(t).all().item<bool>()) fail(source, "tensor '" + name + "': holds NaN or Inf values");
  if (second && t.numel() > 0 && t.min().item<double>() < 0)
    fail(source, "tensor '" + name + "': negative values in a second moment (a mean of squares)");
}
}  // namespace

AdamW::AdamW(AdamWOptions options) : options_(options) {
  if (options_.moment_dtype != torch::kFloat32 && options_.moment_dtype != torch::kBFloat16)
    fail("optim.moment_dtype", "expected float32 or bfloat16, got " + dtype_text(options_.moment_dtype));
}

void AdamW::add_parameter(const std::string& name, torch::Tensor param, bool decay, int64_t warmup_steps) {
  torch::NoGradGuard no_grad;
  Slot slot;
  slot.param = param;
  slot.decay = decay;
  slot.warmup = warmup_steps;
  slot.owned = owns(name);
  if (!slot.owned) {
    params_[name] = std::move(slot);
    return;
  }
  if (needs_master(param)) slot.master = param.detach().to(torch::kFloat32, /*non_blocking=*/false, /*copy=*/true);
  const auto moment_options = param.options().dtype(options_.moment_dtype);
  slot.exp_avg = torch::zeros_like(param, moment_options, torch::MemoryFormat::Preserve);
  slot.exp_avg_sq = torch::zeros_like(param, moment_options, torch::MemoryFormat::Preserve);
  slot.decay = decay;
  slot.warmup = warmup_steps;
  params_[name] = std::move(slot);
}

void AdamW::remove_parameter(const std::string& name) { params_.erase(name); }

torch::Tensor AdamW::parameter(const std::string& name) const {
  const auto it = params_.find(name);
  if (it == params_.end()) fail("optimizer", "no parameter '" + name + "'");
  return it->second.param;
}

void AdamW::sync_master_from_parameter(const std::string& name) {
  const auto it = params_.find(name);
  if (it == params_.end() || !it->second.master.defined()) return;
  torch::NoGradGuard no_grad;
  it->second.master.copy_(it->second.param);
}

void AdamW::zero_grad() {
  for (auto& [_, slot] : params_) slot.param.mutable_grad() = torch::Tensor();
}

// Same operations as torch.optim.AdamW (foreach=False): decay, lerp of m, v, bias-corrected step. They
// run on the master where there is one, in its fp32; an fp32 parameter with fp32 moments takes exactly
// the operations it always did (bit-identical results).
std::map<std::string, double> AdamW::step(double lr, const std::vector<std::string>& measure_updates) {
  ++step_count_;
  torch::NoGradGuard no_grad;
  const std::set<std::string> measured(measure_updates.begin(), measure_updates.end());
  std::map<std::string, double> update_norms;
  for (auto& [name, slot] : params_) {
    const auto& param_grad = slot.param.grad();
    if (!param_grad.defined() || !slot.owned) continue;
    const auto before = measured.count(name) ? slot.param.detach().clone() : torch::Tensor();
    ++slot.steps;
    const double slot_lr =
        slot.warmup > 0 ? lr * std::min(1.0, static_cast<double>(slot.steps) / static_cast<double>(slot.warmup)) : lr;
    const double bc1 = 1.0 - std::pow(options_.beta1, static_cast<double>(slot.steps));
    const double bc2_sqrt = std::sqrt(1.0 - std::pow(options_.beta2, static_cast<double>(slot.steps)));
    const double step_size = slot_lr / bc1;
    auto& target = slot.master.defined() ? slot.master : slot.param;
    const auto type = target.scalar_type();
    const auto grad = param_grad.scalar_type() == type ? param_grad : param_grad.to(type);
    // Moments stored narrower than the update are widened for it (the update uses the unrounded new
    // values) and rounded back once for storage.
    const bool narrow_moments = slot.exp_avg.scalar_type() != type;
    auto exp_avg = narrow_moments ? slot.exp_avg.to(type) : slot.exp_avg;
    auto exp_avg_sq = narrow_moments ? slot.exp_avg_sq.to(type) : slot.exp_avg_sq;
    if (slot.decay && options_.weight_decay != 0.0) target.mul_(1.0 - slot_lr * options_.weight_decay);
    exp_avg.lerp_(grad, 1.0 - options_.beta1);
    exp_avg_sq.mul_(options_.beta2).addcmul_(grad, grad, 1.0 - options_.beta2);
    const auto denom = (exp_avg_sq.sqrt() / bc2_sqrt).add_(options_.eps);
    target.addcdiv_(exp_avg, denom, -step_size);
    if (narrow_moments) {
      slot.exp_avg.copy_(exp_avg);
      slot.exp_avg_sq.copy_(exp_avg_sq);
    }
    if (slot.master.defined()) slot.param.copy_(slot.master);
    if (before.defined()) update_norms[name] = (slot.param - before).to(torch::kFloat32).norm().item<double>();
  }
  return update_norms;
}

std::vector<std::string> AdamW::parameter_names() const {
  std::vector<std::string> names;
  for (const auto& [name, _] : params_) names.push_back(name);
  return names;
}

int64_t AdamW::numel() const {
  int64_t n = 0;
  for (const auto& [_, slot] : params_) n += slot.param.numel();
  return n;
}

int64_t AdamW::state_bytes() const {
  int64_t n = 0;
  for (const auto& [_, slot] : params_) n += bytes(slot.exp_avg) + bytes(slot.exp_avg_sq) + bytes(slot.master);
  return n;
}

std::vector<torch::Tensor> AdamW::parameter_state(const std::string& name) const {
  const auto it = params_.find(name);
  if (it == params_.end()) fail("optimizer", "no parameter '" + name + "'");
  const auto& slot = it->second;
  const auto counters = torch::TensorOptions().dtype(torch::kInt64).device(slot.param.device());
  if (!slot.owned) {
    const auto moments = slot.param.options().dtype(options_.moment_dtype);
    std::vector<torch::Tensor> parts{torch::zeros(slot.param.sizes(), moments), torch::zeros(slot.param.sizes(), moments)};
    if (needs_master(slot.param)) parts.push_back(torch::zeros(slot.param.sizes(), slot.param.options().dtype(torch::kFloat32)));
    parts.push_back(torch::zeros({1}, counters));
    parts.push_back(torch::zeros({1}, counters));
    return parts;
  }
  std::vector<torch::Tensor> parts{slot.exp_avg.detach(), slot.exp_avg_sq.detach()};
  if (slot.master.defined()) parts.push_back(slot.master.detach());
  parts.push_back(torch::tensor({slot.steps}, counters));
  parts.push_back(torch::tensor({slot.warmup}, counters));
  return parts;
}

io::NamedTensors AdamW::state_from(const std::map<std::string, std::vector<torch::Tensor>>& parameter_states) const {
  io::NamedTensors out;
  out.emplace_back("__step__", torch::tensor({step_count_}, torch::kInt64));
  for (const auto& [name, parts] : parameter_states) {
    const bool master = parts.size() == 5;
    out.emplace_back(name + ".exp_avg", parts[0].cpu());
    out.emplace_back(name + ".exp_avg_sq", parts[1].cpu());
    if (master) out.emplace_back(name + ".master", parts[2].cpu());
    out.emplace_back(name + ".step", parts[master ? 3 : 2].cpu());
    out.emplace_back(name + ".warmup", parts[master ? 4 : 3].cpu());
  }
  return out;
}

io::NamedTensors AdamW::state() const {
  std::map<std::string, std::vector<torch::Tensor>> parts;
  for (const auto& [name, slot] : params_)
    if (slot.owned) parts[name] = parameter_state(name);
  return state_from(parts);
}

void AdamW::load_state(const io::NamedTensors& state, const std::string& source) {
  std::map<std::string, torch::Tensor> by_name(state.begin(), state.end());
  const auto step = by_name.find("__step__");
  if (step == by_name.end()) fail(source, "tensor '__step__' missing from optimizer state");
  step_count_ = step->second.numel() == 1 ? step->second.item<int64_t>() : -1;
  if (step_count_ < 0) fail(source, "tensor '__step__': expected one non-negative count");
  torch::NoGradGuard no_grad;
  for (auto& [name, slot] : params_) {
    if (!slot.owned) continue;  // its owner loads it
    for (auto* part : {"exp_avg", "exp_avg_sq"}) {
      const auto it = by_name.find(name + "." + part);
      if (it == by_name.end()) fail(source, "tensor '" + name + "." + part + "' missing from optimizer state");
      auto& target = std::string(part) == "exp_avg" ? slot.exp_avg : slot.exp_avg_sq;
      if (it->second.sizes() != target.sizes())
        fail(source, "tensor '" + it->first + "': shape differs from the model");
      check_moment(it->second, it->first, std::string(part) == "exp_avg_sq", source);
      target.copy_(it->second);
    }
    if (slot.master.defined()) {
      const auto it = by_name.find(name + ".master");
      if (it == by_name.end())
        fail(source, "tensor '" + name + ".master' missing from optimizer state (the parameter is " +
                         dtype_text(slot.param.scalar_type()) + " and trains on an fp32 master copy)");
      if (it->second.sizes() != slot.master.sizes())
        fail(source, "tensor '" + it->first + "': shape differs from the model");
      if (it->second.scalar_type() != torch::kFloat32)
        fail(source,
             "tensor '" + it->first + "': dtype " + dtype_text(it->second.scalar_type()) + ", expected Float (fp32)");
      if (!torch::isfinite(it->second).all().item<bool>())
        fail(source, "tensor '" + it->first + "': holds NaN or Inf values");
      slot.master.copy_(it->second);
      slot.param.copy_(slot.master);
    }
    for (auto* counter : {"step", "warmup"}) {
      const auto it = by_name.find(name + "." + counter);
      if (it == by_name.end()) fail(source, "tensor '" + name + "." + counter + "' missing from optimizer state");
      const auto value = it->second.numel() == 1 ? it->second.item<int64_t>() : -1;
      if (value < 0) fail(source, "tensor '" + it->first + "': expected one non-negative count");
      (std::string(counter) == "step" ? slot.steps : slot.warmup) = value;
    }
  }
}

}  // namespace qkd::optim
