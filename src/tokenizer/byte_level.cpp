#include "byte_level.h"

#include <array>

#include "unicode_text.h"

namespace qkd::tokenizer::byte_level {

namespace {

struct Alphabet {
  std::array<char32_t, 256> char_of{};
  std::array<std::string, 256> utf8_of;
  std::array<int16_t, 0x144> byte_of{};  // the alphabet lies below U+0144

  Alphabet() {
    byte_of.fill(-1);
    // Bytes that are visible characters stand for themselves: '!'..'~', '¡'..'¬', '®'..'ÿ'.
    auto keeps_its_character = [](int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE; };
    char32_t next_free = 0x100;
    for (int b = 0; b < 256; ++b) {
      const char32_t c = keeps_its_character(b) ? static_cast<char32_t>(b) : next_free++;
      char_of[b] = c;
      unicode::append_utf8(utf8_of[b], c);
      byte_of[c] = static_cast<int16_t>(b);
    }
  }
};

const Alphabet& alphabet() {
  static const Alphabet instance;
  return instance;
}

}  // namespace

void append_encoded(std::string_view bytes, std::string& out) {
  const auto& a = alphabet();
  for (const char b : bytes) out += a.utf8_of[static_cast<unsigned char>(b)];
}

int byte_of(char32_t c) { return c < 0x144 ? alphabet().byte_of[c] : -1; }

bool append_decoded(std::string_view token, std::string& out) {
  const size_t mark = out.size();
  size_t pos = 0;
  while (pos < token.size()) {
    const int b = byte_of(unicode::next_code_point(token, pos));
    if (b < 0) {
      out.resize(mark);
      return false;
    }
    out += static_cast<char>(b);
  }
  return true;
}

}  // namespace qkd::tokenizer::byte_level
