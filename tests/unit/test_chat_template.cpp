// Chat templates rendered in C++ (qkd::chat) against hand-computed outputs for the engine's rules, and
// byte for byte against jinja2 run live (tests/chat/render_reference.py, set up as transformers sets up
// apply_chat_template) on hundreds of generated conversations per real template.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "chat/compare.h"
#include "chat/conversations.h"
#include "chat/real_templates.h"
#include "chat/reference.h"
#include "qkd/chat/chat_template.h"
#include "qkd/chat/template.h"
#include "qkd/common/error.h"

using qkd::chat::ChatTemplate;
using qkd::chat::RenderOptions;
using qkd::chat::Template;
using qkd::test::chat::Case;
using qkd::test::chat::Json;

namespace {

std::string scratch_dir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "qkd-chat-XXXXXX").string();
  if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
  return pattern;
}

// 2024-07-26 13:45:00, with the weekday and day of year filled in (strftime's %a and %j use them).
std::tm fixed_time() {
  std::tm t{};
  t.tm_year = 124, t.tm_mon = 6, t.tm_mday = 26, t.tm_hour = 13, t.tm_min = 45;
  const std::time_t seconds = timegm(&t);
  gmtime_r(&seconds, &t);
  return t;
}
const char* const kFixedTime = "2024-07-26T13:45:00";

std::string render(const std::string& source, const Json& variables = Json::object()) {
  const Template t = Template::parse(source, "test.jinja");
  return t.render(qkd::chat::Value::from_json(variables).as_dict(), [] { return fixed_time(); });
}

// Expects `action` to fail with exactly `message` (one line).
void expect_failure(const std::function<void()>& action, const std::string& message) {
  try {
    action();
    ADD_FAILURE() << "expected the error: " << message;
  } catch (const qkd::Error& e) {
    EXPECT_EQ(std::string(e.what()), message);
  }
}

void expect_load_error(const std::string& source, const std::string& message) {
  expect_failure([&] { Template::parse(source, "test.jinja"); }, message);
}

Json conversation(const std::vector<std::pair<std::string, std::string>>& turns) {
  Json messages = Json::array();
  for (const auto& [role, content] : turns) messages.push_back(Json{{"role", role}, {"content", content}});
  return messages;
}

}  // namespace

TEST(ChatJinja, WhitespaceControlStripsAllWhitespaceBesideTheTag) {
  EXPECT_EQ(render("a  \n {{- 'b' -}} \n  c"), "abc");
  EXPECT_EQ(render("a\n  {%- if true %}b{% endif -%}\n  c"), "abc");
  EXPECT_EQ(render("a {#- comment -#} b"), "ab");
}

TEST(ChatJinja, TrimBlocksAndLstripBlocksAsTransformersConfiguresThem) {
  EXPECT_EQ(render("{% if true %}\nyes\n{% endif %}\nafter"), "yes\nafter");
  EXPECT_EQ(render("  {% if true %}\n  x\n  {% endif %}\n"), "  x\n");  // and one trailing newline dropped
  EXPECT_EQ(render("a\n  {# note #}\nb"), "a\nb");
  EXPECT_EQ(render("  {{ 'v' }}\n"), "  v");                  // output tags keep their indentation
  EXPECT_EQ(render("  {%+ if true %}x{% endif %}"), "  x");   // + keeps the indentation
  EXPECT_EQ(render("{% if true +%}\nx{% endif %}"), "\nx");   // + keeps the newline
  EXPECT_EQ(render("x {% if true %}\ny{% endif %}"), "x y");  // not alone on its line: no lstrip
  EXPECT_EQ(render("a\r\nb\rc"), "a\nb\nc");
  EXPECT_EQ(render("{% raw %}{{ not evaluated }}{% endraw %}"), "{{ not evaluated }}");
}

TEST(ChatJinja, LoopsWithLoopVariablesBreakContinueAndElse) {
  EXPECT_EQ(render("{% for x in ['a','b','c'] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}"
                   "{{ loop.last }}{{ loop.length }}{% if not loop.last %},{% endif %}{% endfor %}"),
            "103TrueFalse3,212FalseFalse3,321FalseTrue3");
  EXPECT_EQ(render("{% for i in range(10) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 4 %}{% break %}"
                   "{% endif %}{{ i }}{% endfor %}"),
            "023");
  EXPECT_EQ(render("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(render("{% for i in range(6) if i is even %}{{ i }}/{{ loop.length }} {% endfor %}"), "0/3 2/3 4/3 ");
  EXPECT_EQ(render("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}"), "a=1;b=2;");
  EXPECT_EQ(render("{% for x in [1,2,3] %}{{ loop.previtem is defined }}{{ loop.nextitem|default('-') }}{% endfor %}"),
            "False2True3True-");
}

TEST(ChatJinja, LoopBodiesScopeTheirSetsAndNamespacesCarryChangesOut) {
  // Each iteration starts again from the outer x (jinja2's scoping), and the loop leaves x alone.
  EXPECT_EQ(render("{% set x = 1 %}{% for i in [1,2] %}{% set x = x + i %}{{ x }}{% endfor %}{{ x }}"), "231");
  EXPECT_EQ(render("{% set ns = namespace(total=0) %}{% for i in [1,2,3] %}{% set ns.total = ns.total + i %}"
                   "{% endfor %}{{ ns.total }}"),
            "6");
  EXPECT_EQ(render("{% if true %}{% set y = 'in' %}{% endif %}{{ y }}"), "in");
  expect_failure([] { render("{% set s = 'x' %}{% set s.a = 1 %}"); },
                 "test.jinja line 1: cannot assign attribute on non-namespace object");
}

TEST(ChatJinja, IndexingAndSlicingCountCodePoints) {
  EXPECT_EQ(render("{{ 'hello'[::-1] }}|{{ 'hello'[1:] }}|{{ 'hello'[:-1] }}|{{ [1,2,3,4][1:3] }}|{{ [1,2,3][-1] }}|"
                   "{{ 'héllo'[1] }}|{{ 'ab😀c'[2] }}|{{ 'héllo'|length }}"),
            "olleh|ello|hell|[2, 3]|3|é|😀|5");
}

TEST(ChatJinja, PrintsValuesAsPythonsStr) {
  EXPECT_EQ(render("{{ none }}|{{ true }}|{{ 1.0 }}|{{ 1e16 }}|{{ 0.1 + 0.2 }}|{{ [1, 'a', none] }}|{{ {'k': 'v'} }}|"
                   "{{ ('x',) }}|{{ undefined_name }}|{{ 7 / 2 }}|{{ 7 // 2 }}|{{ -7 % 3 }}|{{ 1e-05 }}"),
            "None|True|1.0|1e+16|0.30000000000000004|[1, 'a', None]|{'k': 'v'}|('x',)||3.5|3|2|1e-05");
}

TEST(ChatJinja, Filters) {
  EXPECT_EQ(
      render("{{ '  hi  '|trim }}|{{ 'xxhixx'|trim('x') }}|{{ 'Hi'|lower }}{{ 'hi'|upper }}|{{ 'hello wORLD'|title }}|"
             "{{ 'hELLO'|capitalize }}|{{ 'a-b-c'|replace('-', '+') }}|{{ [3,1,2]|sort|join(',') }}|"
             "{{ [1,2,2,1]|unique|list|length }}|{{ 'abc'|length }}|{{ [1,2,3]|first }}{{ [1,2,3]|last }}|"
             "{{ missing|default('dflt') }}|{{ '42'|int + 1 }}|{{ '2.5'|float }}|{{ -3|abs }}|{{ 2.5|round }}|"
             "{{ [1,2,3]|reverse|join }}|{{ {'b': 1, 'a': 2}|dictsort }}|{{ 7|string + '!' }}"),
      "hi|hi|hiHI|Hello World|Hello|a+b+c|1,2,3|2|3|13|dflt|43|2.5|3|2.0|321|[('a', 2), ('b', 1)]|7!");
  const Json vars = {{"messages", conversation({{"user", "a"}, {"assistant", "b"}, {"user", "c"}})}};
  EXPECT_EQ(
      render(
          "{{ messages|selectattr('role', 'equalto', 'user')|map(attribute='content')|join(',') }}|"
          "{{ messages|rejectattr('role', 'equalto', 'user')|list|length }}|{{ messages|map(attribute='role')|first }}",
          vars),
      "a,c|1|user");
  // As in jinja2, select/map return generators, which are true even when empty.
  EXPECT_EQ(render("{{ 'true' if ([]|select) else 'false' }}"), "true");
}

TEST(ChatJinja, TojsonIsPythonsJsonDumps) {
  EXPECT_EQ(render("{{ {'a': [1, 2.5, none, true], 'é': 'x\"\\n'}|tojson }}"),
            R"({"a": [1, 2.5, null, true], "é": "x\"\n"})");
  EXPECT_EQ(render("{{ {'a': [1], 'b': {}}|tojson(indent=2) }}"), "{\n  \"a\": [\n    1\n  ],\n  \"b\": {}\n}");
  EXPECT_EQ(render("{{ {'b': 1, 'a': 2}|tojson(sort_keys=true, separators=(',', ':')) }}"), R"({"a":2,"b":1})");
  EXPECT_EQ(render("{{ 'é😀'|tojson(ensure_ascii=true) }}"), R"("\u00e9\ud83d\ude00")");
  expect_failure([] { render("{{ nothing|tojson }}"); },
                 "test.jinja line 1: Object of type Undefined is not JSON serializable");
}

TEST(ChatJinja, PythonStringAndDictMethods) {
  EXPECT_EQ(render("{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'x</think>y'.split('</think>')[-1] }}|"
                   "{{ '\\n\\nz\\n'.lstrip('\\n') }}|{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'bc')) }}|"
                   "{{ 'Hi'.upper() }}|{{ 'a.b'.replace('.', '-') }}|{{ {'k': 1}.get('k') }}{{ {'k': 1}.get('z', 0) }}|"
                   "{{ {'k': 1}.keys()|list }}"),
            "['a', 'b', '', 'c']|['a', 'b']|y|z\n|TrueTrue|HI|a-b|10|['k']");
}

TEST(ChatJinja, Tests) {
  EXPECT_EQ(render("{{ x is defined }}{{ none is none }}{{ 'a' is string }}{{ {} is mapping }}{{ [] is iterable }}"
                   "{{ 1 is number }}{{ [] is sequence }}{{ true is boolean }}{{ true is true }}{{ 1 is true }}"
                   "{{ 2 is equalto 2 }}{{ 1 is not string }}{{ 3 is odd }}{{ 'x' in 'xyz' }}{{ 4 not in [1] }}"),
            "FalseTrueTrueTrueTrueTrueTrueTrueTrueFalseTrueTrueTrueTrueTrue");
}

TEST(ChatJinja, MacrosCallBlocksBlockSetsAndGeneration) {
  EXPECT_EQ(render("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}"
                   "{{ greet('Ann') }} {{ greet('Bo', punct='?') }}"),
            "Hi Ann! Hi Bo?");
  EXPECT_EQ(render("{% macro box() %}[{{ caller() }}]{% endmacro %}{% call box() %}inside{% endcall %}"), "[inside]");
  EXPECT_EQ(render("{% set s %}a{{ 1 + 1 }}{% endset %}{{ s }}|{% set u | upper %}b{% endset %}{{ u }}"), "a2|B");
  EXPECT_EQ(render("{% generation %}gen{% endgeneration %}"), "gen");
  EXPECT_EQ(render("{{ strftime_now('%d %b %Y') }}"), "26 Jul 2024");
}

TEST(ChatJinja, UnsupportedConstructsFailAtLoadNamingTheLine) {
  expect_load_error("line1\n{{ x|wordwrap }}", "test.jinja line 2: unsupported filter 'wordwrap'");
  expect_load_error("a\nb\n{% include 'x.jinja' %}", "test.jinja line 3: unsupported tag 'include'");
  expect_load_error("{{ x is foo }}", "test.jinja line 1: unsupported test 'foo'");
  expect_load_error("\n{{ x.pop() }}", "test.jinja line 2: unsupported method 'pop'");
  expect_load_error("{{ cycler('a') }}", "test.jinja line 1: unsupported function 'cycler'");
  expect_load_error("{{ xs|map('wordwrap')|list }}", "test.jinja line 1: unsupported filter 'wordwrap'");
  expect_load_error("{% for x in y recursive %}{% endfor %}", "test.jinja line 1: unsupported: recursive loops");
  expect_load_error("{% break %}", "test.jinja line 1: 'break' outside of a loop");
  expect_load_error(
      "{% if x %}\nno end",
      "test.jinja line 2: unexpected end of template, expected 'elif' or 'else' or 'endif' to close 'if'");
  expect_load_error("{{ [1, 2 }}", "test.jinja line 1: unexpected '}', expected ']'");
  expect_load_error("x\n{# open comment", "test.jinja line 2: missing end of comment tag");
  expect_load_error("{% frobnicate %}", "test.jinja line 1: unknown tag 'frobnicate'");
}

TEST(ChatJinja, RenderingErrorsNameTheLineAndKeepRaiseExceptionsMessage) {
  expect_failure([] { render("ok\n{{ raise_exception('Roles must alternate') }}"); },
                 "test.jinja line 2: Roles must alternate");
  expect_failure([] { render("{% set m = {'a': 1} %}\n\n{{ m.b.c }}"); },
                 "test.jinja line 3: 'dict object' has no attribute 'b'");
  expect_failure([] { render("{{ 1 + 'a' }}"); },
                 "test.jinja line 1: unsupported operand type(s) for +: 'int' and 'str'");
  expect_failure([] { render("{{ x.y }}"); }, "test.jinja line 1: 'x' is undefined");
}

TEST(ChatJinja, UnboundedWorkStopsNamingTheLine) {
  expect_failure([] { render("x\n{% for a in range(99999) %}{% for b in range(99999) %}{{ a }}{% endfor %}{% endfor %}"); },
                 "test.jinja line 2: the template executed more than 2000000 statements: an unbounded loop?");
  expect_failure([] { render("{% set s = 'x' * 1000000 %}\n{% for a in range(1000) %}{{ s }}{% endfor %}"); },
                 "test.jinja line 2: the rendering grew past 256 MiB");
  expect_failure([] { render("{{ 'abc' * 100000 * 100000 }}"); },
                 "test.jinja line 1: repeating a sequence of 300000 bytes 100000 times would pass 256 MiB");
}

TEST(ChatTemplateConfig, ReadsTheDefaultTemplateAndTokensFromATokenizerConfig) {
  const std::string dir = scratch_dir();
  const std::string path = dir + "/tokenizer_config.json";
  std::ofstream(path) << R"({"bos_token": {"__type": "AddedToken", "content": "<s>"}, "eos_token": "</s>",
      "pad_token": null, "unk_token": "", "additional_special_tokens": ["<x>", {"content": "<y>"}],
      "chat_template": [{"name": "tool_use", "template": "tools"},
                        {"name": "default", "template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}{{ eos_token }}|{{ pad_token is defined }}{{ unk_token is defined }}|{{ additional_special_tokens|join(',') }}|{{ add_generation_prompt }}{{ extra }}"}]})";
  const ChatTemplate chat = ChatTemplate::load_from_tokenizer_config(path);
  RenderOptions options;
  options.add_generation_prompt = true;
  options.variables = Json{{"extra", 5}};
  EXPECT_EQ(chat.render(conversation({{"user", "hi"}}), options), "<s>hi</s>|FalseFalse|<x>,<y>|True5");
  EXPECT_EQ(chat.eos_token(), "</s>");

  std::ofstream(path) << R"({"eos_token": "</s>"})";
  expect_failure([&] { ChatTemplate::load_from_tokenizer_config(path); },
                 path + ": no chat_template (and no chat_template.jinja beside it): this tokenizer has no chat format");
  std::ofstream(path) << R"({"chat_template": "{{ messages|wordcount }}"})";
  expect_failure([&] { ChatTemplate::load_from_tokenizer_config(path); },
                 path + ": chat_template line 1: unsupported filter 'wordcount'");
  std::filesystem::remove_all(dir);
}

// ---------------------------------------------------------------------------------------------------
// Real templates against jinja2.

namespace {

using qkd::test::chat::compare;
using qkd::test::chat::generate;
using qkd::test::chat::real_template;
using qkd::test::chat::RealTemplate;
using qkd::test::chat::Tally;

class RealChatTemplates : public ::testing::TestWithParam<RealTemplate> {};

}  // namespace

TEST_P(RealChatTemplates, RenderByteForByteLikeJinja2) {
  const RealTemplate& t = GetParam();
  const auto loaded = qkd::test::chat::load_real_template(t);
  const auto cases = generate(t, 250);
  const std::string scratch = scratch_dir();
  const auto reference = qkd::test::chat::render_reference(loaded.reference, cases, kFixedTime, scratch);
  const Tally tally = compare(loaded, cases, reference, [] { return fixed_time(); });
  std::cout << "[chat] " << t.name << ": " << tally.identical << "/" << tally.renders
            << " renders identical to jinja2 (" << cases.size() << " conversations x add_generation_prompt false/true; "
            << tally.refused_alike << " refused by both with the same message)" << std::endl;
  RecordProperty("identical", std::to_string(tally.identical) + "/" + std::to_string(tally.renders));
  EXPECT_EQ(tally.identical, tally.renders);
  for (size_t i = 0; i < tally.differences.size() && i < 5; ++i) ADD_FAILURE() << tally.differences[i];
  // Most conversations must render (the comparison is not only about refusals).
  EXPECT_GE(tally.renders - tally.refused_alike, 300u);
  std::filesystem::remove_all(scratch);
}

INSTANTIATE_TEST_SUITE_P(Templates, RealChatTemplates, ::testing::ValuesIn(qkd::test::chat::real_templates()),
                         [](const ::testing::TestParamInfo<RealTemplate>& info) { return info.param.name; });

TEST(ChatTemplateClock, StrftimeNowReadsTheSystemClockByDefault) {
  const auto loaded = qkd::test::chat::load_real_template(real_template("llama3_2_3b"));
  const auto today = [] {
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char text[32];
    std::strftime(text, sizeof(text), "%d %b %Y", &local);
    return std::string(text);
  };
  const std::string before = today();
  const std::string text = loaded.chat.render(conversation({{"user", "What day is it?"}}));
  const std::string after = today();
  EXPECT_TRUE(text.find("Today Date: " + before + "\n") != std::string::npos ||
              text.find("Today Date: " + after + "\n") != std::string::npos)
      << text;
  // jinja2 on the real clock agrees (unless the date changed in between).
  const std::string scratch = scratch_dir();
  Case c;
  c.messages = conversation({{"user", "What day is it?"}});
  const auto reference = qkd::test::chat::render_reference(loaded.reference, {c}, "", scratch);
  if (today() == before) EXPECT_EQ(reference.results[0].text, text);
  std::filesystem::remove_all(scratch);
}

// ---------------------------------------------------------------------------------------------------
// Assistant spans.

namespace {

std::string span_text(const qkd::chat::RenderedChat& rendered, size_t i) {
  const auto& span = rendered.assistant_spans.at(i);
  return rendered.text.substr(span.begin, span.end - span.begin);
}

const Json kTwoTurns = conversation({{"system", "Be brief."},
                                     {"user", "Hi"},
                                     {"assistant", "Hello there."},
                                     {"user", "Bye"},
                                     {"assistant", "Goodbye."}});

}  // namespace

TEST(ChatTemplateSpans, CoverEachResponseAndItsEndOfTurnMarker) {
  struct Expectation {
    const char* name;
    const char* first;
    const char* second;
  };
  const Expectation expectations[] = {
      {"llama3_npm", "Hello there.<|eot_id|>", "Goodbye.<|eot_id|>"},
      {"llama3_1_8b", "Hello there.<|eot_id|>", "Goodbye.<|eot_id|>"},
      {"qwen2_5_npm", "Hello there.<|im_end|>", "Goodbye.<|im_end|>"},
      // Qwen3 writes an empty think block before the last assistant turn: it belongs to the response.
      {"qwen3_npm", "Hello there.<|im_end|>", "<think>\n\n</think>\n\nGoodbye.<|im_end|>"},
      {"mistral_7b_v0_2", " Hello there.</s>", " Goodbye.</s>"},
  };
  for (const auto& e : expectations) {
    const auto loaded = qkd::test::chat::load_real_template(real_template(e.name));
    const auto rendered = loaded.chat.render_with_assistant_spans(kTwoTurns);
    EXPECT_EQ(rendered.text, loaded.chat.render(kTwoTurns)) << e.name;
    ASSERT_EQ(rendered.assistant_spans.size(), 2u) << e.name;
    EXPECT_EQ(rendered.assistant_spans[0].message_index, 2u);
    EXPECT_EQ(rendered.assistant_spans[1].message_index, 4u);
    EXPECT_EQ(span_text(rendered, 0), e.first) << e.name;
    EXPECT_EQ(span_text(rendered, 1), e.second) << e.name;
    // Qwen ends each turn with "<|im_end|>\n": the newline after the marker is not the model's to produce.
    const bool qwen = std::string(e.name).rfind("qwen", 0) == 0;
    EXPECT_EQ(rendered.assistant_spans[1].end, rendered.text.size() - (qwen ? 1 : 0)) << e.name;
  }
  const auto qwen3 = qkd::test::chat::load_real_template(real_template("qwen3_npm"));
  const Json thinking = conversation({{"user", "2+2?"}, {"assistant", "<think>\nAdd them.\n</think>\n\n4"}});
  EXPECT_EQ(span_text(qwen3.chat.render_with_assistant_spans(thinking), 0),
            "<think>\nAdd them.\n</think>\n\n4<|im_end|>");
}

TEST(ChatTemplateSpans, RefuseATemplateThatIsNotPrefixStable) {
  // Mistral-Nemo puts the system prompt into the last user turn, so the text before a response
  // depends on what follows it.
  const auto nemo = qkd::test::chat::load_real_template(real_template("mistral_nemo_npm"));
  expect_failure(
      [&] { nemo.chat.render_with_assistant_spans(kTwoTurns); },
      nemo.chat.where() +
          ": message 2: the template is not prefix-stable (messages[:2] rendered with add_generation_prompt=true "
          "is not a prefix of the whole conversation), so the assistant response cannot be located");
  const auto qwen3 = qkd::test::chat::load_real_template(real_template("qwen3_npm"));
  RenderOptions no_thinking;
  no_thinking.variables = Json{{"enable_thinking", false}};
  expect_failure(
      [&] { qwen3.chat.render_with_assistant_spans(kTwoTurns, no_thinking); },
      qwen3.chat.where() +
          ": message 2: the template is not prefix-stable (messages[:2] rendered with add_generation_prompt=true "
          "is not a prefix of the whole conversation), so the assistant response cannot be located");
  const Json one_turn = conversation({{"user", "Hi"}, {"assistant", "Hello."}});
  // Here the empty think block is part of the generation prompt, so the response starts after it.
  EXPECT_EQ(span_text(qwen3.chat.render_with_assistant_spans(one_turn, no_thinking), 0), "Hello.<|im_end|>");
  const Json no_system =
      conversation({{"user", "Hi"}, {"assistant", "Hello there."}, {"user", "Bye"}, {"assistant", "Bye!"}});
  const auto rendered = nemo.chat.render_with_assistant_spans(no_system);
  EXPECT_EQ(span_text(rendered, 0), "Hello there.</s>");
  EXPECT_EQ(span_text(rendered, 1), "Bye!</s>");
}

TEST(ChatTemplateSpans, HoldOnGeneratedConversations) {
  const std::set<std::string> prefix_stable = {"llama3_npm",  "qwen3_npm",       "qwen2_5_npm",    "llama3_1_8b",
                                               "llama3_2_3b", "mistral_7b_v0_2", "mistral_7b_v0_3"};
  for (const auto& t : qkd::test::chat::real_templates()) {
    const auto loaded = qkd::test::chat::load_real_template(t);
    const std::string eos = loaded.chat.eos_token();
    size_t checked = 0;
    for (const auto& c : generate(t, 100)) {
      RenderOptions options;
      options.variables = c.variables;
      options.now = [] { return fixed_time(); };
      try {
        loaded.chat.render(c.messages, options);
      } catch (const qkd::Error&) {
        continue;  // a conversation the template refuses
      }
      // Tools go before the last user turn in Mistral's templates, and Qwen3 with enable_thinking=false
      // puts an empty think block into the generation prompt that earlier turns do not have.
      const bool expect_stable = prefix_stable.count(t.name) && !c.breaks_roles && !c.variables.contains("tools") &&
                                 c.variables.value("enable_thinking", true);
      qkd::chat::RenderedChat rendered;
      try {
        rendered = loaded.chat.render_with_assistant_spans(c.messages, options);
      } catch (const qkd::Error& e) {
        EXPECT_FALSE(expect_stable) << t.name << ": " << e.what() << "\n" << c.messages.dump();
        continue;
      }
      size_t previous_end = 0;
      for (const auto& span : rendered.assistant_spans) {
        EXPECT_LE(previous_end, span.begin) << t.name;
        EXPECT_LE(span.begin, span.end) << t.name;
        EXPECT_LE(span.end, rendered.text.size()) << t.name;
        const std::string text = rendered.text.substr(span.begin, span.end - span.begin);
        if (span.end < rendered.text.size() || text.size() >= eos.size())
          EXPECT_EQ(text.substr(text.size() - std::min(text.size(), eos.size())), eos) << t.name;
        previous_end = span.end;
      }
      ++checked;
    }
    EXPECT_GT(checked, 50u) << t.name;
  }
}

// ---------------------------------------------------------------------------------------------------
// Speed: the same 1,000 Qwen3 conversations (each with add_generation_prompt false and true) in C++
// and in jinja2. The numbers are printed; the outputs must be identical.

TEST(ChatTemplateSpeed, RendersQwen3ConversationsAndReportsTheTimeAgainstJinja2) {
  const RealTemplate& t = real_template("qwen3_npm");
  const auto loaded = qkd::test::chat::load_real_template(t);
  qkd::test::chat::ConversationGenerator generator(7, qkd::test::chat::ToolStyle::none);
  std::vector<Case> cases;
  while (cases.size() < 1000) {
    Case c = generator.next();
    if (!c.breaks_roles) cases.push_back(std::move(c));
  }
  const std::string scratch = scratch_dir();
  const auto reference = qkd::test::chat::render_reference(loaded.reference, cases, kFixedTime, scratch);
  const std::function<std::tm()> now = [] { return fixed_time(); };
  size_t bytes = 0;
  const auto start = std::chrono::steady_clock::now();
  for (const auto& c : cases) {
    for (const bool prompt : {false, true}) {
      RenderOptions options;
      options.add_generation_prompt = prompt;
      options.now = now;
      bytes += loaded.chat.render(c.messages, options).size();
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GT(bytes, 0u);
  const Tally tally = compare(loaded, cases, reference, now);
  std::cout << "[chat] Qwen3, 1000 conversations x 2 renders: C++ " << seconds * 1e3 << " ms, jinja2 "
            << reference.seconds * 1e3 << " ms" << std::endl;
  RecordProperty("cpp_ms", std::to_string(seconds * 1e3));
  RecordProperty("jinja2_ms", std::to_string(reference.seconds * 1e3));
  EXPECT_EQ(tally.identical, tally.renders);
  std::filesystem::remove_all(scratch);
}
