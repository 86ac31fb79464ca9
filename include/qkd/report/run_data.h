#pragma once
// Everything the report reads from one run directory: metrics.jsonl, signal.jsonl, events.jsonl,
// config.json and summary.json. All files are optional (a missing one adds a note and its report
// sections are omitted), but a directory with none of them is an error. A partially written last
// JSONL line (no trailing newline, not valid JSON) is ignored with a note; any other malformed line
// throws qkd::Error naming "<file>:<line>".
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace qkd::report {

// Absent or null numbers are NaN.
struct TrainPoint {
  int64_t step = 0;
  double loss = 0, kd = 0, ce = 0, lr = 0, grad_norm = 0, tokens_per_s = 0, peak_mem_mb = 0;
};

struct McScore {
  double acc = 0, acc_norm = 0;
  int64_t n = 0;
};

struct EvalPoint {
  int64_t step = 0;
  std::map<std::string, double> ppl;  // dataset name -> perplexity
  std::map<std::string, McScore> mc;  // dataset name -> scores
};

using ProjectionValues = std::map<std::string, double>;  // "q_proj" ... "down_proj" -> value

struct LayerSignal {
  int64_t layer = 0;
  ProjectionValues grad_sq, weight_norm, update_ratio, quant_error;
  double attn_rms = 0, mlp_rms = 0;
};

struct SignalPoint {
  int64_t step = 0;
  std::vector<LayerSignal> layers;
  ProjectionValues total_grad_sq;
};

struct RunEvent {
  int64_t step = 0;
  std::string kind;  // spike | nonfinite | loss_rise | analysis | freeze | release | skip (others kept as they are)
  std::string series;
  std::string reason;
  double value = 0, baseline = 0;
  std::vector<std::string> modules;
};

struct RunData {
  std::string dir;
  std::string label;
  bool has_metrics = false, has_signal = false, has_events = false;
  std::vector<TrainPoint> train;
  std::vector<EvalPoint> evals;
  std::vector<SignalPoint> signals;
  std::vector<RunEvent> events;
  nlohmann::json config;           // null when absent
  nlohmann::json summary;          // null when absent
  std::vector<std::string> notes;  // missing files, ignored partial lines
};

RunData load_run(const std::string& dir);

// Reads a JSONL file: calls visit(record, "<path>:<line>") for every non-blank line. A last line
// without a trailing newline that is not valid JSON is skipped and reported through the return
// value (true: a partial last line was ignored). Other bad lines throw qkd::Error "<path>:<line>: ...".
bool read_jsonl(const std::string& path,
                const std::function<void(const nlohmann::json& record, const std::string& where)>& visit);

// Parsers of single records (exposed for tests); errors name `where`.
TrainPoint parse_train_record(const nlohmann::json& record, const std::string& where);
EvalPoint parse_eval_record(const nlohmann::json& record, const std::string& where);
SignalPoint parse_signal_record(const nlohmann::json& record, const std::string& where);
RunEvent parse_event_record(const nlohmann::json& record, const std::string& where);

}  // namespace qkd::report
