#include "qkd/model/llama_config.h"

#include "qkd/common/error.h"

namespace qkd::model {

const EnumTable<ModelType>& model_types() {
  static const EnumTable<ModelType> table{{ModelType::llama, "llama"},
                                          {ModelType::mistral, "mistral"},
                                          {ModelType::qwen2, "qwen2"},
                                          {ModelType::qwen3, "qwen3"}};
  return table;
}

void check_sliding_window(const LlamaConfig& config, int64_t seq_len, const std::string& setting,
                          const std::string& source) {
  if (config.sliding_window <= 0 || seq_len <= config.sliding_window) return;
  fail(source + ": sliding_window", std::to_string(config.sliding_window) + " keys, shorter than the " +
                                        std::to_string(seq_len) + "-token sequences of " + setting +
                                        "; only full causal attention is computed here: set " + setting +
                                        " to at most " + std::to_string(config.sliding_window));
}

}  // namespace qkd::model
