#include "qkd/monitor/monitor_config.h"

#include "qkd/common/error.h"
#include "qkd/common/json_fields.h"
#include "qkd/monitor/series_key.h"

namespace qkd::monitor {

MonitorConfig monitor_config_from_json(const nlohmann::json& json, const std::string& where) {
  FieldReader r(json, where);
  MonitorConfig c;
  c.enabled = r.boolean("enabled", c.enabled);
  c.interval = r.integer("interval", c.interval, 1, 1'000'000);
  c.spike_factor = r.number("spike_factor", c.spike_factor, 1.0, 1e6);
  c.window = r.integer("window", c.window, 1, 10'000);
  c.min_history = r.integer("min_history", c.min_history, 1, 10'000);
  c.loss_factor = r.number("loss_factor", c.loss_factor, 1.0, 1e6);
  r.finish();
  return c;
}

std::string freeze_mode_name(FreezeMode mode) {
  switch (mode) {
    case FreezeMode::none: return "none";
    case FreezeMode::ov: return "ov";
    case FreezeMode::automatic: return "auto";
    case FreezeMode::modules: return "modules";
  }
  return "?";
}

namespace {

FreezeMode parse_mode(const std::string& name) {
  for (auto mode : {FreezeMode::none, FreezeMode::ov, FreezeMode::automatic, FreezeMode::modules})
    if (freeze_mode_name(mode) == name) return mode;
  return FreezeMode::none;  // unreachable: one_of has checked the name
}

// auto judges series by projection type: anything else would be watched by nobody and freeze nothing.
void check_auto_watch(const std::vector<std::string>& watch, const std::string& where) {
  std::string known;
  for (const auto& t : projection_types()) known += (known.empty() ? "" : ", ") + t;
  for (size_t i = 0; i < watch.size(); ++i)
    if (!is_projection_type(watch[i]))
      fail(where + "[" + std::to_string(i) + "]",
           "\"" + watch[i] + "\" is not a projection type (expected one of " + known + ")");
  if (watch.empty()) fail(where, "empty: auto would watch nothing and never freeze");
}

}  // namespace

FreezeConfig freeze_config_from_json(const nlohmann::json& json, const std::string& where,
                                     std::vector<std::string>* ignored) {
  FieldReader r(json, where);
  FreezeConfig c;
  c.policy = parse_mode(r.one_of("policy", freeze_mode_name(c.policy), {"none", "ov", "auto", "modules"}));
  c.modules = r.strings("modules", c.modules);
  c.scope = r.one_of("scope", "all", {"layer", "all"}) == "layer" ? FreezeScope::layer : FreezeScope::all;
  c.auto_watch = r.strings("auto_watch", c.auto_watch);
  c.rollback = r.boolean("rollback", c.rollback);
  c.release_lr_factor = r.number("release_lr_factor", c.release_lr_factor, 0.0, 1.0);
  c.release_warmup_steps = r.integer("release_warmup_steps", c.release_warmup_steps, 0, 1'000'000);
  r.finish();
  if (c.policy == FreezeMode::modules && c.modules.empty())
    fail(where + ".modules", "policy \"modules\" needs at least one pattern");
  if (c.policy == FreezeMode::automatic) check_auto_watch(c.auto_watch, where + ".auto_watch");
  // Settings of another policy: harmless, but a run that sets them probably meant that policy.
  const auto note_unread = [&](const char* key, FreezeMode reader) {
    if (ignored && r.has(key) && c.policy != reader)
      ignored->push_back(r.path_of(key) + ": only read by policy " + freeze_mode_name(reader) + "; policy is " +
                         freeze_mode_name(c.policy));
  };
  note_unread("modules", FreezeMode::modules);
  for (const char* key : {"scope", "auto_watch", "rollback", "release_lr_factor", "release_warmup_steps"})
    note_unread(key, FreezeMode::automatic);
  return c;
}

nlohmann::json to_json(const MonitorConfig& c) {
  return {{"enabled", c.enabled}, {"interval", c.interval},       {"spike_factor", c.spike_factor},
          {"window", c.window},   {"min_history", c.min_history}, {"loss_factor", c.loss_factor}};
}

nlohmann::json to_json(const FreezeConfig& c) {
  return {{"policy", freeze_mode_name(c.policy)},
          {"modules", c.modules},
          {"scope", c.scope == FreezeScope::layer ? "layer" : "all"},
          {"auto_watch", c.auto_watch},
          {"rollback", c.rollback},
          {"release_lr_factor", c.release_lr_factor},
          {"release_warmup_steps", c.release_warmup_steps}};
}

}  // namespace qkd::monitor
