#pragma once
// A model's chat template: chat records {"messages": [{"role", "content"}, ...]} -> the exact text
// transformers' tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=...)
// produces, rendered in C++ (see template.h for the engine), plus where each assistant response lies
// in that text, for a loss on the assistant's tokens only.
//
// Variables the template sees, as transformers passes them: `messages`, `add_generation_prompt`,
// `tools` and `documents` (None), the tokenizer's special tokens (bos_token, eos_token, unk_token,
// sep_token, pad_token, cls_token, mask_token, additional_special_tokens -- those that are set), then
// RenderOptions::variables (which may override any of these, e.g. `tools`, or add `enable_thinking`,
// `date_string`).
#include <ctime>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "qkd/chat/template.h"

namespace qkd::chat {

struct RenderOptions {
  bool add_generation_prompt = false;
  nlohmann::ordered_json variables = nlohmann::ordered_json::object();  // extra keyword arguments
  std::function<std::tm()> now;  // strftime_now's clock (local time); empty: the system clock
};

// Byte range [begin, end) of one assistant message's response in RenderedChat::text.
struct AssistantSpan {
  size_t message_index = 0;
  size_t begin = 0;
  size_t end = 0;
};

struct RenderedChat {
  std::string text;  // rendered with add_generation_prompt=false
  std::vector<AssistantSpan> assistant_spans;
};

class ChatTemplate {
 public:
  // Reads `chat_template` from a Hugging Face tokenizer_config.json: a string, or a list of
  // {"name", "template"} of which "default" is used. Special tokens are strings or {"content": ...}.
  // Fails naming the file when there is no usable chat template.
  static ChatTemplate load_from_tokenizer_config(const std::string& path);
  // A template from its source text; `where` names it in errors. No special tokens are set.
  static ChatTemplate parse(const std::string& source, const std::string& where);

  // bos_token, eos_token, ... as the template sees them; a JSON string, or a list of strings for
  // additional_special_tokens. Setting null removes one.
  void set_special_token(const std::string& name, const nlohmann::ordered_json& value);
  const std::map<std::string, nlohmann::ordered_json>& special_tokens() const { return special_tokens_; }
  // The eos_token text ("" when unset): the end-of-turn marker assistant spans end with.
  std::string eos_token() const;

  // `messages` is a JSON array of message objects. Key order matters (tojson and items() show it),
  // so prefer ordered_json; the nlohmann::json overload sees keys in sorted order.
  std::string render(const nlohmann::ordered_json& messages, const RenderOptions& options = {}) const;
  std::string render(const nlohmann::json& messages, const RenderOptions& options = {}) const;

  // The full text (add_generation_prompt=false) and, for each message whose role is "assistant", its
  // response span. The rule:
  //   begin = the length of render(messages[:i], add_generation_prompt=true), which must be a prefix
  //           of the full text -- otherwise this fails naming message i and that the template is not
  //           prefix-stable (Mistral's templates move the system prompt and the tools into the last user
  //           turn; Qwen3 with enable_thinking=false prompts with an empty think block that earlier
  //           assistant turns lack);
  //   end   = just after the first occurrence of eos_token() at or after begin (the end-of-turn marker
  //           is part of what the model must learn to produce), or the end of the text without one.
  // So the span holds whatever the template writes for the turn after the generation prompt: Qwen3's
  // empty "<think>\n\n</think>\n\n" before the last assistant turn is part of it.
  RenderedChat render_with_assistant_spans(const nlohmann::ordered_json& messages,
                                           const RenderOptions& options = {}) const;

  const std::string& where() const { return template_.where(); }

 private:
  Dict variables(const Value& messages, const RenderOptions& options) const;

  Template template_;
  std::map<std::string, nlohmann::ordered_json> special_tokens_;
};

}  // namespace qkd::chat
