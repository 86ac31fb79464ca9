#include "qkd/optim/adamw.h"

#include <algorithm>
#include <cmath>

#include "qkd/common/error.h"

namespace qkd::optim {

namespace {
// fp64 parameters keep their own precision: an fp32 master would be a loss, not a gain.
bool reduced_precision(const torch::Tensor& param) {
  return param.scalar_type() == torch::kBFloat16 || param.scalar_type() == torch::kFloat16;
}

std::string dtype_text(torch::ScalarType type) { return c10::toString(type); }

int64_t bytes(const torch::Tensor& t) { return t.defined() ? t.numel() * static_cast<int64_t>(t.element_size()) : 0; }

const char* master_weights_name(MasterWeights mode) {
  switch (mode) {
    case MasterWeights::fp32: return "fp32";
    case MasterWeights::bf16_compensated: return "bf16_compensated";
    case MasterWeights::none: return "none";
  }
  return "?";
}
}  // namespace

AdamW::AdamW(AdamWOptions options) : options_(options) {
  const auto m = options_.moment_dtype;
  if (m != torch::kFloat32 && m != torch::kBFloat16 && m != torch::kChar)
    fail("optim.moment_dtype", "expected float32, bfloat16 or int8, got " + dtype_text(m));
}

bool AdamW::has_master(const torch::Tensor& param) const {
  return options_.master_weights == MasterWeights::fp32 && reduced_precision(param);
}

bool AdamW::has_compensation(const torch::Tensor& param) const {
  return options_.master_weights == MasterWeights::bf16_compensated && param.scalar_type() == torch::kBFloat16;
}

void AdamW::add_parameter(const std::string& name, torch::Tensor param, bool decay, int64_t warmup_steps) {
  torch::NoGradGuard no_grad;
  if (options_.master_weights == MasterWeights::bf16_compensated && param.scalar_type() == torch::kHalf)
    fail("optim.master_weights", "\"bf16_compensated\" keeps bfloat16 weights; parameter '" + name + "' is " +
                                     dtype_text(param.scalar_type()) + " (use fp32 master weights)");
  Slot slot;
  slot.param = param;
  slot.decay = decay;
  slot.warmup = warmup_steps;
  slot.owned = owns(name);
  if (!slot.owned) {
    params_[name] = std::move(slot);
    return;
  }
  if (has_master(param)) slot.master = param.detach().to(torch::kFloat32, /*non_blocking=*/false, /*copy=*/true);
  if (has_compensation(param)) slot.compensation = torch::zeros_like(param, torch::MemoryFormat::Contiguous);
  const auto storage = moment_storage(options_.moment_dtype, param.numel());
  slot.exp_avg = MomentBuffer(param, storage, /*is_signed=*/true);
  slot.exp_avg_sq = MomentBuffer(param, storage, /*is_signed=*/false);
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
  if (it == params_.end()) return;
  torch::NoGradGuard no_grad;
  if (it->second.master.defined()) it->second.master.copy_(it->second.param);
  if (it->second.compensation.defined()) it->second.compensation.zero_();
}

void AdamW::zero_grad() {
  for (auto& [_, slot] : params_) slot.param.mutable_grad() = torch::Tensor();
}

// Same operations as torch.optim.AdamW (foreach=False): decay, lerp of m, v, bias-corrected step. They
// run in fp32 on the master where there is one, on parameter + compensation, or on the widened
// parameter (none); an fp32 parameter with fp32 moments takes exactly the operations it always did
// (bit-identical results).
void AdamW::update(Slot& slot, const torch::Tensor& param_grad, const Piece& piece, const StepScalars& k) {
  // `whole`: the tensors as they are; otherwise flat elements [first, last) of each.
  const bool whole = piece.second < 0;
  auto part = [&](const torch::Tensor& t) { return whole ? t : t.view(-1).slice(0, piece.first, piece.second); };
  auto param = part(slot.param);
  // The fp32 value the update works on: the master, parameter + compensation (one fp32 temporary),
  // the widened parameter (none), or an fp32/fp64 parameter itself.
  torch::Tensor target;
  if (slot.master.defined())
    target = part(slot.master);
  else if (slot.compensation.defined())
    target = param.to(torch::kFloat32).add_(part(slot.compensation).to(torch::kFloat32));
  else
    target = reduced_precision(slot.param) ? param.to(torch::kFloat32) : param;
  const auto type = target.scalar_type();
  const auto grad_part = whole ? param_grad : param_grad.reshape(-1).slice(0, piece.first, piece.second);
  const auto grad = grad_part.scalar_type() == type ? grad_part : grad_part.to(type);
  // Moments stored narrower than the update are widened for it (the update uses the unrounded new
  // values) and rounded back once for storage.
  auto exp_avg = whole ? slot.exp_avg.values(type) : slot.exp_avg.values(type, piece);
  auto exp_avg_sq = whole ? slot.exp_avg_sq.values(type) : slot.exp_avg_sq.values(type, piece);
  if (slot.decay && options_.weight_decay != 0.0) target.mul_(1.0 - k.lr * options_.weight_decay);
  exp_avg.lerp_(grad, 1.0 - options_.beta1);
  exp_avg_sq.mul_(options_.beta2).addcmul_(grad, grad, 1.0 - options_.beta2);
  const auto denom = (exp_avg_sq.sqrt() / k.bc2_sqrt).add_(options_.eps);
  target.addcdiv_(exp_avg, denom, -k.step_size);
  if (whole) {
    slot.exp_avg.store(exp_avg);
    slot.exp_avg_sq.store(exp_avg_sq);
  } else {
    slot.exp_avg.store(exp_avg, piece);
    slot.exp_avg_sq.store(exp_avg_sq, piece);
  }
  if (!target.is_same(param)) param.copy_(target);  // rounded to nearest
  // Kahan: the part of the exact value the rounded parameter lacks (exact in fp32), kept in bf16.
  if (slot.compensation.defined()) part(slot.compensation).copy_(target.sub_(param.to(torch::kFloat32)));
}

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
    StepScalars k;
    k.lr =
        slot.warmup > 0 ? lr * std::min(1.0, static_cast<double>(slot.steps) / static_cast<double>(slot.warmup)) : lr;
    const double bc1 = 1.0 - std::pow(options_.beta1, static_cast<double>(slot.steps));
    k.bc2_sqrt = std::sqrt(1.0 - std::pow(options_.beta2, static_cast<double>(slot.steps)));
    k.step_size = k.lr / bc1;
    const int64_t n = slot.param.numel();
    if (n <= kUpdatePiece || !slot.param.is_contiguous()) {
      update(slot, param_grad, {0, -1}, k);
    } else {
      for (int64_t first = 0; first < n; first += kUpdatePiece)
        update(slot, param_grad, {first, std::min(n, first + kUpdatePiece)}, k);
    }
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
  for (const auto& [_, slot] : params_)
    n += slot.exp_avg.bytes() + slot.exp_avg_sq.bytes() + bytes(slot.master) + bytes(slot.compensation);
  return n;
}

ParameterState AdamW::parameter_state(const std::string& name) const {
  const auto it = params_.find(name);
  if (it == params_.end()) fail("optimizer", "no parameter '" + name + "'");
  const auto& slot = it->second;
  const auto counters = torch::TensorOptions().dtype(torch::kInt64).device(slot.param.device());
  ParameterState parts;
  auto add = [&parts](const ParameterState& more) { parts.insert(parts.end(), more.begin(), more.end()); };
  if (!slot.owned) {
    const auto storage = moment_storage(options_.moment_dtype, slot.param.numel());
    add(MomentBuffer::empty_state("exp_avg", slot.param, storage));
    add(MomentBuffer::empty_state("exp_avg_sq", slot.param, storage));
    if (has_master(slot.param))
      parts.emplace_back("master", torch::zeros(slot.param.sizes(), slot.param.options().dtype(torch::kFloat32)));
    if (has_compensation(slot.param))
      parts.emplace_back("compensation", torch::zeros(slot.param.sizes(), slot.param.options()));
    parts.emplace_back("step", torch::zeros({1}, counters));
    parts.emplace_back("warmup", torch::zeros({1}, counters));
    return parts;
  }
  add(slot.exp_avg.state("exp_avg"));
  add(slot.exp_avg_sq.state("exp_avg_sq"));
  if (slot.master.defined()) parts.emplace_back("master", slot.master.detach());
  if (slot.compensation.defined()) parts.emplace_back("compensation", slot.compensation.detach());
  parts.emplace_back("step", torch::tensor({slot.steps}, counters));
  parts.emplace_back("warmup", torch::tensor({slot.warmup}, counters));
  return parts;
}

io::NamedTensors AdamW::state_from(const std::map<std::string, ParameterState>& parameter_states) const {
  io::NamedTensors out;
  out.emplace_back("__step__", torch::tensor({step_count_}, torch::kInt64));
  for (const auto& [name, parts] : parameter_states)
    for (const auto& [part, tensor] : parts) out.emplace_back(name + "." + part, tensor.cpu());
  return out;
}

io::NamedTensors AdamW::state() const {
  std::map<std::string, ParameterState> parts;
  for (const auto& [name, slot] : params_)
    if (slot.owned) parts[name] = parameter_state(name);
  return state_from(parts);
}

// The exact value of a bf16/fp16 parameter, from whichever of master or compensation the state holds
// (the parameter itself already holds the model file's weights).
void AdamW::load_master(Slot& slot, const std::string& name, const std::map<std::string, torch::Tensor>& by_name,
                        const std::string& source) {
  const auto master = by_name.find(name + ".master");
  const auto compensation = by_name.find(name + ".compensation");
  auto check = [&](const std::map<std::string, torch::Tensor>::const_iterator& it, torch::Dtype dtype,
                   const char* what) {
    if (it->second.sizes() != slot.param.sizes())
      fail(source, "tensor '" + it->first + "': shape differs from the model");
    if (it->second.scalar_type() != dtype)
      fail(source, "tensor '" + it->first + "': dtype " + dtype_text(it->second.scalar_type()) + ", expected " +
                       dtype_text(dtype) + " (" + what + ")");
  };
  if (master != by_name.end()) {
    check(master, torch::kFloat32, "fp32");
    if (!torch::isfinite(master->second).all().item<bool>())
      fail(source, "tensor '" + master->first + "': holds NaN or Inf values");
  }
  if (compensation != by_name.end()) check(compensation, torch::kBFloat16, "the bf16 compensation");
  if (slot.master.defined()) {
    if (master != by_name.end()) {
      slot.master.copy_(master->second);
    } else if (compensation != by_name.end()) {
      slot.master.copy_(
          slot.param.to(torch::kFloat32).add_(compensation->second.to(slot.param.device()).to(torch::kFloat32)));
    } else {
      fail(source, "tensor '" + name + ".master' missing from optimizer state (the parameter is " +
                       dtype_text(slot.param.scalar_type()) + " and trains on an fp32 master copy)");
    }
    slot.param.copy_(slot.master);
  } else if (slot.compensation.defined()) {
    if (compensation != by_name.end()) {
      slot.compensation.copy_(compensation->second);
    } else if (master != by_name.end()) {
      auto exact = master->second.to(slot.param.device());
      slot.param.copy_(exact);
      slot.compensation.copy_(exact.sub(slot.param.to(torch::kFloat32)));
    } else {
      fail(source, "tensor '" + name + ".compensation' missing from optimizer state (optim.master_weights is " +
                       master_weights_name(options_.master_weights) + ")");
    }
  } else if (master != by_name.end() && reduced_precision(slot.param)) {
    slot.param.copy_(master->second);  // none: the saved master, rounded
  }
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
    slot.exp_avg.load(name + ".exp_avg", by_name, source);
    slot.exp_avg_sq.load(name + ".exp_avg_sq", by_name, source);
    load_master(slot, name, by_name, source);
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
