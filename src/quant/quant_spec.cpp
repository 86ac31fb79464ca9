#include "qkd/quant/quant_spec.h"

#include <limits>
#include <regex>
#include <utility>

#include "qkd/common/enum_table.h"
#include "qkd/common/error.h"
#include "qkd/common/json_fields.h"
#include "qkd/common/json_io.h"

namespace qkd::quant {
namespace {

using nlohmann::json;

template <typename E>
E read_enum(FieldReader& reader, const std::string& key, E fallback, const EnumTable<E>& table) {
  return *table.find(reader.one_of(key, table.name(fallback), table.names()));
}

std::vector<double> read_numbers(FieldReader& reader, const std::string& key, std::vector<double> fallback) {
  const auto* value = reader.raw(key);
  if (!value) return fallback;
  const auto where = reader.path_of(key);
  if (!value->is_array()) fail(where, "expected an array of numbers, got " + json_excerpt(*value));
  std::vector<double> out;
  for (size_t i = 0; i < value->size(); ++i) {
    if (!(*value)[i].is_number())
      fail(where + "[" + std::to_string(i) + "]", "expected a number, got " + json_excerpt((*value)[i]));
    out.push_back((*value)[i].get<double>());
  }
  return out;
}

void validate_patterns(const std::vector<std::string>& patterns, const std::string& where) {
  if (patterns.empty()) fail(where, "must list at least one module pattern");
  for (size_t i = 0; i < patterns.size(); ++i) {
    const std::string at = where + "[" + std::to_string(i) + "]";
    if (patterns[i].empty()) fail(at, "empty pattern");
    try {
      std::regex re(patterns[i]);
    } catch (const std::regex_error& e) {
      fail(at, "invalid regular expression \"" + patterns[i] + "\": " + e.what());
    }
  }
}

// The rules a 4-bit float format imposes on the other fields: it fixes the element type (4-bit E2M1,
// signed, no zero point), the block size and the scale encoding, and its scales follow the weight.
void validate_fp4(const QuantSpec& s, const std::string& where) {
  const auto field = [&](const char* name) { return where + "." + name; };
  const auto name = weight_formats().name(s.format);
  const auto group = fp4_group_size(s.format);
  if (s.bits != 4) fail(field("bits"), name + " elements are 4-bit E2M1; got bits " + std::to_string(s.bits));
  if (!s.symmetric) fail(field("symmetric"), name + " is symmetric (E2M1 has a sign bit and no zero point)");
  if (s.granularity != Granularity::per_group)
    fail(field("granularity"), name + " has one scale per " + std::to_string(group) +
                                   " input columns (per_group), got " + granularities().name(s.granularity));
  if (s.group_size != group)
    fail(field("group_size"),
         name + " fixes the group size at " + std::to_string(group) + ", got " + std::to_string(s.group_size));
  if (s.scale_policy != ScalePolicy::dynamic)
    fail(field("scale_policy"), name +
                                    " scales are encoded from the weight at every forward (dynamic); static and "
                                    "learned scales are not supported for fp4 formats");
  if (s.lm_head_bits != 0 && s.lm_head_bits != 4)
    fail(field("lm_head_bits"),
         std::to_string(s.lm_head_bits) + " with format " + name + ": 0 (float) or 4 (lm_head in " + name + " too)");
  if (s.act_bits != 0)
    fail(field("act_bits"), "fp4 weight formats train weight-only (W4A16); got act_bits " + std::to_string(s.act_bits));
}

}  // namespace

const EnumTable<WeightFormat>& weight_formats() {
  static const EnumTable<WeightFormat> table{
      {WeightFormat::integer, "int"}, {WeightFormat::nvfp4, "nvfp4"}, {WeightFormat::mxfp4, "mxfp4"}};
  return table;
}

int64_t fp4_group_size(WeightFormat format) {
  switch (format) {
    case WeightFormat::nvfp4: return 16;
    case WeightFormat::mxfp4: return 32;
    case WeightFormat::integer: return 0;
  }
  return 0;
}

const EnumTable<Granularity>& granularities() {
  static const EnumTable<Granularity> table{{Granularity::per_channel, "per_channel"},
                                            {Granularity::per_group, "per_group"},
                                            {Granularity::per_tensor, "per_tensor"}};
  return table;
}

const EnumTable<RangeMethod>& range_methods() {
  static const EnumTable<RangeMethod> table{{RangeMethod::minmax, "minmax"}, {RangeMethod::search, "search"}};
  return table;
}

const EnumTable<ScalePolicy>& scale_policies() {
  static const EnumTable<ScalePolicy> table{{ScalePolicy::dynamic, "dynamic"}, {ScalePolicy::fixed, "static"}};
  return table;
}

const EnumTable<ActRangeMethod>& act_range_methods() {
  static const EnumTable<ActRangeMethod> table{{ActRangeMethod::minmax, "minmax"},
                                               {ActRangeMethod::percentile, "percentile"}};
  return table;
}

void validate(const QuantSpec& s, const std::string& where) {
  const auto field = [&](const char* name) { return where + "." + name; };
  if (s.bits < 2 || s.bits > 8) fail(field("bits"), std::to_string(s.bits) + " is outside 2..8");
  if (s.granularity == Granularity::per_group && s.group_size <= 0) {
    fail(field("group_size"), std::to_string(s.group_size) + " must be positive");
  }
  for (double r : s.search_grid) {
    if (!(r > 0.0 && r <= 1.0))
      fail(field("search_grid"), "clipping ratio " + std::to_string(r) + " is outside (0, 1]");
  }
  if (s.learnable_scale && s.scale_policy != ScalePolicy::fixed) {
    fail(field("learnable_scale"), "requires scale_policy \"static\"");
  }
  validate_patterns(s.modules, field("modules"));
  if (s.lm_head_bits != 0 && (s.lm_head_bits < 2 || s.lm_head_bits > 8)) {
    fail(field("lm_head_bits"), std::to_string(s.lm_head_bits) + " is neither 0 (float) nor in 2..8");
  }
  if (s.act_bits != 0 && s.act_bits != 8 && s.act_bits != 16) {
    fail(field("act_bits"), std::to_string(s.act_bits) + " is not 0 (none), 8 or 16");
  }
  if (!(s.act_percentile > 50.0 && s.act_percentile <= 100.0)) {
    fail(field("act_percentile"), std::to_string(s.act_percentile) + " is outside (50, 100]");
  }
  if (s.act_calib_batches < 1) fail(field("act_calib_batches"), std::to_string(s.act_calib_batches) + " must be >= 1");
  if (is_fp4(s.format)) validate_fp4(s, where);
}

QuantSpec quant_spec_from_json(const json& j, const std::string& where) {
  // Ranges are left to validate(), which also checks specs built in code.
  constexpr auto lo = std::numeric_limits<int64_t>::min();
  constexpr auto hi = std::numeric_limits<int64_t>::max();
  constexpr auto inf = std::numeric_limits<double>::infinity();
  const QuantSpec d;
  FieldReader r(j, where, FieldReader::Null::refused);
  QuantSpec s;
  s.format = read_enum(r, "format", d.format, weight_formats());
  // An fp4 format implies its grid; a contradicting explicit value is left to validate() to name.
  const bool fp4 = is_fp4(s.format);
  s.bits = r.integer("bits", d.bits, lo, hi);
  s.granularity = read_enum(r, "granularity", fp4 ? Granularity::per_group : d.granularity, granularities());
  s.group_size = r.integer("group_size", fp4 ? fp4_group_size(s.format) : d.group_size, lo, hi);
  s.symmetric = r.boolean("symmetric", d.symmetric);
  s.range = read_enum(r, "range", d.range, range_methods());
  s.search_grid = read_numbers(r, "search_grid", d.search_grid);
  s.scale_policy = read_enum(r, "scale_policy", d.scale_policy, scale_policies());
  s.learnable_scale = r.boolean("learnable_scale", d.learnable_scale);
  s.lsq_grad_scale = r.boolean("lsq_grad_scale", d.lsq_grad_scale);
  s.modules = r.strings("modules", d.modules);
  s.lm_head_bits = r.integer("lm_head_bits", d.lm_head_bits, lo, hi);
  s.act_bits = r.integer("act_bits", d.act_bits, lo, hi);
  s.act_symmetric = r.boolean("act_symmetric", d.act_symmetric);
  s.act_range = read_enum(r, "act_range", d.act_range, act_range_methods());
  s.act_percentile = r.number("act_percentile", d.act_percentile, -inf, inf);
  s.act_calib_batches = r.integer("act_calib_batches", d.act_calib_batches, lo, hi);
  r.finish();
  validate(s, where);
  return s;
}

json quant_spec_to_json(const QuantSpec& s) {
  json j = {{"format", weight_formats().name(s.format)},
            {"bits", s.bits},
            {"granularity", granularities().name(s.granularity)},
            {"group_size", s.group_size},
            {"symmetric", s.symmetric},
            {"range", range_methods().name(s.range)},
            {"scale_policy", scale_policies().name(s.scale_policy)},
            {"learnable_scale", s.learnable_scale},
            {"lsq_grad_scale", s.lsq_grad_scale},
            {"modules", s.modules},
            {"lm_head_bits", s.lm_head_bits},
            {"act_bits", s.act_bits},
            {"act_symmetric", s.act_symmetric},
            {"act_range", act_range_methods().name(s.act_range)},
            {"act_percentile", s.act_percentile},
            {"act_calib_batches", s.act_calib_batches}};
  if (!s.search_grid.empty()) j["search_grid"] = s.search_grid;
  return j;
}

bool operator==(const QuantSpec& a, const QuantSpec& b) { return quant_spec_to_json(a) == quant_spec_to_json(b); }

std::vector<double> clipping_grid(const QuantSpec& spec) {
  if (!spec.search_grid.empty()) return spec.search_grid;
  std::vector<double> grid;
  // Integer steps so that the ratios are 0.50, 0.51, ... exactly as decimal literals would give.
  for (int i = 50; i <= 100; ++i) grid.push_back(i / 100.0);
  return grid;
}

}  // namespace qkd::quant
