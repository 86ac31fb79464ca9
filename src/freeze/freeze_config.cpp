#include "qkd/freeze/freeze_config.h"

#include "qkd/common/error.h"
#include "qkd/monitor/series_key.h"

namespace qkd::freeze {

const EnumTable<FreezeMode>& freeze_modes() {
  static const EnumTable<FreezeMode> table{
      {FreezeMode::none, "none"}, {FreezeMode::ov, "ov"}, {FreezeMode::automatic, "auto"}, {FreezeMode::modules, "modules"}};
  return table;
}

const EnumTable<FreezeScope>& freeze_scopes() {
  static const EnumTable<FreezeScope> table{{FreezeScope::layer, "layer"}, {FreezeScope::all, "all"}};
  return table;
}

namespace {
// auto judges series by projection type: anything else would be watched by nobody and freeze nothing.
void check_auto_watch(const std::vector<std::string>& watch, const std::string& where) {
  std::string known;
  for (const auto& t : monitor::projection_types()) known += (known.empty() ? "" : ", ") + t;
  for (size_t i = 0; i < watch.size(); ++i)
    if (!monitor::is_projection_type(watch[i]))
      fail(where + "[" + std::to_string(i) + "]",
           "\"" + watch[i] + "\" is not a projection type (expected one of " + known + ")");
  if (watch.empty()) fail(where, "empty: auto would watch nothing and never freeze");
}
}  // namespace

void FreezeConfig::check(const std::string& path) const {
  if (policy == FreezeMode::modules && modules.empty())
    fail(path + ".modules", "policy \"modules\" needs at least one pattern");
  if (policy == FreezeMode::automatic) check_auto_watch(auto_watch, path + ".auto_watch");
}

void check_monitor_for(const FreezeConfig& freeze, const monitor::MonitorConfig& monitor) {
  if (freeze.policy == FreezeMode::automatic && !monitor.enabled)
    fail("freeze.policy", "\"auto\" needs the monitor (monitor.enabled true)");
}

FreezeConfig freeze_config_from_json(const nlohmann::json& json, const std::string& where,
                                     std::vector<std::string>* ignored) {
  const auto c = read_section<FreezeConfig>(json, where);
  if (!ignored || !json.is_object()) return c;
  // Settings of another policy: harmless, but a run that sets them probably meant that policy.
  const auto note_unread = [&](const char* key, FreezeMode reader) {
    if (json.contains(key) && !json.at(key).is_null() && c.policy != reader)
      ignored->push_back(where + "." + key + ": only read by policy " + freeze_modes().name(reader) + "; policy is " +
                         freeze_modes().name(c.policy));
  };
  note_unread("modules", FreezeMode::modules);
  for (const char* key : {"scope", "auto_watch", "rollback", "release_lr_factor", "release_warmup_steps",
                          "release_calm_steps", "analysis_batches", "analysis_factor"})
    note_unread(key, FreezeMode::automatic);
  return c;
}

}  // namespace qkd::freeze
