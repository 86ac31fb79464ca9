#include "qkd/train/run_evaluation.h"

#include "qkd/eval/results.h"
#include "qkd/train/stop_signal.h"

namespace qkd::train {

namespace {

// Puts a model back into training mode after it was evaluated, whatever way the evaluation ends.
struct RestoreTrainingMode {
  model::LlamaForCausalLM& model;
  bool training;
  ~RestoreTrainingMode() {
    if (training) model->train();
  }
};

eval::EvalResults evaluate_model(TrainingSession& s, model::LlamaForCausalLM model, const std::vector<std::string>& mc,
                                 OnStop on_stop) {
  const auto& e = s.config().eval();
  const auto plan = eval::make_eval_plan(e.ppl, mc, e.seq_len, e.batch_size, e.max_windows, e.mc_limit, s.device());
  const RestoreTrainingMode restore{model, model->is_training()};
  model->eval();
  torch::NoGradGuard no_grad;
  const auto forward = [&](const torch::Tensor& ids) {
    if (on_stop == OnStop::abandon) throw_if_stop_requested();
    return model->forward(ids);
  };
  const auto results = eval::evaluate_all(forward, s.tokenizer(), plan);
  eval::require_finite(results);  // a run whose student or teacher went NaN stops here, non-zero
  return results;
}

}  // namespace

nlohmann::json evaluate_student(TrainingSession& s, OnStop on_stop) {
  const auto& e = s.config().eval();
  if (!e.evaluates_anything()) return nullptr;
  return eval::results_to_json(evaluate_model(s, s.student(), e.mc, on_stop));
}

nlohmann::json evaluate_perplexity_baselines(TrainingSession& s) {
  if (s.config().eval().ppl.empty()) return nullptr;
  const auto teacher = s.teacher().model();
  const nlohmann::json teacher_ppl =
      teacher ? eval::results_to_json(evaluate_model(s, teacher, {}, OnStop::abandon)).at("ppl") : nullptr;
  return {{"teacher", teacher_ppl},
          {"student", eval::results_to_json(evaluate_model(s, s.student(), {}, OnStop::abandon)).at("ppl")}};
}

}  // namespace qkd::train
