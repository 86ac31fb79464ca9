#pragma once
// Turns one JSON record (a JSONL line) into the text the model trains on. BOS/EOS are not written as
// text: a record renders to segments, each tokenized on its own with real special ids around it.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "qkd/chat/chat_template.h"
#include "qkd/tokenizer/tokenizer.h"

namespace qkd::data {

// Byte range [begin, end) of a segment's text.
struct ByteSpan {
  size_t begin = 0, end = 0;
};

struct TextSegment {
  std::string text;
  bool bos = false;         // a real BOS id before the text
  bool eos = false;         // a real EOS id after it
  size_t prompt_bytes = 0;  // leading bytes of `text` that are prompt (instruction, user turn), not response
  // A rendered chat whose responses were located: the assistant responses; every other byte is prompt
  // (prompt_bytes is then 0). Unset for everything else.
  std::optional<std::vector<ByteSpan>> responses;
};

struct RenderedRecord {
  std::vector<TextSegment> segments;
  std::string error;  // non-empty: the record is malformed ("missing field 'text'")
  bool empty() const { return segments.empty(); }
};

// {"<text_field>": "..."}: one segment, BOS/EOS per add_bos/add_eos. An empty text renders nothing.
RenderedRecord render_text_record(const nlohmann::json& record, const std::string& text_field, bool add_bos,
                                  bool add_eos);

// Alpaca {instruction, input (optional), output}, rendered as one segment with this template
// (the "### Input" block is left out when input is missing or empty):
//   ### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n{output}
RenderedRecord render_alpaca_record(const nlohmann::json& record, bool add_bos, bool add_eos);

// ShareGPT {conversations: [{from: system|human|gpt, value}]}, rendered with the LLaMA-2 chat template
// exactly as Meta's reference chat_completion does: an optional leading system turn is folded into
// the first user turn, and each (user, assistant) pair becomes one segment with BOS and EOS:
//   <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] {user} [/INST] ...
// Turn values are stripped of surrounding whitespace. A trailing user turn without an answer becomes
// "[INST] {user} [/INST]" with BOS only. Turns must alternate human/gpt; add_bos/add_eos do not apply.
RenderedRecord render_sharegpt_record(const nlohmann::json& record);

// {"messages": [{"role", "content", ...}, ...]} rendered with `chat` exactly as transformers'
// apply_chat_template(messages, tokenize=False) does: one segment holding the whole rendering (the
// template writes BOS and EOS as text, which the tokenizer turns into their ids), no real BOS/EOS
// around it. With `need_spans` each assistant response is marked (chat::ChatTemplate's rule), and a
// template that cannot say where one lies makes the record malformed. Without a template (`chat` null)
// the messages take the LLaMA-2 [INST] form of render_sharegpt_record.
RenderedRecord render_chat_record(const nlohmann::ordered_json& record, const chat::ChatTemplate* chat,
                                  bool need_spans);
// ShareGPT's turns as chat messages: system -> system, human -> user, gpt -> assistant. Fails (empty
// result, `error` set) like render_sharegpt_record on a record without conversations.
nlohmann::ordered_json sharegpt_messages(const nlohmann::ordered_json& record, std::string& error);

// Concatenated token ids of the segments (BOS/EOS as the tokenizer's special ids).
std::vector<int64_t> tokenize_segments(const std::vector<TextSegment>& segments,
                                       const qkd::tokenizer::Tokenizer& tokenizer);

struct TokenizedRecord {
  std::vector<int64_t> ids;     // tokenize_segments
  std::vector<uint8_t> prompt;  // per id: 1 for prompt tokens (a segment's BOS and its prompt_bytes' tokens)
};

// tokenize_segments with the prompt tokens marked. Each segment is tokenized whole, as for training;
// its prompt is the first n tokens, n being the token count of its prompt_bytes tokenized alone (the
// two agree where the prompt ends at a word or line boundary, as the alpaca and chat templates do).
// A rendered chat's responses are found the same way: a span [b, e) covers tokens n(b) .. n(e) - 1,
// n(x) being the token count of the first x bytes tokenized alone.
TokenizedRecord tokenize_record(const std::vector<TextSegment>& segments, const qkd::tokenizer::Tokenizer& tokenizer);

}  // namespace qkd::data
