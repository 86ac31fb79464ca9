#pragma once
// Multiple-choice accuracy scored as lm-evaluation-harness does: the summed log-probability of each
// choice's continuation tokens given <s> + context; acc takes the argmax of the sum, acc_norm the
// argmax of the sum divided by the choice's UTF-8 byte length.
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "qkd/eval/eval_common.h"
#include "qkd/eval/mc_formats.h"

namespace qkd::tokenizer {
class Tokenizer;
}

namespace qkd::eval {

struct McOptions {
  int64_t max_len = 256;    // longest model input; longer requests keep their end
  int64_t batch_size = 16;  // requests per LogitsFn call
  int64_t max_items = 0;    // 0: all items
  McFormat format = McFormat::automatic;
  torch::Device device = torch::kCPU;  // where input_ids are built
  ProgressFn progress;                 // optional; units are requests
};

struct McScore {
  double acc = 0.0;
  double acc_norm = 0.0;
  int64_t n = 0;
};

// Context tokens (encoded alone) and continuation tokens = tokens(context + continuation) after the
// first len(tokens(context)); trailing whitespace of the context moves to the continuation first.
struct ContinuationSplit {
  std::vector<int64_t> context;
  std::vector<int64_t> continuation;
};
ContinuationSplit split_continuation(const tokenizer::Tokenizer& tokenizer, const std::string& context,
                                     const std::string& continuation);

// What the model reads and which targets count: input[t] predicts target[t]; the last
// `scored` targets are the continuation (fewer than its length only when truncation cut into it).
struct ScoredSequence {
  std::vector<int64_t> input;
  std::vector<int64_t> target;
  int64_t scored = 0;
};
// <s> + context + continuation, shifted by one, left-truncated to at most max_len inputs.
ScoredSequence build_scored_sequence(const ContinuationSplit& split, int64_t bos_id, int64_t max_len);

// Summed log-probability of each sequence's scored targets, in the order given. Sequences are run
// longest first in right-padded batches of options.batch_size.
std::vector<double> score_sequences(const LogitsFn& logits_fn, const std::vector<ScoredSequence>& sequences,
                                    int64_t pad_id, const McOptions& options);

// acc / acc_norm from per-choice scores laid out item by item (ties go to the first choice).
McScore accuracy_from_scores(const std::vector<McItem>& items, const std::vector<double>& choice_scores);

McScore evaluate_multiple_choice(const LogitsFn& logits_fn, const tokenizer::Tokenizer& tokenizer,
                                 const std::vector<McItem>& items, const McOptions& options);
McScore evaluate_multiple_choice_file(const LogitsFn& logits_fn, const tokenizer::Tokenizer& tokenizer,
                                      const std::string& path, const McOptions& options);

}  // namespace qkd::eval
