#include "qkd/eval/perplexity.h"

#include <cmath>
#include <filesystem>

#include "qkd/common/error.h"
#include "qkd/data/token_file.h"
#include "qkd/eval/jsonl_lines.h"
#include "qkd/tokenizer/tokenizer.h"

namespace qkd::eval {

namespace {

// Returns tokens [begin, begin + length) as a 1-D int64 CPU tensor.
using SliceFn = std::function<torch::Tensor(int64_t begin, int64_t length)>;

void check_options(const PerplexityOptions& options, const std::string& where) {
  if (options.seq_len < 1) fail(where, "seq_len must be at least 1");
  if (options.batch_size < 1) fail(where, "batch_size must be at least 1");
  if (options.max_windows < 0) fail(where, "max_windows must be >= 0");
}

void check_logits_shape(const torch::Tensor& logits, int64_t batch, int64_t seq_len, const std::string& where) {
  if (logits.dim() != 3 || logits.size(0) != batch || logits.size(1) != seq_len) {
    fail(where, "LogitsFn returned shape " + std::string(c10::str(logits.sizes())) + ", expected [" +
                    std::to_string(batch) + ", " + std::to_string(seq_len) + ", vocab]");
  }
}

// Summed NLL (double) of the targets of one batch of windows [B, L+1].
double batch_nll(const LogitsFn& logits_fn, const torch::Tensor& rows, const PerplexityOptions& options,
                 const std::string& where) {
  const int64_t L = options.seq_len;
  const auto input = rows.narrow(1, 0, L).contiguous().to(options.device);
  const auto logits = logits_fn(input);
  check_logits_shape(logits, rows.size(0), L, where);
  auto target = rows.narrow(1, 1, L).to(logits.device());
  const int64_t vocab = logits.size(2);
  const int64_t max_id = target.max().item<int64_t>();
  if (max_id >= vocab) fail(where, "token id " + std::to_string(max_id) + " >= vocab size " + std::to_string(vocab));
  // fp32 log-softmax whatever the model computes in, so bf16/fp16 models are scored comparably.
  const auto logp = torch::log_softmax(logits.to(torch::kFloat32), -1);
  const auto target_logp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1);
  return -target_logp.to(torch::kFloat64).sum().item<double>();
}

PerplexityResult windowed_perplexity(const LogitsFn& logits_fn, const SliceFn& slice, int64_t token_count,
                                     const PerplexityOptions& options, const std::string& where) {
  check_options(options, where);
  const int64_t L = options.seq_len;
  int64_t windows = count_windows(token_count, L);
  if (options.max_windows > 0) windows = std::min(windows, options.max_windows);
  if (windows == 0) {
    fail(where, std::to_string(token_count) + " tokens do not fill one window of seq_len " + std::to_string(L) +
                    " (needs " + std::to_string(L + 1) + ")");
  }
  torch::NoGradGuard no_grad;
  double nll_sum = 0.0;
  for (int64_t first = 0; first < windows; first += options.batch_size) {
    const int64_t count = std::min(options.batch_size, windows - first);
    std::vector<torch::Tensor> rows;
    rows.reserve(count);
    for (int64_t w = first; w < first + count; ++w) rows.push_back(slice(w * L, L + 1));
    nll_sum += batch_nll(logits_fn, torch::stack(rows), options, where);
    if (options.progress) options.progress(first + count, windows);
  }
  PerplexityResult result;
  result.windows = windows;
  result.tokens = windows * L;
  result.mean_nll = nll_sum / static_cast<double>(result.tokens);
  result.ppl = std::exp(result.mean_nll);
  return result;
}

bool has_extension(const std::string& path, const char* ext) { return std::filesystem::path(path).extension() == ext; }

}  // namespace

int64_t count_windows(int64_t token_count, int64_t seq_len) {
  if (seq_len < 1 || token_count < seq_len + 1) return 0;
  return (token_count - 1) / seq_len;
}

PerplexityResult perplexity_of_tokens(const LogitsFn& logits_fn, const torch::Tensor& tokens,
                                      const PerplexityOptions& options) {
  if (tokens.dim() != 1) fail("perplexity", "token stream must be 1-D");
  const auto stream = tokens.to(torch::kCPU, torch::kInt64);
  const SliceFn slice = [&](int64_t begin, int64_t length) { return stream.narrow(0, begin, length); };
  return windowed_perplexity(logits_fn, slice, stream.size(0), options, "perplexity");
}

PerplexityResult perplexity_of_token_file(const LogitsFn& logits_fn, const std::string& path,
                                          const PerplexityOptions& options) {
  const auto file = data::TokenFile::open(path);
  const SliceFn slice = [&](int64_t begin, int64_t length) { return file.slice(begin, length); };
  return windowed_perplexity(logits_fn, slice, file.size(), options, path);
}

torch::Tensor tokenize_jsonl_documents(const tokenizer::Tokenizer& tokenizer, const std::string& path) {
  std::vector<int64_t> ids;
  for_each_jsonl_record(path, [&](const nlohmann::json& record, const std::string& where, int64_t) {
    const auto doc = tokenizer.encode(require_string(record, "text", where), /*add_bos=*/true, /*add_eos=*/true);
    ids.insert(ids.end(), doc.begin(), doc.end());
  });
  return torch::tensor(ids, torch::kInt64);
}

PerplexityResult perplexity_of_jsonl(const LogitsFn& logits_fn, const tokenizer::Tokenizer& tokenizer,
                                     const std::string& path, const PerplexityOptions& options) {
  const auto stream = tokenize_jsonl_documents(tokenizer, path);
  const SliceFn slice = [&](int64_t begin, int64_t length) { return stream.narrow(0, begin, length); };
  return windowed_perplexity(logits_fn, slice, stream.size(0), options, path);
}

PerplexityResult perplexity_of_file(const LogitsFn& logits_fn, const tokenizer::Tokenizer& tokenizer,
                                    const std::string& path, const PerplexityOptions& options) {
  if (has_extension(path, ".u16") || has_extension(path, ".u32")) {
    data::TokenFile::open(path).check_vocabulary(tokenizer.vocab_size());
    return perplexity_of_token_file(logits_fn, path, options);
  }
  if (has_extension(path, ".jsonl") || has_extension(path, ".json")) {
    return perplexity_of_jsonl(logits_fn, tokenizer, path, options);
  }
  fail(path, "unknown perplexity file type (expected .u16, .u32 or .jsonl)");
}

}  // namespace qkd::eval
