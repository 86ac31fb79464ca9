#include "qkd/freeze/freeze_policy.h"

#include <regex>

#include "qkd/common/error.h"

namespace qkd::freeze {

using monitor::EventKind;
using monitor::Statistic;

namespace {
int64_t layer_of(const std::string& module) {
  static const std::regex pattern("model\\.layers\\.(\\d+)\\..*");
  std::smatch m;
  return std::regex_match(module, m, pattern) ? std::stoll(m[1].str()) : -1;
}
}  // namespace

FreezePolicy::FreezePolicy(FreezeConfig config, std::vector<std::string> modules)
    : config_(std::move(config)), modules_(std::move(modules)) {}

std::vector<std::string> FreezePolicy::matching(const std::vector<std::string>& patterns, int64_t layer) const {
  std::vector<std::string> out;
  for (const auto& module : modules_) {
    if (layer >= 0 && layer_of(module) != layer) continue;
    for (const auto& p : patterns)
      if (module.find(p) != std::string::npos) {
        out.push_back(module);
        break;
      }
  }
  return out;
}

void FreezePolicy::check_reaches_modules() const {
  if (config_.policy == FreezeMode::ov && initial().empty())
    fail("freeze.policy", "\"ov\" would freeze nothing: no o_proj or v_proj is quantized (see quant.modules)");
  if (config_.policy == FreezeMode::automatic && watched_modules().empty())
    fail("freeze.auto_watch", "no watched projection is quantized (see quant.modules): auto would never freeze");
}

std::vector<std::string> FreezePolicy::watched_every_step() const {
  return config_.policy == FreezeMode::automatic ? config_.auto_watch : std::vector<std::string>{};
}

std::vector<std::string> FreezePolicy::initial() const {
  if (config_.policy == FreezeMode::ov) return matching({"self_attn.o_proj", "self_attn.v_proj"}, -1);
  if (config_.policy == FreezeMode::modules) {
    auto out = matching(config_.modules, -1);
    if (out.empty()) fail("freeze.modules", "no quantized module matches any pattern");
    return out;
  }
  return {};
}

std::vector<std::string> FreezePolicy::react(const std::vector<monitor::InstabilityEvent>& events,
                                             const std::set<std::string>& frozen,
                                             const std::vector<std::string>& watch) const {
  if (config_.policy != FreezeMode::automatic) return {};
  std::set<std::string> chosen;
  for (const auto& e : events) {
    if (e.kind != EventKind::spike && e.kind != EventKind::nonfinite) continue;
    if (e.series.statistic != Statistic::grad_sq) continue;
    bool watched = false;
    for (const auto& w : watch) watched |= w == e.series.projection;
    if (!watched) continue;
    for (const auto& m : matching(watch, config_.scope == FreezeScope::layer ? e.series.layer : -1))
      if (!frozen.count(m)) chosen.insert(m);
  }
  return {chosen.begin(), chosen.end()};
}

std::vector<std::string> FreezePolicy::rollback_candidates(const std::set<std::string>& frozen,
                                                           const std::vector<std::string>& watch) const {
  if (!rolls_back()) return {};
  std::vector<std::string> out;
  for (const auto& m : matching(watch, -1))
    if (!frozen.count(m)) out.push_back(m);
  return out;
}

}  // namespace qkd::freeze
