#pragma once
// What a student quantizes and how. One flat struct that maps one to one onto the "quant" section of
// a run configuration and onto the quantization.json stored in a student checkpoint directory.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "qkd/common/enum_table.h"

namespace qkd::quant {

enum class Granularity { per_channel, per_group, per_tensor };
enum class RangeMethod { minmax, search };
enum class ScalePolicy { dynamic, fixed };  // config names "dynamic" | "static"
enum class ActRangeMethod { minmax, percentile };
const EnumTable<Granularity>& granularities();         // "per_channel" | "per_group" | "per_tensor"
const EnumTable<RangeMethod>& range_methods();         // "minmax" | "search"
const EnumTable<ScalePolicy>& scale_policies();        // "dynamic" | "static"
const EnumTable<ActRangeMethod>& act_range_methods();  // "minmax" | "percentile"

// The number format of the weight grid: integers with a float scale per channel/group/tensor, or a
// 4-bit float format (E2M1 values) whose block size and scale encoding the format fixes (fp4_grid.h).
enum class WeightFormat { integer, nvfp4, mxfp4 };
const EnumTable<WeightFormat>& weight_formats();  // "int" | "nvfp4" | "mxfp4"

inline bool is_fp4(WeightFormat format) { return format != WeightFormat::integer; }
// Values sharing one block scale, as the format fixes it: 16 (NVFP4), 32 (MXFP4); 0 for int.
int64_t fp4_group_size(WeightFormat format);

struct QuantSpec {
  // Weights.
  // The number format; an fp4 one fixes bits 4, symmetric and per_group of its block size.
  WeightFormat format = WeightFormat::integer;

  int64_t bits = 4;                                    // 2..8
  Granularity granularity = Granularity::per_channel;  // rows of W [out, in] / groups along `in` / whole tensor
  int64_t group_size = 128;                            // per_group only; must divide each layer's in_features
  bool symmetric = true;                               // levels -2^(b-1)..2^(b-1)-1, else 0..2^b-1 with zero point
  RangeMethod range = RangeMethod::minmax;             // min-max, or clipping-ratio search minimizing squared error
  std::vector<double> search_grid;                     // clipping ratios in (0, 1]; empty: 0.50, 0.51, ..., 1.00
  ScalePolicy scale_policy = ScalePolicy::dynamic;     // recomputed every forward, or fixed at attach time
  bool learnable_scale = false;                        // LSQ; requires static
  bool lsq_grad_scale = true;                          // LSQ gradient factor 1/sqrt(numel_per_scale * qmax)
  // Which Linear modules (ECMAScript regexes searched in the Hugging Face module name, so a plain name
  // such as "q_proj" acts as a substring). lm_head is never selected by these; see lm_head_bits.
  std::vector<std::string> modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  int64_t lm_head_bits = 0;  // 0: lm_head stays float; 2..8: quantized like the others with these bits
  // Inputs of the quantized projections (per tensor, static range calibrated over act_calib_batches).
  int64_t act_bits = 0;  // 0: none, 8 or 16
  bool act_symmetric = false;
  ActRangeMethod act_range = ActRangeMethod::minmax;
  double act_percentile = 99.99;  // act_range == percentile; in (50, 100]
  int64_t act_calib_batches = 16;
};

// Throws qkd::Error("<where>.<field>: ...") for the first invalid field.
void validate(const QuantSpec& spec, const std::string& where = "quant");

// Parses a JSON object; absent keys keep their defaults, unknown keys and wrong types are errors
// ("quant.granularity: expected one of per_channel, per_group, per_tensor, got \"rows\""). With an fp4
// format, absent granularity and group_size take the format's (per_group, 16 or 32).
QuantSpec quant_spec_from_json(const nlohmann::json& json, const std::string& where = "quant");
// Every field (search_grid only when set); quant_spec_from_json(quant_spec_to_json(s)) == s.
nlohmann::json quant_spec_to_json(const QuantSpec& spec);

bool operator==(const QuantSpec& a, const QuantSpec& b);
inline bool operator!=(const QuantSpec& a, const QuantSpec& b) { return !(a == b); }

// Clipping ratios the search tries (spec.search_grid or the default grid).
std::vector<double> clipping_grid(const QuantSpec& spec);

// The file a student checkpoint directory stores its spec in.
inline constexpr const char* kQuantSpecFileName = "quantization.json";

}  // namespace qkd::quant
