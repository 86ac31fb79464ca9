#pragma once
// Running the C++ renderer over generated conversations and comparing each result with jinja2's.
#include <cstdint>
#include <ctime>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "chat/conversations.h"
#include "chat/real_templates.h"
#include "chat/reference.h"
#include "qkd/chat/chat_template.h"
#include "qkd/common/error.h"

namespace qkd::test::chat {

inline const RealTemplate& real_template(const std::string& name) {
  static const auto templates = real_templates();
  for (const auto& t : templates)
    if (t.name == name) return t;
  throw std::runtime_error("no real template " + name);
}

inline uint32_t seed_of(const std::string& name) {  // FNV-1a: the same seed on every platform
  uint32_t h = 2166136261u;
  for (const char c : name) h = (h ^ static_cast<unsigned char>(c)) * 16777619u;
  return h;
}

inline std::vector<Case> generate(const RealTemplate& t, size_t count) {
  ConversationGenerator generator(seed_of(t.name), t.tools);
  std::vector<Case> cases;
  for (size_t i = 0; i < count; ++i) cases.push_back(generator.next());
  return cases;
}

inline std::string excerpt_at(const std::string& text, size_t at) {
  const size_t from = at > 40 ? at - 40 : 0;
  return Json(text.substr(from, 100)).dump(-1, ' ', false, Json::error_handler_t::replace);
}

struct Tally {
  size_t renders = 0, identical = 0, refused_alike = 0;
  std::vector<std::string> differences;
};

// Renders every case both ways in C++ and compares with the reference's results, in the same order.
inline Tally compare(const LoadedTemplate& loaded, const std::vector<Case>& cases, const ReferenceRun& reference,
                     const std::function<std::tm()>& now) {
  Tally tally;
  size_t k = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    for (const bool prompt : {false, true}) {
      const auto& expected = reference.results[k++];
      qkd::chat::RenderOptions options;
      options.add_generation_prompt = prompt;
      options.variables = cases[i].variables;
      options.now = now;
      std::string text, error;
      try {
        text = loaded.chat.render(cases[i].messages, options);
      } catch (const qkd::Error& e) {
        error = e.what();
      }
      const bool ok = error.empty();
      const std::string suffix = ": " + expected.error;
      const bool same =
          ok == expected.ok && (ok ? text == expected.text
                                   : error.size() >= suffix.size() &&
                                         error.compare(error.size() - suffix.size(), suffix.size(), suffix) == 0);
      ++tally.renders;
      if (same) {
        ++tally.identical;
        tally.refused_alike += !ok;
        continue;
      }
      std::string what = "conversation " + std::to_string(i) + " add_generation_prompt=" + (prompt ? "true" : "false") +
                         " messages=" + cases[i].messages.dump() + "\n  ";
      if (ok && expected.ok) {
        size_t at = 0;
        while (at < text.size() && at < expected.text.size() && text[at] == expected.text[at]) ++at;
        what += "first difference at byte " + std::to_string(at) + ": C++ " + excerpt_at(text, at) + " vs jinja2 " +
                excerpt_at(expected.text, at);
      } else {
        what += "C++: " + (ok ? "rendered" : error) + " | jinja2: " + (expected.ok ? "rendered" : expected.error);
      }
      tally.differences.push_back(what);
    }
  }
  return tally;
}

}  // namespace qkd::test::chat
