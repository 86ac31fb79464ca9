#pragma once
// How the safetensors reader and writer report a problem: one line naming the file, and the tensor or
// the header.
#include <string>

#include "qkd/common/error.h"

namespace qkd::io {

// Names and parser messages come from the file; control characters would break the one-line rule.
inline std::string one_line(const std::string& text) {
  std::string out;
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[u >> 4];
      out += hex[u & 15];
    } else {
      out += c;
    }
  }
  return out;
}

[[noreturn]] inline void tensor_fail(const std::string& path, const std::string& name, const std::string& problem) {
  throw Error(path + ": tensor '" + one_line(name) + "': " + problem);
}

[[noreturn]] inline void header_fail(const std::string& path, const std::string& problem) {
  throw Error(path + ": header: " + problem);
}

}  // namespace qkd::io
