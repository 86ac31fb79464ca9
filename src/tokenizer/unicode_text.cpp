#include "unicode_text.h"

// ICU rather than utf8proc: Node's String.prototype.normalize (the reference the tests compare with)
// is ICU itself, ICU normalizes UTF-8 in place of UTF-16 round trips (normalizeUTF8) and answers the
// character properties the added-token rules need; Debian's libicu-dev is one package away.
#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>

#include "qkd/common/error.h"

namespace qkd::tokenizer::unicode {

namespace {

bool is_continuation(unsigned char byte) { return (byte & 0xC0) == 0x80; }

// Length of the well-formed sequence at `pos`, or 0 with `subpart` set to the bytes that form its
// maximal ill-formed subpart (Unicode table 3-7: the second byte's range depends on the lead byte).
size_t well_formed_length(std::string_view text, size_t pos, size_t& subpart) {
  const auto lead = static_cast<unsigned char>(text[pos]);
  subpart = 1;
  if (lead < 0x80) return 1;
  size_t length = 0;
  unsigned char low = 0x80, high = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;
    if (lead == 0xED) high = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;
    if (lead == 0xF4) high = 0x8F;
  } else {
    return 0;
  }
  for (size_t k = 1; k < length; ++k) {
    if (pos + k >= text.size()) return 0;
    const auto byte = static_cast<unsigned char>(text[pos + k]);
    const bool ok = k == 1 ? (byte >= low && byte <= high) : is_continuation(byte);
    if (!ok) return 0;
    subpart = k + 1;
  }
  return length;
}

const icu::Normalizer2& normalizer_for(NormalForm form) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* normalizer = nullptr;
  switch (form) {
    case NormalForm::nfc: normalizer = icu::Normalizer2::getNFCInstance(status); break;
    case NormalForm::nfd: normalizer = icu::Normalizer2::getNFDInstance(status); break;
    case NormalForm::nfkc: normalizer = icu::Normalizer2::getNFKCInstance(status); break;
    case NormalForm::nfkd: normalizer = icu::Normalizer2::getNFKDInstance(status); break;
  }
  if (U_FAILURE(status) || !normalizer) fail("ICU", std::string("no Unicode normalizer: ") + u_errorName(status));
  return *normalizer;
}

bool is_ascii(std::string_view text) {
  for (const char c : text)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

}  // namespace

bool is_valid_utf8(std::string_view text) {
  size_t pos = 0, subpart = 0;
  while (pos < text.size()) {
    if (static_cast<unsigned char>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const size_t length = well_formed_length(text, pos, subpart);
    if (length == 0) return false;
    pos += length;
  }
  return true;
}

std::string repair_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 8);
  size_t pos = 0, subpart = 0;
  while (pos < text.size()) {
    const size_t length = well_formed_length(text, pos, subpart);
    if (length > 0) {
      out.append(text.data() + pos, length);
      pos += length;
    } else {
      out += "\xEF\xBF\xBD";
      pos += subpart;
    }
  }
  return out;
}

char32_t next_code_point(std::string_view text, size_t& pos) {
  const auto lead = static_cast<unsigned char>(text[pos]);
  const size_t length = sequence_length(lead);
  char32_t c = length == 1 ? lead : length == 2 ? (lead & 0x1F) : length == 3 ? (lead & 0x0F) : (lead & 0x07);
  for (size_t k = 1; k < length; ++k) c = (c << 6) | (static_cast<unsigned char>(text[pos + k]) & 0x3F);
  pos += length;
  return c;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

size_t code_point_count(std::string_view text) {
  size_t count = 0;
  for (const char c : text) count += !is_continuation(static_cast<unsigned char>(c));
  return count;
}

void normalize(NormalForm form, std::string_view text, std::string& out) {
  out.clear();
  // ASCII is its own normal form in all four; most training text is, and skips ICU entirely.
  if (is_ascii(text)) {
    out.assign(text);
    return;
  }
  const auto& normalizer = normalizer_for(form);
  const icu::StringPiece piece(text.data(), static_cast<int32_t>(text.size()));
  UErrorCode status = U_ZERO_ERROR;
  if (normalizer.isNormalizedUTF8(piece, status) && U_SUCCESS(status)) {
    out.assign(text);
    return;
  }
  status = U_ZERO_ERROR;
  icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(text.size()));
  normalizer.normalizeUTF8(0, piece, sink, nullptr, status);
  if (U_FAILURE(status)) fail("ICU", std::string("Unicode normalization failed: ") + u_errorName(status));
}

bool is_white_space(char32_t c) { return u_isUWhiteSpace(static_cast<UChar32>(c)); }

bool is_word_character(char32_t c) {
  const auto code = static_cast<UChar32>(c);
  if (u_hasBinaryProperty(code, UCHAR_ALPHABETIC) || u_hasBinaryProperty(code, UCHAR_JOIN_CONTROL)) return true;
  switch (u_charType(code)) {
    case U_NON_SPACING_MARK:
    case U_ENCLOSING_MARK:
    case U_COMBINING_SPACING_MARK:
    case U_DECIMAL_DIGIT_NUMBER:
    case U_CONNECTOR_PUNCTUATION: return true;
    default: return false;
  }
}

}  // namespace qkd::tokenizer::unicode
