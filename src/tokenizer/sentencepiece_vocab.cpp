#include "qkd/tokenizer/sentencepiece_vocab.h"

#include <cstring>

#include "qkd/common/error.h"
#include "qkd/common/input_file.h"

namespace qkd::tokenizer {

namespace {

// Protobuf wire format over one byte range: https://protobuf.dev/programming-guides/encoding/
class WireReader {
 public:
  WireReader(const char* begin, const char* end, const std::string& where, const char* what)
      : p_(begin), end_(end), where_(where), what_(what) {}

  bool done() const { return p_ >= end_; }

  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ >= end_) bad("truncated varint");
      const auto byte = static_cast<uint8_t>(*p_++);
      value |= uint64_t{byte & 0x7fu} << shift;
      if (!(byte & 0x80u)) return value;
    }
    bad("varint longer than 10 bytes");
  }

  // (field number, wire type)
  std::pair<uint64_t, int> tag() {
    const auto key = varint();
    const auto field = key >> 3;
    if (field == 0) bad("field number 0");
    return {field, static_cast<int>(key & 7)};
  }

  std::pair<const char*, const char*> bytes() {
    const auto length = varint();
    if (length > static_cast<uint64_t>(end_ - p_)) bad("length-delimited field runs past the end");
    const char* begin = p_;
    p_ += length;
    return {begin, p_};
  }

  uint32_t fixed32() {
    if (end_ - p_ < 4) bad("truncated fixed32");
    uint32_t v;
    std::memcpy(&v, p_, 4);  // little endian, as the host (x86-64/arm64)
    p_ += 4;
    return v;
  }

  void skip(int wire_type) {
    switch (wire_type) {
      case 0: varint(); return;
      case 1:
        if (end_ - p_ < 8) bad("truncated fixed64");
        p_ += 8;
        return;
      case 2: bytes(); return;
      case 5: fixed32(); return;
      default: bad("unsupported wire type " + std::to_string(wire_type));
    }
  }

  void expect(int wire_type, int wanted, uint64_t field) {
    if (wire_type != wanted)
      bad("field " + std::to_string(field) + " has wire type " + std::to_string(wire_type) + ", expected " +
          std::to_string(wanted));
  }

  [[noreturn]] void bad(const std::string& message) const {
    fail(where_, std::string("not a sentencepiece model (") + what_ + ": " + message + ")");
  }

 private:
  const char* p_;
  const char* end_;
  const std::string& where_;
  const char* what_;
};

VocabPiece parse_piece(const char* begin, const char* end, const std::string& where, size_t index) {
  const std::string what = "piece " + std::to_string(index);
  WireReader in(begin, end, where, what.c_str());
  VocabPiece piece;
  bool has_piece = false;
  while (!in.done()) {
    const auto [field, wire] = in.tag();
    if (field == 1) {
      in.expect(wire, 2, field);
      const auto [b, e] = in.bytes();
      piece.piece.assign(b, e);
      has_piece = true;
    } else if (field == 2) {
      in.expect(wire, 5, field);
      const auto bits = in.fixed32();
      std::memcpy(&piece.score, &bits, 4);
    } else if (field == 3) {
      in.expect(wire, 0, field);
      const auto type = in.varint();
      if (type < 1 || type > 6) in.bad("type " + std::to_string(type) + " is not one of 1..6");
      piece.type = static_cast<PieceType>(type);
    } else {
      in.skip(wire);
    }
  }
  if (!has_piece) in.bad("no piece string");
  return piece;
}

bool parse_add_dummy_prefix(const char* begin, const char* end, const std::string& where) {
  WireReader in(begin, end, where, "normalizer_spec");
  bool add_dummy_prefix = true;
  while (!in.done()) {
    const auto [field, wire] = in.tag();
    if (field == 3) {
      in.expect(wire, 0, field);
      add_dummy_prefix = in.varint() != 0;
    } else {
      in.skip(wire);
    }
  }
  return add_dummy_prefix;
}

}  // namespace

SentencepieceVocab parse_sentencepiece_vocab(const std::string& bytes, const std::string& where) {
  WireReader in(bytes.data(), bytes.data() + bytes.size(), where, "ModelProto");
  SentencepieceVocab vocab;
  while (!in.done()) {
    const auto [field, wire] = in.tag();
    if (field == 1) {
      in.expect(wire, 2, field);
      const auto [b, e] = in.bytes();
      vocab.pieces.push_back(parse_piece(b, e, where, vocab.pieces.size()));
    } else if (field == 3) {
      in.expect(wire, 2, field);
      const auto [b, e] = in.bytes();
      vocab.add_dummy_prefix = parse_add_dummy_prefix(b, e, where);
    } else {
      in.skip(wire);
    }
  }
  if (vocab.pieces.empty()) fail(where, "not a sentencepiece model (no pieces)");
  return vocab;
}

SentencepieceVocab read_sentencepiece_vocab(const std::string& path) {
  // The bounded regular-file reader: a FIFO or device in place of tokenizer.model fails instead of blocking.
  return parse_sentencepiece_vocab(read_text_file(path), path);
}

}  // namespace qkd::tokenizer
