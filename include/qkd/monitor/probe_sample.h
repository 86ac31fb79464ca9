#pragma once
// What one micro-batch's backward shows before any weight has moved: per projection its squared
// gradient norm and weight norm, per layer the RMS of the attention and MLP block outputs. The freeze
// analysis of `auto` reads a few of these before the first update (freeze/signal_analysis.h).
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace qkd::monitor {

struct ProjectionProbe {
  std::string module;  // "model.layers.3.self_attn.v_proj"
  int64_t layer = 0;
  std::string type;  // "v_proj"
  double grad_sq = 0.0;
  double weight_norm = 0.0;
  int64_t numel = 0;
};

struct ProbeSample {
  std::vector<ProjectionProbe> projections;  // in the model's order
  std::map<int64_t, double> attn_rms, mlp_rms;
};

}  // namespace qkd::monitor
