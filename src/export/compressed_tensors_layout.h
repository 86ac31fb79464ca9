#pragma once
// What the compressed-tensors writer and reader share: the targets they name and the int32 packing of
// codes along a row (see compressed_tensors.cpp for the convention).
#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>

#include "qkd/common/error.h"

#include "qkd/model/linear.h"
#include "qkd/quant/quant_spec.h"
#include "qkd/quant/weight_quantizer.h"

namespace qkd::exporting::packed_layout {

inline constexpr const char* kLmHead = "lm_head";
inline constexpr const char* kProjectionTarget = "re:.*_proj$";

inline std::shared_ptr<quant::WeightQuantizer> weight_quantizer_of(const model::Linear& linear) {
  return std::dynamic_pointer_cast<quant::WeightQuantizer>(linear->weight_quantizer());
}

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

inline std::string strategy_name(quant::Granularity g) {
  switch (g) {
    case quant::Granularity::per_channel: return "channel";
    case quant::Granularity::per_group: return "group";
    case quant::Granularity::per_tensor: return "tensor";
  }
  return "channel";
}

inline bool packs_whole_words(int64_t bits) { return bits == 2 || bits == 4 || bits == 8; }

inline torch::Tensor require_tensor(const std::map<std::string, torch::Tensor>& tensors, const std::string& name,
                                    const std::string& source) {
  const auto it = tensors.find(name);
  if (it == tensors.end()) fail(source, "tensor '" + name + "' missing");
  return it->second;
}

// Unsigned fields `u` (int64, [rows, cols], each < 2^bits, cols a multiple of 32 / bits) packed
// along dim 1 into int32 [rows, cols / (32 / bits)].
inline torch::Tensor pack_rows(const torch::Tensor& u, int64_t bits) {
  const int64_t per_word = 32 / bits;
  const auto rows = u.size(0), cols = u.size(1);
  // 2^(bits * i): field i of a word starts at bit bits * i (first element in the lowest bits)
  const auto weights =
      torch::pow(torch::full({per_word}, int64_t{1} << bits, torch::kLong), torch::arange(per_word, torch::kLong));
  auto words = (u.to(torch::kLong).reshape({rows, cols / per_word, per_word}) * weights).sum(-1);
  // uint32 bit pattern -> int32 (two's complement)
  words = torch::where(words >= (int64_t{1} << 31), words - (int64_t{1} << 32), words);
  return words.to(torch::kInt).contiguous();
}

// Inverse of pack_rows: int32 [rows, words] -> int64 [rows, cols] unsigned fields.
inline torch::Tensor unpack_rows(const torch::Tensor& packed, int64_t bits, int64_t cols) {
  const int64_t per_word = 32 / bits;
  const auto words = packed.to(torch::kLong) & int64_t{0xFFFFFFFF};
  const auto weights =
      torch::pow(torch::full({per_word}, int64_t{1} << bits, torch::kLong), torch::arange(per_word, torch::kLong));
  auto fields = torch::remainder(torch::div(words.unsqueeze(-1), weights, "floor"), int64_t{1} << bits);
  return fields.reshape({packed.size(0), -1}).narrow(1, 0, cols).contiguous();
}

}  // namespace qkd::exporting::packed_layout
