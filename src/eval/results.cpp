#include "qkd/eval/results.h"

#include <cmath>

#include <filesystem>

#include "qkd/common/error.h"
#include "qkd/data/token_file.h"
#include "qkd/eval/jsonl_lines.h"
#include "qkd/eval/mc_formats.h"
#include "qkd/tokenizer/tokenizer.h"

namespace qkd::eval {

namespace {

// File name as the key (as in reference/quality.json); the path as given if that name is taken.
template <typename Map>
std::string key_for(const std::string& path, const Map& taken) {
  const auto name = std::filesystem::path(path).filename().string();
  return taken.count(name) ? path : name;
}

ProgressFn progress_for(const FileProgressFn& progress, const std::string& key) {
  if (!progress) return {};
  return [progress, key](int64_t done, int64_t total) { progress(key, done, total); };
}

}  // namespace

nlohmann::json results_to_json(const EvalResults& results) {
  nlohmann::json out = {{"ppl", nlohmann::json::object()}, {"mc", nlohmann::json::object()}};
  for (const auto& [file, ppl] : results.ppl) out["ppl"][file] = ppl;
  for (const auto& [file, score] : results.mc) {
    out["mc"][file] = {{"acc", score.acc}, {"acc_norm", score.acc_norm}, {"n", score.n}};
  }
  return out;
}

void check_eval_inputs(const std::vector<std::string>& ppl_files, const std::vector<std::string>& mc_files,
                       int64_t vocab_size) {
  for (const auto& path : ppl_files) {
    const auto ext = std::filesystem::path(path).extension();
    if (ext == ".u16" || ext == ".u32") {
      data::TokenFile::open(path).check_vocabulary(vocab_size);
    } else if (ext == ".jsonl" || ext == ".json") {
      for_each_jsonl_record(path, [](const nlohmann::json& record, const std::string& where, int64_t) {
        require_string(record, "text", where);
      });
    } else {
      fail(path, "unknown perplexity file type (expected .u16, .u32 or .jsonl)");
    }
  }
  for (const auto& path : mc_files) load_mc_file(path);
}

void require_finite(const EvalResults& results) {
  for (const auto& [file, ppl] : results.ppl)
    if (!std::isfinite(ppl))
      fail(file, "perplexity is not finite (" + std::to_string(ppl) +
                     "): the model's outputs hold NaN or Inf (non-finite weights, or a rope setting out of range)");
}

EvalResults evaluate_all(const LogitsFn& logits_fn, const tokenizer::Tokenizer& tokenizer, const EvalPlan& plan) {
  EvalResults results;
  for (const auto& path : plan.ppl_files) {
    const auto key = key_for(path, results.ppl);
    auto options = plan.ppl;
    options.progress = progress_for(plan.progress, key);
    results.ppl[key] = perplexity_of_file(logits_fn, tokenizer, path, options).ppl;
  }
  for (const auto& path : plan.mc_files) {
    const auto key = key_for(path, results.mc);
    auto options = plan.mc;
    options.progress = progress_for(plan.progress, key);
    results.mc[key] = evaluate_multiple_choice_file(logits_fn, tokenizer, path, options);
  }
  return results;
}

EvalPlan make_eval_plan(const std::vector<std::string>& ppl_files, const std::vector<std::string>& mc_files,
                        int64_t seq_len, int64_t batch_size, int64_t max_windows, int64_t mc_limit,
                        torch::Device device) {
  EvalPlan plan;
  plan.ppl_files = ppl_files;
  plan.mc_files = mc_files;
  plan.ppl.seq_len = seq_len;
  plan.ppl.batch_size = batch_size;
  plan.ppl.max_windows = max_windows;
  plan.ppl.device = device;
  plan.mc.max_len = seq_len;
  plan.mc.batch_size = batch_size;
  plan.mc.max_items = mc_limit;
  plan.mc.device = device;
  return plan;
}

}  // namespace qkd::eval
