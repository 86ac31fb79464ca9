#include "qkd/model/memory_estimate.h"

namespace qkd::model {

int64_t forward_bytes(const LlamaConfig& c, const BatchShape& s) {
  // Doubles: a batch of 100,000 x 100,000 must not overflow before it is compared.
  const double tokens = static_cast<double>(s.batch) * static_cast<double>(s.seq);
  const double q = static_cast<double>(c.num_attention_heads * c.head_dim);
  const double kv = static_cast<double>(c.num_key_value_heads * c.head_dim);
  // Per token and layer: the normed inputs, q/k/v, the attention output, the MLP's three products.
  const double per_token_layer = 2.0 * c.hidden_size + q + 2 * kv + q + 3.0 * c.intermediate_size;
  const double layers = s.backward ? (s.checkpointed ? c.num_hidden_layers * static_cast<double>(c.hidden_size) +
                                                           per_token_layer
                                                     : c.num_hidden_layers * per_token_layer)
                                   : per_token_layer;
  const double attention = static_cast<double>(c.num_attention_heads) * s.seq * static_cast<double>(s.seq);
  const double logits = static_cast<double>(s.logit_rows) * static_cast<double>(c.vocab_size);
  const double bytes = (tokens * layers + attention + logits) * s.element_bytes;
  return bytes > 9e18 ? INT64_MAX : static_cast<int64_t>(bytes);
}

}  // namespace qkd::model
