#pragma once
// The global torch generator state, as JSON, so a resumed run draws the same random numbers.
#include <nlohmann/json.hpp>

namespace qkd::train {

nlohmann::json capture_rng_state();
void restore_rng_state(const nlohmann::json& state);

}  // namespace qkd::train
