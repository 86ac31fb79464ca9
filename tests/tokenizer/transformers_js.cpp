#include "tokenizer/transformers_js.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "test_support.h"
#include "tokenizer_fixtures.h"

namespace qkd::test {

std::vector<nlohmann::json> transformers_js_encode(const std::string& package, const std::vector<nlohmann::json>& texts,
                                                   const std::string& work) {
  if (std::system("node --version > /dev/null 2>&1") != 0)
    throw std::runtime_error("`node` is not on PATH (Debian package nodejs): run `bash scripts/bootstrap.sh test`");
  const auto models = npm_tokenizer_dir(package);
  const auto library = (std::filesystem::path(models).parent_path().parent_path() / "tokenizers").string();
  {
    std::ofstream out(work + "/texts.jsonl");
    for (const auto& text : texts) out << text.dump() << "\n";
  }
  const auto command = "node " + shell_quote(repo_path("tests/tokenizer/reference_encode.mjs")) + " " +
                       shell_quote(library) + " " + shell_quote(models) + " " + shell_quote(work + "/texts.jsonl") +
                       " > " + shell_quote(work + "/reference.jsonl") + " 2> " + shell_quote(work + "/node.err");
  if (std::system(command.c_str()) != 0) throw std::runtime_error(command + "\n" + read_file(work + "/node.err"));
  auto answers = read_jsonl(work + "/reference.jsonl");
  if (answers.size() != texts.size())
    throw std::runtime_error("reference_encode.mjs answered " + std::to_string(answers.size()) + " of " +
                             std::to_string(texts.size()) + " texts");
  return answers;
}

}  // namespace qkd::test
