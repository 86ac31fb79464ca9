#pragma once
// The `freeze` section of a run config: which projections stop training, and when.
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "qkd/common/config_fields.h"
#include "qkd/monitor/monitor_config.h"

namespace qkd::freeze {

// none | ov (o_proj+v_proj from step 0) | auto (monitor-triggered) | modules (freeze.modules)
enum class FreezeMode { none, ov, automatic, modules };
const EnumTable<FreezeMode>& freeze_modes();  // "none" | "ov" | "auto" | "modules"
// auto: freeze the watched projections of the spiking layer only, or of all layers.
enum class FreezeScope { layer, all };
const EnumTable<FreezeScope>& freeze_scopes();  // "layer" | "all"

struct FreezeConfig {
  FreezeMode policy = FreezeMode::none;
  std::vector<std::string> modules;  // policy "modules": substrings of module names, e.g. "v_proj"
  FreezeScope scope = FreezeScope::all;
  // auto: projection types (monitor::projection_types()) whose gradient spikes trigger, and which it
  // freezes.
  std::vector<std::string> auto_watch = {"o_proj", "v_proj"};
  // auto: a triggered projection goes back to its weights from the last judged step whose gradients
  // were unremarkable, and the step that saw the spike applies no update (its gradients were computed
  // at the destabilized point).
  bool rollback = true;
  // auto: release (unfreeze) a triggered projection once the learning rate has decayed to this
  // fraction of its value at the freeze, so o/v still fine-tune at low learning rates; 0 keeps it frozen.
  // 0.25 measured best of 0 / 0.1 / 0.25 / 0.5 in the CPU ablation (docs/ablation.md).
  double release_lr_factor = 0.25;
  // auto: a released projection's learning rate ramps up over this many of its updates.
  int64_t release_warmup_steps = 0;
  // auto: a frozen projection is released only once this many consecutive steps in a row raised no
  // instability event (no gradient spike, nothing non-finite, no KD-loss rise): the run has absorbed
  // the last shock before another projection starts moving.
  int64_t release_calm_steps = 0;
  // auto: micro-batches of the training stream whose gradients the signal-propagation analysis measures
  // before the first update (signal_analysis.h); the outliers start frozen. 0: no analysis, auto only
  // reacts to spikes.
  int64_t analysis_batches = 4;
  // auto: a projection type (scope all; a projection within its layer, scope layer) is an outlier when
  // its squared gradient norm exceeds this multiple of the median on most analysis micro-batches.
  double analysis_factor = 2.0;

  template <class Fields>
  void fields(Fields& f) {
    f.choice("policy", policy, freeze_modes());
    f.texts("modules", modules);
    f.choice("scope", scope, freeze_scopes());
    f.texts("auto_watch", auto_watch);
    f.flag("rollback", rollback);
    f.number("release_lr_factor", release_lr_factor, 0.0, 1.0);
    f.integer("release_warmup_steps", release_warmup_steps, 0, 1'000'000);
    f.integer("release_calm_steps", release_calm_steps, 0, 1'000'000);
    f.integer("analysis_batches", analysis_batches, 0, 10'000);
    f.number("analysis_factor", analysis_factor, 1.0, 1e6);
  }
  void check(const std::string& path) const;
};

// Keys the chosen policy does not read (freeze.scope with policy ov, say) are accepted, and each adds
// a line to `ignored` ("freeze.scope: only read by policy auto; policy is ov") when given.
FreezeConfig freeze_config_from_json(const nlohmann::json& json, const std::string& where = "freeze",
                                     std::vector<std::string>* ignored = nullptr);
inline nlohmann::json to_json(const FreezeConfig& config) { return write_section(config); }

// auto acts on the monitor's judgements: fails naming freeze.policy when the monitor is off.
void check_monitor_for(const FreezeConfig& freeze, const monitor::MonitorConfig& monitor);

}  // namespace qkd::freeze
