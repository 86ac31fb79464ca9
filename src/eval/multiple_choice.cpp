#include "qkd/eval/multiple_choice.h"

#include <algorithm>
#include <numeric>

#include "qkd/common/error.h"
#include "qkd/tokenizer/tokenizer.h"

namespace qkd::eval {

namespace {

void check_options(const McOptions& options, const std::string& where) {
  if (options.max_len < 1) fail(where, "max_len must be at least 1");
  if (options.batch_size < 1) fail(where, "batch_size must be at least 1");
  if (options.max_items < 0) fail(where, "max_items must be >= 0");
}

// Runs one right-padded batch and adds each sequence's scored log-probability to `scores`. Padding
// sits after every real token, so a causal model's logits at real positions are unaffected.
void score_batch(const LogitsFn& logits_fn, const std::vector<ScoredSequence>& sequences,
                 const std::vector<size_t>& batch, int64_t pad_id, const McOptions& options,
                 std::vector<double>& scores) {
  int64_t width = 0;
  for (size_t i : batch) width = std::max<int64_t>(width, sequences[i].input.size());
  const auto b = static_cast<int64_t>(batch.size());
  auto input = torch::full({b, width}, pad_id, torch::kInt64);
  auto target = torch::zeros({b, width}, torch::kInt64);
  for (int64_t row = 0; row < b; ++row) {
    const auto& seq = sequences[batch[row]];
    const auto n = static_cast<int64_t>(seq.input.size());
    input[row].narrow(0, 0, n).copy_(torch::tensor(seq.input, torch::kInt64));
    target[row].narrow(0, 0, n).copy_(torch::tensor(seq.target, torch::kInt64));
  }
  const auto logits = logits_fn(input.to(options.device));
  if (logits.dim() != 3 || logits.size(0) != b || logits.size(1) != width) {
    fail("multiple choice", "LogitsFn returned shape " + std::string(c10::str(logits.sizes())) + ", expected [" +
                                std::to_string(b) + ", " + std::to_string(width) + ", vocab]");
  }
  const int64_t max_id = target.max().item<int64_t>();
  if (max_id >= logits.size(2)) {
    fail("multiple choice", "token id " + std::to_string(max_id) + " >= vocab size " + std::to_string(logits.size(2)));
  }
  const auto logp = torch::log_softmax(logits.to(torch::kFloat32), -1);
  const auto token_logp = logp.gather(-1, target.to(logits.device()).unsqueeze(-1))
                              .squeeze(-1)
                              .to(torch::kCPU, torch::kFloat64)
                              .contiguous();
  const auto acc = token_logp.accessor<double, 2>();
  for (int64_t row = 0; row < b; ++row) {
    const auto& seq = sequences[batch[row]];
    const auto n = static_cast<int64_t>(seq.input.size());
    double sum = 0.0;
    for (int64_t t = n - seq.scored; t < n; ++t) sum += acc[row][t];
    scores[batch[row]] = sum;
  }
}

// Python's str.rstrip() for ASCII whitespace: how many trailing whitespace bytes `s` has.
size_t trailing_whitespace(const std::string& s) {
  const auto last = s.find_last_not_of(" \t\n\r\v\f");
  return last == std::string::npos ? s.size() : s.size() - last - 1;
}

}  // namespace

ContinuationSplit split_continuation(const tokenizer::Tokenizer& tokenizer, const std::string& context,
                                     const std::string& continuation) {
  // As lm-eval's _encode_pair: "Answer: " + "x" is scored as "Answer:" + " x", so the space is tokenized
  // with the continuation the way the model saw it in training.
  const size_t spaces = trailing_whitespace(context);
  const std::string ctx = context.substr(0, context.size() - spaces);
  const std::string cont = context.substr(context.size() - spaces) + continuation;
  ContinuationSplit split;
  split.context = tokenizer.encode(ctx);
  const auto whole = tokenizer.encode(ctx + cont);
  if (whole.size() > split.context.size()) {
    split.continuation.assign(whole.begin() + static_cast<std::ptrdiff_t>(split.context.size()), whole.end());
  }
  return split;
}

ScoredSequence build_scored_sequence(const ContinuationSplit& split, int64_t bos_id, int64_t max_len) {
  std::vector<int64_t> full;
  full.reserve(1 + split.context.size() + split.continuation.size());
  full.push_back(bos_id);
  full.insert(full.end(), split.context.begin(), split.context.end());
  full.insert(full.end(), split.continuation.begin(), split.continuation.end());
  // Inputs are full[:-1], targets full[1:]; both keep their last max_len entries (lm-eval's
  // (context + continuation)[-(max_len + 1):][:-1]).
  const auto inputs = static_cast<int64_t>(full.size()) - 1;
  const int64_t start = std::max<int64_t>(0, inputs - max_len);
  ScoredSequence seq;
  seq.input.assign(full.begin() + start, full.end() - 1);
  seq.target.assign(full.begin() + start + 1, full.end());
  seq.scored = std::min<int64_t>(static_cast<int64_t>(split.continuation.size()), seq.target.size());
  return seq;
}

std::vector<double> score_sequences(const LogitsFn& logits_fn, const std::vector<ScoredSequence>& sequences,
                                    int64_t pad_id, const McOptions& options) {
  check_options(options, "multiple choice");
  std::vector<double> scores(sequences.size(), 0.0);
  // Longest first: similar lengths share a batch, so little padding is computed, and a batch too
  // large for memory fails at the start rather than at the end.
  std::vector<size_t> order;
  for (size_t i = 0; i < sequences.size(); ++i) {
    if (!sequences[i].input.empty()) order.push_back(i);  // nothing to run: score stays 0
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return sequences[a].input.size() > sequences[b].input.size(); });
  torch::NoGradGuard no_grad;
  const auto total = static_cast<int64_t>(order.size());
  for (int64_t first = 0; first < total; first += options.batch_size) {
    const auto last = std::min(total, first + options.batch_size);
    const std::vector<size_t> batch(order.begin() + first, order.begin() + last);
    score_batch(logits_fn, sequences, batch, pad_id, options, scores);
    if (options.progress) options.progress(last, total);
  }
  return scores;
}

McScore accuracy_from_scores(const std::vector<McItem>& items, const std::vector<double>& choice_scores) {
  McScore result;
  size_t offset = 0;
  int64_t correct = 0, correct_norm = 0;
  for (const auto& item : items) {
    size_t best = 0, best_norm = 0;
    double best_score = 0, best_norm_score = 0;
    for (size_t c = 0; c < item.choices.size(); ++c) {
      const double score = choice_scores.at(offset + c);
      // An empty choice would divide by zero; count it as one byte instead.
      const double norm = score / static_cast<double>(std::max<int64_t>(1, item.choices[c].norm_bytes));
      if (c == 0 || score > best_score) best = c, best_score = score;
      if (c == 0 || norm > best_norm_score) best_norm = c, best_norm_score = norm;
    }
    offset += item.choices.size();
    correct += static_cast<int64_t>(best) == item.label;
    correct_norm += static_cast<int64_t>(best_norm) == item.label;
  }
  result.n = static_cast<int64_t>(items.size());
  if (result.n > 0) {
    result.acc = static_cast<double>(correct) / static_cast<double>(result.n);
    result.acc_norm = static_cast<double>(correct_norm) / static_cast<double>(result.n);
  }
  return result;
}

McScore evaluate_multiple_choice(const LogitsFn& logits_fn, const tokenizer::Tokenizer& tokenizer,
                                 const std::vector<McItem>& items, const McOptions& options) {
  check_options(options, "multiple choice");
  const size_t count = options.max_items > 0 ? std::min<size_t>(items.size(), options.max_items) : items.size();
  const std::vector<McItem> used(items.begin(), items.begin() + static_cast<std::ptrdiff_t>(count));
  std::vector<ScoredSequence> sequences;
  for (const auto& item : used) {
    for (const auto& choice : item.choices) {
      const auto split = split_continuation(tokenizer, choice.context, choice.continuation);
      sequences.push_back(build_scored_sequence(split, tokenizer.special().bos, options.max_len));
    }
  }
  return accuracy_from_scores(used, score_sequences(logits_fn, sequences, tokenizer.pad_id(), options));
}

McScore evaluate_multiple_choice_file(const LogitsFn& logits_fn, const tokenizer::Tokenizer& tokenizer,
                                      const std::string& path, const McOptions& options) {
  const auto dataset = load_mc_file(path, options.format);
  try {
    return evaluate_multiple_choice(logits_fn, tokenizer, dataset.items, options);
  } catch (const Error& e) {
    fail(path, e.what());  // name the file the failing model call belonged to
  }
}

}  // namespace qkd::eval
