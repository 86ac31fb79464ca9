#include "qkd/model/document_layout.h"

#include "qkd/common/error.h"

namespace qkd::model {

DocumentLayout document_layout(const torch::Tensor& document_starts) {
  if (document_starts.dim() != 2 || document_starts.scalar_type() != torch::kBool)
    fail("document_layout", "expected a [batch, seq] bool tensor of document starts");
  const int64_t seq = document_starts.size(1);
  auto is_start = document_starts.clone();
  is_start.select(1, 0).fill_(true);
  const auto index = torch::arange(seq, document_starts.options().dtype(torch::kInt64)).expand_as(is_start);
  // Each token's document starts at the last start at or before it: a running maximum of start indices.
  const auto starts = std::get<0>(torch::cummax(index * is_start.to(torch::kInt64), 1));
  return {starts, index - starts};
}

DocumentLayout document_layout_from_bos(const torch::Tensor& input_ids, int64_t bos_id) {
  return document_layout(input_ids.eq(bos_id));
}

torch::Tensor blocked_keys(const DocumentLayout& layout) {
  const int64_t seq = layout.starts.size(1);
  const auto key = torch::arange(seq, layout.starts.options()).view({1, 1, seq});
  const auto query = key.view({1, seq, 1});
  return key.gt(query).logical_or(key.lt(layout.starts.unsqueeze(2)));
}

}  // namespace qkd::model
