#pragma once
// The vocabulary of a sentencepiece tokenizer.model (pieces, scores, piece types), read straight from
// its protobuf encoding, without the sentencepiece library: the GGUF exporter stores these as
// tokenizer.ggml.tokens / scores / token_type.
#include <cstdint>
#include <string>
#include <vector>

namespace qkd::tokenizer {

// sentencepiece's ModelProto.SentencePiece.Type.
enum class PieceType : int32_t { normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6 };

struct VocabPiece {
  std::string piece;
  float score = 0.0f;
  PieceType type = PieceType::normal;
};

struct SentencepieceVocab {
  std::vector<VocabPiece> pieces;  // ModelProto field 1 (repeated SentencePiece), in id order
  // NormalizerSpec.add_dummy_prefix (ModelProto field 3, its field 3; default true): a space is put
  // in front of the text before it is split, which llama.cpp calls tokenizer.ggml.add_space_prefix.
  bool add_dummy_prefix = true;
};

// Reads <path> (a sentencepiece tokenizer.model). Throws qkd::Error naming `path` when the file cannot
// be read, is not a well-formed protobuf, or holds no piece.
SentencepieceVocab read_sentencepiece_vocab(const std::string& path);
// The same from the bytes of a model file; `where` names the source in errors.
SentencepieceVocab parse_sentencepiece_vocab(const std::string& bytes, const std::string& where);

}  // namespace qkd::tokenizer
