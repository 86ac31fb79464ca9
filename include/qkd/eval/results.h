#pragma once
// Evaluation of a set of files and the JSON it is reported as:
// {"ppl": {"<file>": value}, "mc": {"<file>": {"acc": a, "acc_norm": b, "n": n}}}
#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "qkd/eval/multiple_choice.h"
#include "qkd/eval/perplexity.h"

namespace qkd::eval {

struct EvalResults {
  std::map<std::string, double> ppl;
  std::map<std::string, McScore> mc;
};

nlohmann::json results_to_json(const EvalResults& results);

// Fails naming the file when a perplexity is not finite: the model's outputs are NaN or Inf (non-finite
// weights, a broken rope setting), and a "ppl": null must not pass for a result.
void require_finite(const EvalResults& results);

// Progress with the file it belongs to (the key used in the results).
using FileProgressFn = std::function<void(const std::string& file, int64_t done, int64_t total)>;

struct EvalPlan {
  std::vector<std::string> ppl_files;  // .u16 / .u32 / .jsonl
  std::vector<std::string> mc_files;   // JSONL in any format of mc_formats.h
  PerplexityOptions ppl;               // its `progress` is replaced by `progress` below
  McOptions mc;                        // likewise
  FileProgressFn progress;             // optional
};

// The plan the CLI and the trainer's validation both use: windows of seq_len for perplexity, the same
// length as the multiple-choice limit, one batch size.
EvalPlan make_eval_plan(const std::vector<std::string>& ppl_files, const std::vector<std::string>& mc_files,
                        int64_t seq_len, int64_t batch_size, int64_t max_windows, int64_t mc_limit,
                        torch::Device device);

// Reads every file of the plan once without a model: token files against the vocabulary, JSONL text
// records, multiple-choice items. Runs before any compute, so a bad file fails in seconds, not after
// training.
void check_eval_inputs(const std::vector<std::string>& ppl_files, const std::vector<std::string>& mc_files,
                       int64_t vocab_size);

// Scores every file in order. Keys are file names ("kjv-val.u16"), or the path as given when two
// files share a name.
EvalResults evaluate_all(const LogitsFn& logits_fn, const tokenizer::Tokenizer& tokenizer, const EvalPlan& plan);

}  // namespace qkd::eval
