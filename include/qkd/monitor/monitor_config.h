#pragma once
// The `monitor` and `freeze` sections of a run config.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace qkd::monitor {

struct MonitorConfig {
  bool enabled = true;
  int64_t interval = 10;      // steps between measurements (other steps cost nothing)
  double spike_factor = 3.0;  // spike: value > spike_factor x rolling median of the series
  int64_t window = 8;         // rolling median over this many previous measurements
  // Measurements needed before spikes are judged. One is enough: without warm-up the first update is
  // what destabilizes o/v, and the step-2 gradients are the first chance to see it (docs/ablation.md).
  int64_t min_history = 1;
  double loss_factor = 2.0;  // KD-loss rise over its running minimum that counts as instability
};

// none | ov (o_proj+v_proj from step 0) | auto (monitor-triggered) | modules (freeze.modules)
enum class FreezeMode { none, ov, automatic, modules };
std::string freeze_mode_name(FreezeMode mode);  // "none" | "ov" | "auto" | "modules"
// auto: freeze the watched projections of the spiking layer only, or of all layers.
enum class FreezeScope { layer, all };

struct FreezeConfig {
  FreezeMode policy = FreezeMode::none;
  std::vector<std::string> modules;  // policy "modules": substrings of module names, e.g. "v_proj"
  FreezeScope scope = FreezeScope::all;
  // auto: projection types (projection_types()) whose gradient spikes trigger, and which it freezes.
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
};

MonitorConfig monitor_config_from_json(const nlohmann::json& json, const std::string& where = "monitor");
// Keys the chosen policy does not read (freeze.scope with policy ov, say) are accepted, and each adds
// a line to `ignored` ("freeze.scope: only read by policy auto; policy is ov") when given.
FreezeConfig freeze_config_from_json(const nlohmann::json& json, const std::string& where = "freeze",
                                     std::vector<std::string>* ignored = nullptr);
nlohmann::json to_json(const MonitorConfig& config);
nlohmann::json to_json(const FreezeConfig& config);

}  // namespace qkd::monitor
