#include "qkd/train/freeze_analysis.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace qkd::train {

namespace {

void drop_gradients(torch::nn::Module& model) {
  for (auto& p : model.parameters()) p.mutable_grad() = torch::Tensor();
}

void log_analysis(TrainingSession& s, const freeze::SignalAnalysis& analysis) {
  spdlog::info("{}", analysis.summary());
  for (const auto& g : analysis.groups)
    spdlog::info("  {}{:<9} grad_sq {:.4g}  x median {:.3g} (outlier on {} of {})  first update / weight {:.3g}{}",
                 g.layer >= 0 ? "layer" + std::to_string(g.layer) + "." : "", g.type, g.grad_sq, g.median_ratio,
                 g.outlier_batches, analysis.batches_used, g.first_update_ratio, g.frozen ? "  -> frozen" : "");
  if (s.run_dir().logs_open()) s.run_dir().events().write(analysis.to_json());
}

}  // namespace

void run_freeze_analysis(TrainingSession& s) {
  // The micro-batches steps 1, 2, ... will train on, no more than the run has (a teacher cache holds
  // no others).
  const auto& train = s.config().train();
  const int64_t batches = std::min(s.freeze().policy().analysis_batches(), train.steps * train.grad_accum);
  if (batches <= 0) return;
  data::DataStream stream(s.config().data(), &s.tokenizer());
  PhaseTimer phases(s.device(), false);
  std::vector<monitor::ProbeSample> samples;
  for (int64_t i = 0; i < batches; ++i) {
    const auto batch = s.local_micro_batch(stream);
    // One pass, not row shards: the monitor observes each forward whole.
    samples.push_back(s.monitor().probe([&] { s.distiller().distill(batch, 1, s.loss_scaler().scale(), phases); }));
    drop_gradients(*s.student());
  }
  s.teacher().seek(0);  // a cached teacher hands step 1 the first micro-batch again
  const auto outcome = s.freeze().start_from_analysis(samples, s.config().optim().lr);
  log_analysis(s, outcome.analysis);
  if (outcome.change) s.log_freeze_change(*outcome.change);
}

}  // namespace qkd::train
