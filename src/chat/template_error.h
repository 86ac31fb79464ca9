#pragma once
// How the template engine reports failures. Parsing knows the line of every token and fails with
// qkd::Error at once; while rendering, helpers deep inside filters and operators do not know the line,
// so they throw RenderError and Template::render adds the template's name and the line of the node
// being evaluated.
#include <cstddef>
#include <stdexcept>
#include <string>

#include "qkd/common/error.h"

namespace qkd::chat {

// "<where> line <n>: <what>", one line.
[[noreturn]] inline void fail_at_line(const std::string& where, int line, const std::string& what) {
  qkd::fail(where + " line " + std::to_string(line), what);
}

// A failure while rendering; `what()` is the message without location (for raise_exception it is
// exactly the template's text, as transformers shows it).
class RenderError : public std::runtime_error {
 public:
  explicit RenderError(const std::string& message) : std::runtime_error(message) {}
};

// The most a rendering may produce: a chat template writes a few bytes per token of one conversation,
// so beyond this it is repeating or looping without bound ('x' * 100000 * 100000).
inline constexpr size_t kMaxRenderBytes = size_t{256} << 20;

[[noreturn]] inline void render_fail(const std::string& message) { throw RenderError(message); }

}  // namespace qkd::chat
