#pragma once
// The `eval` section of a run config: what the student is validated on during and after training.
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "qkd/common/config_fields.h"

namespace qkd::eval {

struct EvalConfig {
  std::vector<std::string> ppl;  // token files or JSONL text
  std::vector<std::string> mc;   // multiple-choice JSONL
  int64_t seq_len = 256;
  int64_t batch_size = 8;
  int64_t max_windows = 0;  // 0: all
  int64_t mc_limit = 0;     // 0: all items
  bool at_start = true;     // evaluate the initial student (round-to-nearest) too
  bool baselines = true;    // fresh runs: teacher and round-to-nearest perplexity on `ppl`, for comparison
  template <class Fields>
  void fields(Fields& f) {
    f.texts("ppl", ppl);
    f.texts("mc", mc);
    f.integer("seq_len", seq_len, 2, 1 << 20);
    f.integer("batch_size", batch_size, 1, 1 << 16);
    f.integer("max_windows", max_windows, 0, std::numeric_limits<int64_t>::max());
    f.integer("mc_limit", mc_limit, 0, std::numeric_limits<int64_t>::max());
    f.flag("at_start", at_start);
    f.flag("baselines", baselines);
  }
  void check(const std::string& path) const;  // every file exists
  bool evaluates_anything() const { return !ppl.empty() || !mc.empty(); }
};

}  // namespace qkd::eval
