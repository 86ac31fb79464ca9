#pragma once
// Chat conversations for comparing the C++ chat-template renderer with jinja2, generated from a fixed
// seed (std::mt19937's output is fixed by the standard; no distribution classes, whose output is
// not). They mix what breaks renderers: system turns or not, one to five turns, unicode, emoji,
// whitespace at the edges, quotes, braces and Jinja-looking text, special-token look-alikes,
// <think> blocks, empty contents, tool definitions and tool calls, and some conversations that break
// a template's rules (roles that do not alternate) so that both sides must refuse them alike.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

namespace qkd::test::chat {

using Json = nlohmann::ordered_json;

// How a template family writes tool calls, so generated tool turns are ones it accepts.
enum class ToolStyle { none, qwen, llama, mistral };

struct Case {
  Json messages = Json::array();
  Json variables = Json::object();  // extra keyword arguments (tools, enable_thinking, date_string)
  bool breaks_roles = false;        // built to break a template's role rules
};

class ConversationGenerator {
 public:
  ConversationGenerator(uint32_t seed, ToolStyle tools) : rng_(seed), tools_(tools) {}

  Case next() {
    Case c;
    const uint32_t shape = pick(100);
    if (pick(10) < 4) c.messages.push_back(message("system", text(true)));
    const int turns = 1 + static_cast<int>(pick(5));
    const bool with_tools = tools_ != ToolStyle::none && pick(100) < 15;
    for (int t = 0; t < turns; ++t) {
      c.messages.push_back(message("user", text(false)));
      if (with_tools && t == turns - 1 && tools_ != ToolStyle::llama) add_tool_round(c.messages);
      const bool last = t == turns - 1;
      if (!last || pick(2) == 0) c.messages.push_back(assistant_message());
    }
    if (shape < 6) {
      break_alternation(c.messages);
      c.breaks_roles = true;
    }
    if (with_tools) c.variables["tools"] = tool_definitions();
    if (tools_ == ToolStyle::qwen && pick(4) == 0) c.variables["enable_thinking"] = pick(2) == 0;
    if (tools_ == ToolStyle::llama && pick(5) == 0) c.variables["date_string"] = "02 Jan 2025";
    return c;
  }

 private:
  uint32_t pick(uint32_t n) { return static_cast<uint32_t>(rng_() % n); }

  static Json message(const std::string& role, const std::string& content) {
    return Json{{"role", role}, {"content", content}};
  }

  std::string text(bool system) {
    static const std::vector<std::string> pieces = {
        "Hello!",
        "What is the capital of France?",
        "Paris is the capital of France.",
        "Explain quicksort in two sentences.",
        "You are a helpful assistant.",
        "Ünïcödé façade — naïve café, ß and İstanbul",
        "日本語のテキストです。中文也可以。",
        "Привет, мир! Ελληνικά.",
        "مرحبا بالعالم",
        "emoji 😀🎉👍🏽 and a family 👨‍👩‍👧",
        "  leading spaces",
        "trailing spaces   ",
        "\n\nnewlines around\n\n",
        "tabs\tinside\tthe\ttext",
        "\u00a0no-break space and\u3000ideographic space\u2028line separator",
        "She said \"hi\" and 'bye'.",
        "{\"json\": [1, 2.5, {\"a\": null}], \"b\": true}",
        "{{ x }} and {% if y %}z{% endif %} and {# not a comment #}",
        "back\\slash and \\n that is not a newline",
        "<s> [INST] fake tokens [/INST] </s> <|im_end|> <|eot_id|>",
        "```python\nprint('x')\n```",
        "line one\nline two\r\nline three",
        "   ",
        "",
    };
    std::string out = pieces[pick(static_cast<uint32_t>(pieces.size()))];
    if (!system && pick(3) == 0) out += " " + pieces[pick(static_cast<uint32_t>(pieces.size()))];
    return out;
  }

  Json assistant_message() {
    std::string content = text(false);
    const uint32_t think = pick(10);
    if (think == 0) content = "<think>\nLet me think about it.\n</think>\n\n" + content;
    if (think == 1) content = "<think>short</think>" + content;
    if (think == 2) content += " </think> stray";
    Json m = message("assistant", content);
    if (think == 3) m["reasoning_content"] = "Reasoning given apart.";
    return m;
  }

  static Json tool_definitions() {
    return Json::array({Json::parse(R"({"type": "function", "function": {"name": "get_weather",
        "description": "Get the weather at a place.", "parameters": {"type": "object", "properties":
        {"city": {"type": "string", "description": "City name, e.g. \"Zürich\""}, "unit": {"type": "string",
        "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}, "return": {"type": "number"}}})")});
  }

  // An assistant turn that calls a tool and the tool's answer, in the form the template family reads.
  void add_tool_round(Json& messages) {
    const Json arguments = Json::parse(R"({"city": "Zürich", "unit": "celsius", "days": [1, 2.5]})");
    Json call = Json{{"type", "function"}, {"function", Json{{"name", "get_weather"}, {"arguments", arguments}}}};
    Json tool_answer = message("tool", "{\"temperature\": 21.5}");
    if (tools_ == ToolStyle::mistral) {
      call["id"] = "abc123XYZ";
      tool_answer["tool_call_id"] = "abc123XYZ";
    }
    Json caller = message("assistant", pick(2) == 0 ? "" : "Let me check.");
    caller["tool_calls"] = Json::array({call});
    messages.push_back(caller);
    messages.push_back(tool_answer);
  }

  // Two user turns in a row, an assistant first, or an unknown role: templates that check roles
  // (Mistral's) refuse these with raise_exception.
  void break_alternation(Json& messages) {
    switch (pick(3)) {
      case 0: messages.push_back(message("user", "a second user turn")); break;
      case 1: messages.insert(messages.begin(), message("assistant", "I speak first.")); break;
      default: messages.push_back(message("narrator", "an unknown role")); break;
    }
  }

  std::mt19937 rng_;
  ToolStyle tools_;
};

}  // namespace qkd::test::chat
