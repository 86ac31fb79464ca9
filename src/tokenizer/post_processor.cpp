#include "post_processor.h"

#include <string>

namespace qkd::tokenizer {

namespace {

// The ids of one entry of TemplateProcessing's "special_tokens" ({"id": ..., "ids": [...], ...}).
std::vector<int32_t> special_token_ids(const nlohmann::json& config, const std::string& name, const JsonPlace& place) {
  const auto specials = config.find("special_tokens");
  if (specials == config.end() || !specials->is_object() || !specials->contains(name))
    place.field("special_tokens").fail_here("no entry for the template's special token " + json_excerpt(name));
  const auto& entry = specials->at(name);
  const auto ids = entry.is_object() ? entry.find("ids") : entry.end();
  if (!entry.is_object() || ids == entry.end() || !ids->is_array())
    place.field("special_tokens").fail_here(json_excerpt(name) + " has no \"ids\" array");
  std::vector<int32_t> out;
  for (const auto& id : *ids) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
      place.field("special_tokens").fail_here(json_excerpt(name) + " has a bad id " + json_excerpt(id));
    out.push_back(id.get<int32_t>());
  }
  return out;
}

SpecialTokenTemplate template_processing(const nlohmann::json& config, const JsonPlace& place) {
  const auto& single = required_array(config, "single", place);
  SpecialTokenTemplate out;
  bool seen_sequence = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const auto& piece = single[i];
    const auto here = place.field("single").element(i);
    if (piece.is_object() && piece.contains("SpecialToken") && piece["SpecialToken"].is_object() &&
        piece["SpecialToken"].contains("id") && piece["SpecialToken"]["id"].is_string()) {
      const auto ids = special_token_ids(config, piece["SpecialToken"]["id"].get<std::string>(), place);
      auto& side = seen_sequence ? out.after : out.before;
      side.insert(side.end(), ids.begin(), ids.end());
    } else if (piece.is_object() && piece.contains("Sequence") && piece["Sequence"].is_object()) {
      const auto id = piece["Sequence"].value("id", std::string());
      if (id != "A") here.fail_here("the single template may only hold sequence A, got " + json_excerpt(piece));
      if (seen_sequence) here.fail_here("sequence A appears twice in the single template");
      seen_sequence = true;
    } else {
      here.fail_here("expected {\"SpecialToken\": {\"id\": ...}} or {\"Sequence\": {\"id\": \"A\"}}, got " +
                     json_excerpt(piece));
    }
  }
  if (!seen_sequence) place.field("single").fail_here("the template has no sequence A");
  return out;
}

}  // namespace

SpecialTokenTemplate make_post_processor(const nlohmann::json& config, const JsonPlace& place) {
  if (config.is_null()) return {};
  const auto type = component_type(config, place);
  if (type == "TemplateProcessing") return template_processing(config, place);
  if (type == "ByteLevel") return {};
  if (type == "Sequence") {
    // Each processor wraps what the ones before it produced.
    const auto& list = required_array(config, "processors", place);
    SpecialTokenTemplate out;
    for (size_t i = 0; i < list.size(); ++i) {
      const auto step = make_post_processor(list[i], place.field("processors").element(i));
      out.before.insert(out.before.begin(), step.before.begin(), step.before.end());
      out.after.insert(out.after.end(), step.after.begin(), step.after.end());
    }
    return out;
  }
  unsupported_type(place, type);
}

}  // namespace qkd::tokenizer
