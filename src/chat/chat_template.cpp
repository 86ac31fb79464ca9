#include "qkd/chat/chat_template.h"

#include <filesystem>
#include <fstream>
#include <iterator>

#include "qkd/common/error.h"
#include "qkd/common/json_io.h"

namespace qkd::chat {

namespace {

// transformers' SPECIAL_TOKENS_ATTRIBUTES, the special tokens a chat template is given.
const char* const kSpecialTokenNames[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                          "pad_token", "cls_token", "mask_token"};

// A token in tokenizer_config.json: "text" or an AddedToken object {"content": "text", ...}.
std::string token_text(const nlohmann::json& token, const std::string& where, const std::string& field) {
  if (token.is_string()) return token.get<std::string>();
  if (token.is_object() && token.contains("content") && token["content"].is_string())
    return token["content"].get<std::string>();
  qkd::fail(where, field + " must be a string or an object with a string \"content\"");
}

std::string chat_template_source(const nlohmann::json& config, const std::string& path) {
  const auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) {
    // Newer Hugging Face repositories keep the template in its own file next to the config.
    const auto sibling = std::filesystem::path(path).parent_path() / "chat_template.jinja";
    std::ifstream in(sibling, std::ios::binary);
    if (!in)
      qkd::fail(path, "no chat_template (and no chat_template.jinja beside it): this tokenizer has no chat format");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    std::string names;
    for (const auto& entry : *it) {
      if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") ||
          !entry["template"].is_string())
        qkd::fail(path, "chat_template: a list entry must be {\"name\": ..., \"template\": \"...\"}");
      if (entry["name"] == "default") return entry["template"].get<std::string>();
      names += (names.empty() ? "" : ", ") + entry["name"].dump();
    }
    qkd::fail(path, "chat_template has no \"default\" entry (it has: " + names + ")");
  }
  qkd::fail(path, "chat_template must be a string or a list of {\"name\", \"template\"}");
}

}  // namespace

ChatTemplate ChatTemplate::parse(const std::string& source, const std::string& where) {
  ChatTemplate chat;
  chat.template_ = Template::parse(source, where);
  return chat;
}

ChatTemplate ChatTemplate::load_from_tokenizer_config(const std::string& path) {
  const nlohmann::json config = read_json_file(path);
  if (!config.is_object()) qkd::fail(path, "a tokenizer_config.json must hold a JSON object");
  ChatTemplate chat = parse(chat_template_source(config, path), path + ": chat_template");
  for (const char* name : kSpecialTokenNames) {
    const auto it = config.find(name);
    if (it == config.end() || it->is_null()) continue;
    const std::string text = token_text(*it, path, name);
    if (!text.empty()) chat.special_tokens_[name] = text;  // transformers passes only tokens that are set
  }
  const auto extra = config.find("additional_special_tokens");
  if (extra != config.end() && extra->is_array() && !extra->empty()) {
    nlohmann::ordered_json tokens = nlohmann::ordered_json::array();
    for (const auto& token : *extra) tokens.push_back(token_text(token, path, "additional_special_tokens"));
    chat.special_tokens_["additional_special_tokens"] = tokens;
  }
  return chat;
}

void ChatTemplate::set_special_token(const std::string& name, const nlohmann::ordered_json& value) {
  if (value.is_null()) {
    special_tokens_.erase(name);
  } else {
    special_tokens_[name] = value;
  }
}

std::string ChatTemplate::eos_token() const {
  const auto it = special_tokens_.find("eos_token");
  return it != special_tokens_.end() && it->second.is_string() ? it->second.get<std::string>() : "";
}

Dict ChatTemplate::variables(const Value& messages, const RenderOptions& options) const {
  Dict vars;
  vars.set("messages", messages);
  vars.set("tools", nullptr);
  vars.set("documents", nullptr);
  vars.set("add_generation_prompt", options.add_generation_prompt);
  for (const auto& [name, value] : special_tokens_) vars.set(name, Value::from_json(value));
  if (!options.variables.is_null() && !options.variables.is_object())
    qkd::fail(where(), "render variables must be a JSON object");
  for (const auto& [name, value] : options.variables.items()) vars.set(name, Value::from_json(value));
  return vars;
}

std::string ChatTemplate::render(const nlohmann::ordered_json& messages, const RenderOptions& options) const {
  if (!messages.is_array()) qkd::fail(where(), "messages must be a JSON array of message objects");
  return template_.render(variables(Value::from_json(messages), options), options.now);
}

std::string ChatTemplate::render(const nlohmann::json& messages, const RenderOptions& options) const {
  return render(nlohmann::ordered_json::parse(messages.dump()), options);
}

}  // namespace qkd::chat
