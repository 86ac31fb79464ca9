#pragma once
// Perplexity over non-overlapping windows: window i feeds tokens [L*i, L*i+L) and predicts
// [L*i+1, L*i+L+1); no state is carried between windows and a tail shorter than L+1 tokens is dropped.
#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "qkd/eval/eval_common.h"

namespace qkd::tokenizer {
class Tokenizer;
}

namespace qkd::eval {

struct PerplexityOptions {
  int64_t seq_len = 256;
  int64_t batch_size = 8;              // windows per LogitsFn call
  int64_t max_windows = 0;             // 0: all windows
  torch::Device device = torch::kCPU;  // where input_ids are built
  ProgressFn progress;                 // optional
};

struct PerplexityResult {
  double ppl = 0.0;
  double mean_nll = 0.0;  // nats per predicted token
  int64_t windows = 0;
  int64_t tokens = 0;  // predicted tokens = windows * seq_len
};

// Number of full windows a stream of `token_count` tokens yields (each needs seq_len + 1 tokens).
int64_t count_windows(int64_t token_count, int64_t seq_len);

// Perplexity of a flat 1-D token stream (any integer dtype, CPU).
PerplexityResult perplexity_of_tokens(const LogitsFn& logits_fn, const torch::Tensor& tokens,
                                      const PerplexityOptions& options);

// A .u16/.u32 token file (qkd::data::TokenFile).
PerplexityResult perplexity_of_token_file(const LogitsFn& logits_fn, const std::string& path,
                                          const PerplexityOptions& options);

// A JSONL text file: each record's "text" becomes <s> tokens </s>, documents concatenated in order,
// exactly as the .u16 files were made.
torch::Tensor tokenize_jsonl_documents(const tokenizer::Tokenizer& tokenizer, const std::string& path);
PerplexityResult perplexity_of_jsonl(const LogitsFn& logits_fn, const tokenizer::Tokenizer& tokenizer,
                                     const std::string& path, const PerplexityOptions& options);

// Dispatch on the extension: .u16/.u32 -> token file, .jsonl/.json -> text (needs the tokenizer).
PerplexityResult perplexity_of_file(const LogitsFn& logits_fn, const tokenizer::Tokenizer& tokenizer,
                                    const std::string& path, const PerplexityOptions& options);

}  // namespace qkd::eval
