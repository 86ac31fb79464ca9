#include "qkd/freeze/signal_analysis.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "qkd/monitor/instability_detector.h"

namespace qkd::freeze {

namespace {

using monitor::median;

// Per group: squared gradient norm, weight norm squared and element count of one micro-batch.
struct GroupValues {
  double grad_sq = 0.0, weight_sq = 0.0;
  int64_t numel = 0;
};
using GroupKey = std::pair<int64_t, std::string>;  // (layer or -1, type)

std::map<GroupKey, GroupValues> group_values(const monitor::ProbeSample& sample, FreezeScope scope,
                                             const std::set<std::string>& candidates) {
  std::map<GroupKey, GroupValues> out;
  for (const auto& p : sample.projections) {
    if (!candidates.count(p.module)) continue;
    auto& g = out[{scope == FreezeScope::layer ? p.layer : -1, p.type}];
    g.grad_sq += p.grad_sq;
    g.weight_sq += p.weight_norm * p.weight_norm;
    g.numel += p.numel;
  }
  return out;
}

bool all_finite(const std::map<GroupKey, GroupValues>& groups) {
  return std::all_of(groups.begin(), groups.end(), [](const auto& g) { return std::isfinite(g.second.grad_sq); });
}

// r_g = grad_sq_g / median over g's pool (its layer under scope layer; every type under scope all).
std::map<GroupKey, double> ratios_to_pool_median(const std::map<GroupKey, GroupValues>& groups) {
  std::map<int64_t, std::vector<double>> pools;
  for (const auto& [key, g] : groups) pools[key.first].push_back(g.grad_sq);
  std::map<GroupKey, double> out;
  for (const auto& [key, g] : groups) {
    const double m = median(pools[key.first]);
    out[key] = m > 0.0 ? g.grad_sq / m : 0.0;
  }
  return out;
}

void add_activations(const monitor::ProbeSample& sample, std::map<int64_t, LayerActivation>& sums) {
  for (const auto& [layer, rms] : sample.attn_rms) sums[layer].attn_rms += rms;
  for (const auto& [layer, rms] : sample.mlp_rms) sums[layer].mlp_rms += rms;
}

}  // namespace

SignalAnalysis analyse_signal_propagation(const std::vector<monitor::ProbeSample>& samples, FreezeScope scope,
                                          double factor, double lr, const std::vector<std::string>& candidates) {
  SignalAnalysis a;
  a.factor = factor;
  a.lr = lr;
  const std::set<std::string> allowed(candidates.begin(), candidates.end());
  std::map<GroupKey, AnalysisGroup> groups;
  std::map<GroupKey, std::vector<double>> grad_sq;
  for (const auto& sample : samples) {
    const auto values = group_values(sample, scope, allowed);
    if (!all_finite(values)) {
      ++a.batches_skipped;
      continue;
    }
    ++a.batches_used;
    add_activations(sample, a.activations);
    for (const auto& [key, r] : ratios_to_pool_median(values)) {
      auto& g = groups[key];
      const auto& v = values.at(key);
      g.layer = key.first;
      g.type = key.second;
      g.ratio.push_back(r);
      g.outlier_batches += r > factor ? 1 : 0;
      g.first_update_ratio = v.weight_sq > 0.0 ? lr * std::sqrt(static_cast<double>(v.numel) / v.weight_sq) : 0.0;
      grad_sq[key].push_back(v.grad_sq);
    }
  }
  for (auto& [layer, act] : a.activations) {
    act.attn_rms /= static_cast<double>(a.batches_used);
    act.mlp_rms /= static_cast<double>(a.batches_used);
  }
  std::set<GroupKey> frozen;
  for (auto& [key, g] : groups) {
    g.grad_sq = median(grad_sq[key]);
    g.median_ratio = median(g.ratio);
    g.frozen = 2 * g.outlier_batches > a.batches_used;
    if (g.frozen) frozen.insert(key);
    a.groups.push_back(g);
  }
  for (const auto& p : samples.empty() ? std::vector<monitor::ProjectionProbe>{} : samples.front().projections)
    if (allowed.count(p.module) && frozen.count({scope == FreezeScope::layer ? p.layer : -1, p.type}))
      a.modules.push_back(p.module);
  return a;
}

std::vector<std::string> SignalAnalysis::frozen_types() const {
  std::set<std::string> types;
  for (const auto& g : groups)
    if (g.frozen) types.insert(g.type);
  return {types.begin(), types.end()};
}

std::string SignalAnalysis::summary() const {
  char head[160];
  std::snprintf(head, sizeof(head), "analysis of %lld micro-batches before the first update (lr %.3g): ",
                static_cast<long long>(batches_used), lr);
  std::string out;
  for (const auto& g : groups) {
    if (!g.frozen) continue;
    char part[96];
    std::snprintf(part, sizeof(part), "%s%s %.3gx",
                  g.layer >= 0 ? ("layer" + std::to_string(g.layer) + ".").c_str() : "", g.type.c_str(),
                  g.median_ratio);
    out += (out.empty() ? "" : ", ") + std::string(part);
  }
  char tail[96];
  std::snprintf(tail, sizeof(tail), " the median squared gradient norm (outlier above %.3gx on most micro-batches)",
                factor);
  return head + (out.empty() ? std::string("no outlier;") : out) + tail;
}

nlohmann::json SignalAnalysis::to_json() const {
  nlohmann::json groups_json = nlohmann::json::array();
  for (const auto& g : groups) {
    nlohmann::json j = {{"type", g.type},
                        {"grad_sq", g.grad_sq},
                        {"ratio_to_median", g.ratio},
                        {"median_ratio", g.median_ratio},
                        {"outlier_batches", g.outlier_batches},
                        {"first_update_ratio", g.first_update_ratio},
                        {"frozen", g.frozen}};
    if (g.layer >= 0) j["layer"] = g.layer;
    groups_json.push_back(j);
  }
  nlohmann::json activations_json = nlohmann::json::array();
  for (const auto& [layer, act] : activations)
    activations_json.push_back({{"layer", layer}, {"attn_rms", act.attn_rms}, {"mlp_rms", act.mlp_rms}});
  return {{"step", 0},
          {"kind", "analysis"},
          {"reason", summary()},
          {"factor", factor},
          {"lr", lr},
          {"batches_used", batches_used},
          {"batches_skipped", batches_skipped},
          {"groups", groups_json},
          {"activation_rms", activations_json},
          {"modules", modules}};
}

}  // namespace qkd::freeze
