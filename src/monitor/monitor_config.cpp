#include "qkd/monitor/monitor_config.h"

#include "qkd/common/error.h"
#include "qkd/common/json_fields.h"

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

FreezeConfig freeze_config_from_json(const nlohmann::json& json, const std::string& where) {
  FieldReader r(json, where);
  FreezeConfig c;
  c.policy = r.one_of("policy", c.policy, {"none", "ov", "auto", "modules"});
  c.modules = r.strings("modules", c.modules);
  c.scope = r.one_of("scope", c.scope, {"layer", "all"});
  c.auto_watch = r.strings("auto_watch", c.auto_watch);
  c.rollback = r.boolean("rollback", c.rollback);
  c.release_lr_factor = r.number("release_lr_factor", c.release_lr_factor, 0.0, 1.0);
  c.release_warmup_steps = r.integer("release_warmup_steps", c.release_warmup_steps, 0, 1'000'000);
  r.finish();
  if (c.policy == "modules" && c.modules.empty()) fail(where + ".modules", "policy \"modules\" needs at least one pattern");
  return c;
}

nlohmann::json to_json(const MonitorConfig& c) {
  return {{"enabled", c.enabled}, {"interval", c.interval}, {"spike_factor", c.spike_factor},
          {"window", c.window},   {"min_history", c.min_history}, {"loss_factor", c.loss_factor}};
}

nlohmann::json to_json(const FreezeConfig& c) {
  return {{"policy", c.policy}, {"modules", c.modules}, {"scope", c.scope}, {"auto_watch", c.auto_watch},
          {"rollback", c.rollback}, {"release_lr_factor", c.release_lr_factor},
          {"release_warmup_steps", c.release_warmup_steps}};
}

}  // namespace qkd::monitor
