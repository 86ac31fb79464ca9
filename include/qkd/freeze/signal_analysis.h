#pragma once
// auto's signal-propagation analysis: the paper's analysis (which projections take the largest
// gradients), run online on the first micro-batches of the run before any weight moves, and turned
// into the projections that start frozen.
//
// The rule. For each analysis micro-batch b and each group g, r_g(b) = grad_sq_g(b) / the median of
// grad_sq over g's pool, where
//   scope all:   g is a projection type, grad_sq its squared gradient norm summed over the layers (the
//                paper's statistic), and the pool is every type;
//   scope layer: g is one projection, and the pool is the projections of its layer.
// g starts frozen when r_g(b) > freeze.analysis_factor on more than half of the micro-batches. A ratio
// to the median does not depend on the loss scale or on the model's size, and the majority keeps one
// unusual micro-batch from deciding. Micro-batches with a non-finite statistic are left out and
// counted. The first update's update-to-weight ratio (AdamW's first step moves every element by the
// learning rate, so lr x sqrt(n) / ||W||) and the block output RMS are measured and logged beside it.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "qkd/freeze/freeze_config.h"
#include "qkd/monitor/probe_sample.h"

namespace qkd::freeze {

struct AnalysisGroup {
  int64_t layer = -1;  // -1: the type over all layers (scope all)
  std::string type;
  double grad_sq = 0.0;             // median over the micro-batches used
  std::vector<double> ratio;        // r_g(b), one per micro-batch used
  double median_ratio = 0.0;        // their median
  int64_t outlier_batches = 0;      // micro-batches with r_g(b) > factor
  double first_update_ratio = 0.0;  // lr x sqrt(n) / ||W||
  bool frozen = false;
};

struct LayerActivation {
  double attn_rms = 0.0, mlp_rms = 0.0;  // mean over the micro-batches used
};

struct SignalAnalysis {
  double factor = 0.0;
  double lr = 0.0;
  int64_t batches_used = 0, batches_skipped = 0;
  std::vector<AnalysisGroup> groups;
  std::map<int64_t, LayerActivation> activations;
  std::vector<std::string> modules;  // what starts frozen, in the model's order

  // The projection types among `modules` ("o_proj", "v_proj").
  std::vector<std::string> frozen_types() const;
  // One line: the outliers with their median ratio, or that there were none.
  std::string summary() const;
  // The events.jsonl record (step 0, kind "analysis").
  nlohmann::json to_json() const;
};

// The rule above over `samples` (one per analysis micro-batch), among the projections `candidates`
// (module names; others are not analysed). `lr`: the learning rate of the first update.
SignalAnalysis analyse_signal_propagation(const std::vector<monitor::ProbeSample>& samples, FreezeScope scope,
                                          double factor, double lr, const std::vector<std::string>& candidates);

}  // namespace qkd::freeze
