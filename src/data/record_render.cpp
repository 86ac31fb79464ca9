#include "qkd/data/record_render.h"

#include <algorithm>

#include "qkd/common/error.h"

namespace qkd::data {

namespace {

RenderedRecord malformed(const std::string& why) {
  RenderedRecord out;
  out.error = why;
  return out;
}

// The string value of `key`, or an error message naming the field.
bool read_string_field(const nlohmann::json& record, const std::string& key, std::string& value, std::string& error) {
  const auto it = record.find(key);
  if (it == record.end()) {
    error = "missing field '" + key + "'";
    return false;
  }
  if (!it->is_string()) {
    error = "field '" + key + "' is not a string";
    return false;
  }
  value = it->get<std::string>();
  return true;
}

std::string strip(const std::string& s) {
  const auto begin = s.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos) return "";
  const auto end = s.find_last_not_of(" \t\r\n");
  return s.substr(begin, end - begin + 1);
}

}  // namespace

RenderedRecord render_text_record(const nlohmann::json& record, const std::string& text_field, bool add_bos,
                                  bool add_eos) {
  std::string text, error;
  if (!read_string_field(record, text_field, text, error)) return malformed(error);
  RenderedRecord out;
  if (!text.empty()) out.segments.push_back({text, add_bos, add_eos});
  return out;
}

RenderedRecord render_alpaca_record(const nlohmann::json& record, bool add_bos, bool add_eos) {
  std::string instruction, input, output, error;
  if (!read_string_field(record, "instruction", instruction, error)) return malformed(error);
  if (!read_string_field(record, "output", output, error)) return malformed(error);
  if (record.contains("input") && !record["input"].is_null() && !read_string_field(record, "input", input, error)) {
    return malformed(error);
  }
  std::string text = "### Instruction:\n" + instruction + "\n\n";
  if (!input.empty()) text += "### Input:\n" + input + "\n\n";
  text += "### Response:\n";
  const size_t prompt_bytes = text.size();
  text += output;
  RenderedRecord out;
  out.segments.push_back({text, add_bos, add_eos, prompt_bytes});
  return out;
}

RenderedRecord render_sharegpt_record(const nlohmann::json& record) {
  const auto it = record.find("conversations");
  if (it == record.end()) return malformed("missing field 'conversations'");
  if (!it->is_array() || it->empty()) return malformed("field 'conversations' is not a non-empty array");
  std::string system, pending_user, error;
  bool have_user = false, first_pair = true;
  RenderedRecord out;
  for (size_t i = 0; i < it->size(); ++i) {
    const auto& turn = (*it)[i];
    const std::string where = "conversations[" + std::to_string(i) + "]";
    if (!turn.is_object()) return malformed(where + " is not an object");
    std::string from, value;
    if (!read_string_field(turn, "from", from, error) || !read_string_field(turn, "value", value, error)) {
      return malformed(where + ": " + error);
    }
    value = strip(value);
    if (from == "system") {
      if (i != 0) return malformed(where + ": a system turn must come first");
      system = value;
    } else if (from == "human") {
      if (have_user) return malformed(where + ": two human turns in a row");
      pending_user = value;
      if (first_pair && !system.empty()) pending_user = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + pending_user;
      have_user = true;
    } else if (from == "gpt") {
      if (!have_user) return malformed(where + ": a gpt turn without a preceding human turn");
      const std::string prompt = "[INST] " + pending_user + " [/INST]";
      out.segments.push_back({prompt + " " + value + " ", true, true, prompt.size()});
      have_user = false;
      first_pair = false;
    } else {
      return malformed(where + ": unknown 'from' value '" + from + "' (expected system, human or gpt)");
    }
  }
  if (have_user) {
    const std::string prompt = "[INST] " + pending_user + " [/INST]";
    out.segments.push_back({prompt, true, false, prompt.size()});
  }
  if (out.segments.empty()) return malformed("conversation has no human turn");
  return out;
}

namespace {

// Chat messages in the LLaMA-2 form render_sharegpt_record writes: roles system/user/assistant become
// ShareGPT's system/human/gpt. Other roles (tool, ...) need the model's own template.
RenderedRecord render_messages_as_llama2(const nlohmann::ordered_json& messages) {
  nlohmann::json conversations = nlohmann::json::array();
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    const std::string role = m.at("role").get<std::string>();
    const std::string from = role == "system" ? "system" : role == "user" ? "human" : role == "assistant" ? "gpt" : "";
    if (from.empty())
      return malformed("messages[" + std::to_string(i) + "]: role '" + role +
                       "' needs the model's chat template (tokenizer_config.json); without one only system, user and "
                       "assistant render (LLaMA-2 [INST] form)");
    if (!m.contains("content") || !m.at("content").is_string())
      return malformed("messages[" + std::to_string(i) + "]: field 'content' is not a string");
    conversations.push_back({{"from", from}, {"value", m.at("content").get<std::string>()}});
  }
  return render_sharegpt_record({{"conversations", conversations}});
}

// The rendering with each assistant response marked, or (need_spans false) the plain rendering.
RenderedRecord render_with_template(const nlohmann::ordered_json& messages, const chat::ChatTemplate& chat,
                                    bool need_spans) {
  TextSegment segment;
  try {
    if (need_spans) {
      auto rendered = chat.render_with_assistant_spans(messages);
      segment.text = std::move(rendered.text);
      segment.responses.emplace();
      for (const auto& span : rendered.assistant_spans) segment.responses->push_back({span.begin, span.end});
    } else {
      segment.text = chat.render(messages);
    }
  } catch (const Error& e) {
    return malformed(e.what());  // raise_exception in the template, or a template that is not prefix-stable
  }
  RenderedRecord out;
  if (!segment.text.empty()) out.segments.push_back(std::move(segment));
  return out;
}

}  // namespace

RenderedRecord render_chat_record(const nlohmann::ordered_json& record, const chat::ChatTemplate* chat,
                                  bool need_spans) {
  const auto it = record.find("messages");
  if (it == record.end()) return malformed("missing field 'messages'");
  if (!it->is_array() || it->empty()) return malformed("field 'messages' is not a non-empty array");
  for (size_t i = 0; i < it->size(); ++i) {
    const auto& m = (*it)[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) return malformed(where + " is not an object");
    if (!m.contains("role") || !m.at("role").is_string()) return malformed(where + ": field 'role' is not a string");
  }
  if (!chat) return render_messages_as_llama2(*it);
  return render_with_template(*it, *chat, need_spans);
}

nlohmann::ordered_json sharegpt_messages(const nlohmann::ordered_json& record, std::string& error) {
  const auto it = record.find("conversations");
  if (it == record.end()) {
    error = "missing field 'conversations'";
    return nullptr;
  }
  if (!it->is_array() || it->empty()) {
    error = "field 'conversations' is not a non-empty array";
    return nullptr;
  }
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  for (size_t i = 0; i < it->size(); ++i) {
    const auto& turn = (*it)[i];
    const std::string where = "conversations[" + std::to_string(i) + "]";
    if (!turn.is_object() || !turn.contains("from") || !turn.at("from").is_string() || !turn.contains("value") ||
        !turn.at("value").is_string()) {
      error = where + ": expected {\"from\": string, \"value\": string}";
      return nullptr;
    }
    const auto from = turn.at("from").get<std::string>();
    const std::string role = from == "system" ? "system" : from == "human" ? "user" : from == "gpt" ? "assistant" : "";
    if (role.empty()) {
      error = where + ": unknown 'from' value '" + from + "' (expected system, human or gpt)";
      return nullptr;
    }
    messages.push_back({{"role", role}, {"content", turn.at("value")}});
  }
  return {{"messages", messages}};
}

std::vector<int64_t> tokenize_segments(const std::vector<TextSegment>& segments,
                                       const qkd::tokenizer::Tokenizer& tokenizer) {
  return tokenize_record(segments, tokenizer).ids;
}

namespace {
// Prompt marks of a rendered chat: 1 everywhere but on its responses' tokens.
std::vector<uint8_t> chat_prompt_marks(const TextSegment& segment, size_t token_count,
                                       const qkd::tokenizer::Tokenizer& tokenizer) {
  const auto tokens_before = [&](size_t bytes) {
    return std::min(token_count, tokenizer.encode(segment.text.substr(0, bytes)).size());
  };
  std::vector<uint8_t> prompt(token_count, 1);
  for (const auto& span : *segment.responses) {
    const size_t begin = tokens_before(span.begin);
    const size_t end = span.end >= segment.text.size() ? token_count : tokens_before(span.end);
    for (size_t i = begin; i < end; ++i) prompt[i] = 0;
  }
  return prompt;
}
}  // namespace

TokenizedRecord tokenize_record(const std::vector<TextSegment>& segments, const qkd::tokenizer::Tokenizer& tokenizer) {
  TokenizedRecord out;
  for (const auto& segment : segments) {
    if (segment.responses) {
      const auto part = tokenizer.encode(segment.text);
      const auto prompt = chat_prompt_marks(segment, part.size(), tokenizer);
      out.ids.insert(out.ids.end(), part.begin(), part.end());
      out.prompt.insert(out.prompt.end(), prompt.begin(), prompt.end());
      continue;
    }
    const auto part = tokenizer.encode(segment.text, segment.bos, segment.eos);
    size_t prompt_tokens = 0;
    if (segment.prompt_bytes >= segment.text.size()) {
      prompt_tokens = part.size();
    } else if (segment.prompt_bytes > 0) {
      prompt_tokens = tokenizer.encode(segment.text.substr(0, segment.prompt_bytes), segment.bos, false).size();
    } else if (segment.bos) {
      prompt_tokens = 1;  // BOS is given, never predicted
    }
    prompt_tokens = std::min(prompt_tokens, part.size());
    out.ids.insert(out.ids.end(), part.begin(), part.end());
    out.prompt.insert(out.prompt.end(), prompt_tokens, 1);
    out.prompt.insert(out.prompt.end(), part.size() - prompt_tokens, 0);
  }
  return out;
}

}  // namespace qkd::data
