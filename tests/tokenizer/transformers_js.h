#pragma once
// transformers.js (@lenml/tokenizers) as the tokenizer reference, run by node through
// tests/tokenizer/reference_encode.mjs on one of the npm tokenizer packages (tokenizer_fixtures.h).
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace qkd::test {

// One answer per text, in order: {"with": ids (add_special_tokens), "without": ids, "decoded": text,
// "decoded_skip": text, "is_nfc": bool}. A text is a JSON string, or an array of bytes node reads as
// UTF-8 with TextDecoder. Files go to `work`. Throws std::runtime_error with node's stderr when it fails.
std::vector<nlohmann::json> transformers_js_encode(const std::string& package, const std::vector<nlohmann::json>& texts,
                                                   const std::string& work);

}  // namespace qkd::test
