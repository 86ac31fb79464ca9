#include "qkd/monitor/signal_monitor.h"

#include <regex>

namespace qkd::monitor {

namespace {
struct ProjectionRef {
  std::string module;  // "model.layers.3.self_attn.v_proj"
  int64_t layer;
  std::string type;
  model::Linear linear;
};

// "model.layers.3.self_attn.v_proj" -> {3, "v_proj"}; layer -1 for modules outside the blocks.
std::pair<int64_t, std::string> parse_projection(const std::string& module) {
  static const std::regex pattern("model\\.layers\\.(\\d+)\\.(self_attn|mlp)\\.([a-z_]+)");
  std::smatch m;
  if (!std::regex_match(module, m, pattern)) return {-1, ""};
  return {std::stoll(m[1].str()), m[3].str()};
}

std::vector<ProjectionRef> projections(model::LlamaForCausalLMImpl& model) {
  std::vector<ProjectionRef> out;
  for (auto& [name, linear] : model.named_linears()) {
    auto [layer, type] = parse_projection(name);
    if (layer >= 0) out.push_back({name, layer, type, linear});
  }
  return out;
}

std::string weight_name(const ProjectionRef& p) { return p.module + ".weight"; }
SeriesKey gradient_series(const ProjectionRef& p) { return SeriesKey::gradient(p.layer, p.type); }

nlohmann::json& layer_entry(nlohmann::json& layers, int64_t layer) {
  while (static_cast<int64_t>(layers.size()) <= layer)
    layers.push_back({{"layer", static_cast<int64_t>(layers.size())}});
  return layers[layer];
}

double relative_quant_error(model::LinearImpl& linear) {
  if (!linear.weight_quantizer()) return 0.0;
  const auto w = linear.weight.detach().to(torch::kFloat32);
  const auto q = linear.weight_quantizer()->fake_quantize(linear.weight.detach()).to(torch::kFloat32);
  const double norm = w.norm().item<double>();
  return norm > 0 ? (w - q).norm().item<double>() / norm : 0.0;
}
}  // namespace

// Accumulates the RMS of block outputs on measured steps (summed over micro-batches).
struct SignalMonitor::Observer : model::ActivationObserver {
  std::map<std::pair<int64_t, std::string>, std::pair<double, int64_t>> sums;
  void observe(int64_t layer, const char* site, const torch::Tensor& output) override {
    const double rms = output.detach().to(torch::kFloat32).pow(2).mean().sqrt().item<double>();
    auto& s = sums[{layer, site}];
    s.first += rms;
    s.second += 1;
  }
};

SignalMonitor::SignalMonitor(MonitorConfig config, model::LlamaForCausalLM student)
    : config_(config), student_(student), detector_(config), observer_(std::make_unique<Observer>()) {}

SignalMonitor::~SignalMonitor() { student_->set_activation_observer(nullptr); }

// Steps count from 1, so the first update (the "step-0 gradients" of the literature) is always measured.
bool SignalMonitor::measures(int64_t step) const { return config_.enabled && (step - 1) % config_.interval == 0; }

void SignalMonitor::begin_step(int64_t step) {
  measuring_ = measures(step);
  if (!measuring_) return;
  observer_->sums.clear();
  pending_ = nlohmann::json::array();
  student_->set_activation_observer(observer_.get());
}

bool SignalMonitor::judges(int64_t step) const { return measures(step) || (config_.enabled && !watched_.empty()); }

double SignalMonitor::gradient_sq(model::LinearImpl& linear, const SeriesKey& series) {
  const auto& grad = linear.weight.grad();
  double grad_sq = grad.defined() ? grad.to(torch::kFloat64).pow(2).sum().item<double>() : 0.0;
  const auto injected = injected_.find(series);
  if (injected != injected_.end()) {
    grad_sq *= injected->second;
    injected_.erase(injected);
  }
  return grad_sq;
}

std::vector<InstabilityEvent> SignalMonitor::judge_gradients(int64_t step, double kd_loss) {
  std::vector<InstabilityEvent> events;
  detector_.observe_loss(step, kd_loss, events);
  torch::NoGradGuard no_grad;
  if (!measuring_) {  // between measurements only the watched series, one reduction per weight
    if (!judges(step)) return events;
    std::vector<SeriesKey> keys;
    std::vector<double> values;
    for (auto& p : projections(*student_)) {
      if (!p.linear->weight.requires_grad() || !watched_.count(p.type)) continue;
      keys.push_back(gradient_series(p));
      values.push_back(gradient_sq(*p.linear, keys.back()));
    }
    if (reduce_) reduce_(values);
    for (size_t i = 0; i < keys.size(); ++i) detector_.observe(step, keys[i], values[i], events);
    return events;
  }
  student_->set_activation_observer(nullptr);
  norm_before_.clear();
  // Gradient squares of every projection, then the activation RMS values: the statistics the ranks
  // average before anything is judged or logged.
  auto refs = projections(*student_);
  std::vector<double> values;
  for (auto& p : refs) values.push_back(gradient_sq(*p.linear, gradient_series(p)));
  for (const auto& [key, sum] : observer_->sums) values.push_back(sum.first / sum.second);
  if (reduce_) reduce_(values);
  size_t next = 0;
  for (auto& p : refs) {
    auto& entry = layer_entry(pending_, p.layer);
    const double grad_sq = values[next++];
    const double weight_norm = p.linear->weight.detach().to(torch::kFloat32).norm().item<double>();
    entry["grad_sq"][p.type] = grad_sq;
    entry["weight_norm"][p.type] = weight_norm;
    if (!p.linear->weight.requires_grad()) continue;  // frozen: no gradient, nothing to judge
    norm_before_[weight_name(p)] = weight_norm;
    detector_.observe(step, gradient_series(p), grad_sq, events);
  }
  for (const auto& [key, sum] : observer_->sums)
    layer_entry(pending_, key.first)[key.second == "attn_out" ? "attn_rms" : "mlp_rms"] = values[next++];
  return events;
}

std::vector<std::string> SignalMonitor::updates_wanted() const {
  std::vector<std::string> names;
  if (!measuring_) return names;
  for (const auto& [name, _] : norm_before_) names.push_back(name);
  return names;
}

void SignalMonitor::abandon_step() {
  student_->set_activation_observer(nullptr);
  measuring_ = false;
  norm_before_.clear();
}

nlohmann::json SignalMonitor::end_step(int64_t step, const std::map<std::string, double>& update_norms) {
  if (!measuring_) return nullptr;
  measuring_ = false;
  torch::NoGradGuard no_grad;
  nlohmann::json totals = nlohmann::json::object();
  for (auto& p : projections(*student_)) {
    auto& entry = layer_entry(pending_, p.layer);
    const auto name = weight_name(p);
    const auto before = norm_before_.find(name);
    const auto update = update_norms.find(name);
    const bool updated = before != norm_before_.end() && update != update_norms.end() && before->second > 0;
    entry["update_ratio"][p.type] = updated ? update->second / before->second : 0.0;
    entry["quant_error"][p.type] = relative_quant_error(*p.linear);
    totals[p.type] = totals.value(p.type, 0.0) + entry["grad_sq"][p.type].get<double>();
  }
  norm_before_.clear();
  return {{"step", step}, {"layers", pending_}, {"total_grad_sq", totals}};
}

ProbeSample SignalMonitor::probe(const std::function<void()>& pass) {
  observer_->sums.clear();
  student_->set_activation_observer(observer_.get());
  try {
    pass();
  } catch (...) {
    student_->set_activation_observer(nullptr);
    throw;
  }
  student_->set_activation_observer(nullptr);
  torch::NoGradGuard no_grad;
  auto refs = projections(*student_);
  // The same order of statistics on every rank: gradient squares, then the activation RMS values.
  std::vector<double> values;
  for (auto& p : refs) {
    const auto& grad = p.linear->weight.grad();
    values.push_back(grad.defined() ? grad.to(torch::kFloat64).pow(2).sum().item<double>() : 0.0);
  }
  for (const auto& [key, sum] : observer_->sums) values.push_back(sum.first / sum.second);
  if (reduce_) reduce_(values);
  ProbeSample sample;
  size_t next = 0;
  for (auto& p : refs) {
    const auto weight = p.linear->weight.detach();
    sample.projections.push_back(
        {p.module, p.layer, p.type, values[next++], weight.to(torch::kFloat32).norm().item<double>(), weight.numel()});
  }
  for (const auto& [key, sum] : observer_->sums)
    (key.second == "attn_out" ? sample.attn_rms : sample.mlp_rms)[key.first] = values[next++];
  return sample;
}

void SignalMonitor::forget(const std::vector<std::string>& modules) {
  for (const auto& module : modules) {
    const auto [layer, type] = parse_projection(module);
    if (layer >= 0) detector_.forget(layer, type);
  }
}

}  // namespace qkd::monitor
