#pragma once
// Hugging Face config.json (model_type "llama") <-> LlamaConfig.
#include <nlohmann/json.hpp>
#include <string>

#include "qkd/model/llama_config.h"

namespace qkd::checkpoint {

// Parses and validates <path>. Accepts rope settings in both the older top-level form
// (rope_theta + rope_scaling) and the newer rope_parameters form. Errors name the file and key.
model::LlamaConfig read_llama_config(const std::string& path);
model::LlamaConfig parse_llama_config(const nlohmann::json& json, const std::string& source);

// The config.json we write for a checkpoint (newer rope_parameters form, dtype of the weights).
nlohmann::json llama_config_to_json(const model::LlamaConfig& config);

}  // namespace qkd::checkpoint
