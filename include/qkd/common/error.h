#pragma once
// One exception type for every user-facing failure. Its message is a single line that names the
// file (or option, or JSON path) and the field at fault; the CLI prints it and exits non-zero.
#include <stdexcept>
#include <string>

namespace qkd {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// "<where>: <what>", the one format every error message follows.
[[noreturn]] inline void fail(const std::string& where, const std::string& what) { throw Error(where + ": " + what); }

}  // namespace qkd
