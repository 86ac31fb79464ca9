// Where each assistant response lies in a rendered conversation (the rule is stated in
// chat_template.h). It relies only on rendering prefixes of the conversation, so it works for any
// template, including those without transformers' {% generation %} markers; templates for which it
// cannot work (not prefix-stable) are refused with the message index rather than guessed at.
#include "qkd/chat/chat_template.h"
#include "qkd/common/error.h"

namespace qkd::chat {

namespace {

bool is_assistant(const nlohmann::ordered_json& message) {
  return message.is_object() && message.contains("role") && message["role"] == "assistant";
}

}  // namespace

RenderedChat ChatTemplate::render_with_assistant_spans(const nlohmann::ordered_json& messages,
                                                       const RenderOptions& options) const {
  if (!messages.is_array()) qkd::fail(where(), "messages must be a JSON array of message objects");
  const Value all = Value::from_json(messages);
  RenderOptions full_options = options;
  full_options.add_generation_prompt = false;
  RenderedChat rendered;
  rendered.text = template_.render(variables(all, full_options), options.now);

  RenderOptions prompt_options = options;
  prompt_options.add_generation_prompt = true;
  const std::string eos = eos_token();
  for (size_t i = 0; i < messages.size(); ++i) {
    if (!is_assistant(messages[i])) continue;
    const std::vector<Value> before(all.as_list().items.begin(),
                                    all.as_list().items.begin() + static_cast<std::ptrdiff_t>(i));
    std::string prompt;
    try {
      prompt = template_.render(variables(Value::list(before), prompt_options), options.now);
    } catch (const qkd::Error& e) {
      qkd::fail(where(),
                "message " + std::to_string(i) +
                    ": rendering the conversation before it (to find where the response starts) failed: " + e.what());
    }
    if (rendered.text.compare(0, prompt.size(), prompt) != 0) {
      qkd::fail(where(), "message " + std::to_string(i) +
                             ": the template is not prefix-stable (messages[:" + std::to_string(i) +
                             "] rendered with add_generation_prompt=true is not a prefix of the whole conversation), "
                             "so the assistant response cannot be located");
    }
    AssistantSpan span;
    span.message_index = i;
    span.begin = prompt.size();
    const size_t marker = eos.empty() ? std::string::npos : rendered.text.find(eos, span.begin);
    span.end = marker == std::string::npos ? rendered.text.size() : marker + eos.size();
    rendered.assistant_spans.push_back(span);
  }
  return rendered;
}

}  // namespace qkd::chat
