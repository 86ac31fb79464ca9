#include "qkd/data/record_render.h"

#include <algorithm>

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

std::vector<int64_t> tokenize_segments(const std::vector<TextSegment>& segments,
                                       const qkd::tokenizer::Tokenizer& tokenizer) {
  return tokenize_record(segments, tokenizer).ids;
}

TokenizedRecord tokenize_record(const std::vector<TextSegment>& segments, const qkd::tokenizer::Tokenizer& tokenizer) {
  TokenizedRecord out;
  for (const auto& segment : segments) {
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
