#pragma once
// Names of what the monitor judges: a statistic of one projection in one layer, or the KD loss. Typed
// inside the program; `name()` is the text signal.jsonl, events.jsonl and checkpoints hold.
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

namespace qkd::monitor {

// The projection types of a LLaMA block, as Hugging Face names them.
const std::vector<std::string>& projection_types();
bool is_projection_type(const std::string& name);

enum class Statistic { grad_sq, kd_loss };

struct SeriesKey {
  int64_t layer = -1;      // -1 for the KD loss
  std::string projection;  // "v_proj"; empty for the KD loss
  Statistic statistic = Statistic::grad_sq;

  static SeriesKey gradient(int64_t layer, const std::string& projection) {
    return {layer, projection, Statistic::grad_sq};
  }
  static SeriesKey kd_loss() { return {-1, "", Statistic::kd_loss}; }

  std::string name() const;                         // "layer3.v_proj.grad_sq" | "kd_loss"
  static SeriesKey parse(const std::string& name);  // throws qkd::Error for anything name() cannot give
  bool operator<(const SeriesKey& o) const {
    return std::tie(layer, projection, statistic) < std::tie(o.layer, o.projection, o.statistic);
  }
  bool operator==(const SeriesKey& o) const {
    return layer == o.layer && projection == o.projection && statistic == o.statistic;
  }
};

}  // namespace qkd::monitor
