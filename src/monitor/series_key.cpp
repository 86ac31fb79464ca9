#include "qkd/monitor/series_key.h"

#include <algorithm>
#include <regex>

#include "qkd/common/error.h"

namespace qkd::monitor {

const std::vector<std::string>& projection_types() {
  static const std::vector<std::string> types = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                 "gate_proj", "up_proj", "down_proj"};
  return types;
}

bool is_projection_type(const std::string& name) {
  const auto& types = projection_types();
  return std::find(types.begin(), types.end(), name) != types.end();
}

std::string SeriesKey::name() const {
  if (statistic == Statistic::kd_loss) return "kd_loss";
  return "layer" + std::to_string(layer) + "." + projection + ".grad_sq";
}

SeriesKey SeriesKey::parse(const std::string& name) {
  if (name == "kd_loss") return kd_loss();
  static const std::regex pattern("layer(\\d{1,6})\\.([a-z_]+)\\.grad_sq");
  std::smatch m;
  if (!std::regex_match(name, m, pattern) || !is_projection_type(m[2].str()))
    fail("series", "\"" + name + "\" is not a monitor series (layerN.<projection>.grad_sq or kd_loss)");
  return gradient(std::stoll(m[1].str()), m[2].str());
}

}  // namespace qkd::monitor
