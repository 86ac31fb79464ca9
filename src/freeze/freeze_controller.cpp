#include "qkd/freeze/freeze_controller.h"

#include <algorithm>

#include "qkd/common/error.h"

namespace qkd::freeze {

const EnumTable<ChangeKind>& change_kinds() {
  static const EnumTable<ChangeKind> table{{ChangeKind::freeze, "freeze"}, {ChangeKind::release, "release"}};
  return table;
}

nlohmann::json FreezeChange::to_json() const {
  return {{"step", step},     {"kind", change_kinds().name(kind)},       {"modules", modules},
          {"reason", reason}, {"trainable_before", trainable_before}, {"trainable_after", trainable_after}};
}

std::vector<std::string> set_module_trainable(model::LlamaForCausalLMImpl& model, const std::string& module_name,
                                              bool trainable) {
  std::vector<std::string> names;
  const auto prefix = module_name + ".";
  for (auto& item : model.named_parameters(/*recurse=*/true)) {
    if (item.key().rfind(prefix, 0) != 0) continue;
    auto param = item.value();
    param.requires_grad_(trainable);
    param.mutable_grad() = torch::Tensor();
    names.push_back(item.key());
  }
  if (names.empty()) fail("freeze", "module '" + module_name + "' has no parameters");
  return names;
}

int64_t trainable_parameter_count(model::LlamaForCausalLMImpl& model) {
  int64_t n = 0;
  for (const auto& p : model.parameters()) n += p.requires_grad() ? p.numel() : 0;
  return n;
}

FreezeController::FreezeController(FreezeConfig config, std::vector<std::string> quantized_modules,
                                   model::LlamaForCausalLM student, optim::AdamW& optimizer,
                                   std::function<bool(const std::string&)> decays)
    : policy_(config, std::move(quantized_modules)),
      student_(std::move(student)),
      optimizer_(optimizer),
      decays_(std::move(decays)),
      releases_(config.policy == FreezeMode::automatic ? config.release_lr_factor : 0.0, config.release_calm_steps) {}

void FreezeController::stop_training(const std::string& module) {
  for (const auto& name : set_module_trainable(*student_, module, false)) optimizer_.remove_parameter(name);
  frozen_.insert(module);
}

// A released projection starts with fresh optimizer state, its learning rate ramped over
// release_warmup_steps: its first full-size Adam step, sign(g) x lr on every element, is what
// destabilized it.
void FreezeController::start_training(const std::string& module) {
  auto params = student_->named_parameters(/*recurse=*/true);
  for (const auto& name : set_module_trainable(*student_, module, true))
    optimizer_.add_parameter(name, params[name], decays_(name), policy_.config().release_warmup_steps);
  frozen_.erase(module);
}

FreezeChange FreezeController::apply(ChangeKind kind, const std::vector<std::string>& modules, std::string reason,
                                     int64_t step) {
  FreezeChange change{kind, modules, std::move(reason), step, trainable_parameter_count(*student_), 0};
  for (const auto& module : modules) kind == ChangeKind::freeze ? stop_training(module) : start_training(module);
  change.trainable_after = trainable_parameter_count(*student_);
  return change;
}

std::optional<FreezeChange> FreezeController::freeze_at_start() {
  const auto modules = policy_.initial();
  if (modules.empty()) return std::nullopt;
  return apply(ChangeKind::freeze, modules, std::string("freeze.policy ") + freeze_modes().name(policy_.config().policy), 0);
}

AnalysisOutcome FreezeController::start_from_analysis(const std::vector<monitor::ProbeSample>& samples, double lr) {
  const auto& config = policy_.config();
  AnalysisOutcome out{analyse_signal_propagation(samples, config.scope, config.analysis_factor, lr, policy_.modules()),
                      std::nullopt};
  if (out.analysis.modules.empty()) return out;
  analysed_types_ = out.analysis.frozen_types();
  out.change = apply(ChangeKind::freeze, out.analysis.modules, "auto: " + out.analysis.summary(), 0);
  releases_.note_freeze(out.analysis.modules, lr);
  return out;
}

std::vector<std::string> FreezeController::watched_every_step() const {
  auto types = policy_.watched_every_step();
  if (types.empty()) return types;
  for (const auto& t : analysed_types_)
    if (std::find(types.begin(), types.end(), t) == types.end()) types.push_back(t);
  return types;
}

std::optional<FreezeChange> FreezeController::release_due(int64_t step, double lr) {
  const auto modules = releases_.take_due(lr, calm_steps_);
  if (modules.empty()) return std::nullopt;
  char reason[96];
  std::snprintf(reason, sizeof(reason), "auto: learning rate decayed to %.3g, %lld calm steps", lr,
                static_cast<long long>(calm_steps_));
  return apply(ChangeKind::release, modules, reason, step);
}

namespace {
bool is_instability(const monitor::InstabilityEvent& e) {
  return e.kind == monitor::EventKind::spike || e.kind == monitor::EventKind::nonfinite ||
         e.kind == monitor::EventKind::loss_rise;
}
}  // namespace

Reaction FreezeController::react(const std::vector<monitor::InstabilityEvent>& events, int64_t step, double lr) {
  Reaction reaction;
  calm_steps_ = std::any_of(events.begin(), events.end(), is_instability) ? 0 : calm_steps_ + 1;
  const auto modules = policy_.react(events, frozen_, watched_every_step());
  if (modules.empty()) return reaction;
  // The weights go back before the freeze, while the module is still the one the copies came from.
  if (policy_.rolls_back()) reaction.rolled_back = stable_.restore(*student_, modules);
  reaction.change =
      apply(ChangeKind::freeze, modules, "auto: monitor saw o/v instability at step " + std::to_string(step), step);
  releases_.note_freeze(modules, lr);
  reaction.skip_update = policy_.rolls_back();
  return reaction;
}

void FreezeController::keep_calm_weights() {
  if (!policy_.rolls_back()) return;
  stable_.capture(*student_, policy_.rollback_candidates(frozen_, watched_every_step()));
}

nlohmann::json FreezeController::state() const {
  return {{"frozen", std::vector<std::string>(frozen_.begin(), frozen_.end())},
          {"release_lr", releases_.state()},
          {"calm_steps", calm_steps_},
          {"analysed_types", analysed_types_}};
}

void FreezeController::restore(const nlohmann::json& state, const io::NamedTensors& rollback_weights,
                               const std::string& source) {
  if (!state.is_object() || !state.contains("frozen") || !state.at("frozen").is_array())
    fail(source, "freeze state has no \"frozen\" list");
  for (const auto& module : state.at("frozen").get<std::vector<std::string>>()) stop_training(module);
  releases_.load_state(state.value("release_lr", nlohmann::json()));
  // Checkpoints from before the analysis and the calm count have neither: no analysed types, no calm.
  calm_steps_ = state.value("calm_steps", int64_t{0});
  analysed_types_ = state.value("analysed_types", std::vector<std::string>{});
  stable_.load_state(rollback_weights, *student_, source);
}

}  // namespace qkd::freeze
