#include "qkd/train/training_session.h"

#include <spdlog/spdlog.h>

#include <filesystem>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/checkpoint/student_checkpoint.h"
#include "qkd/common/atomic_file.h"
#include "qkd/common/error.h"
#include "qkd/common/json_io.h"
#include "qkd/common/system.h"
#include "qkd/data/token_file.h"
#include "qkd/quant/student.h"
#include "qkd/train/rng_state.h"
#include "qkd/train/stop_signal.h"

namespace qkd::train {

namespace fs = std::filesystem;

namespace {

torch::Device parse_device(const std::string& name) {
  if (name != "cpu" && !torch::cuda::is_available())
    fail("train.device", "\"" + name + "\" requested but CUDA is not available");
  return torch::Device(name);
}

// CPU kernels for fp16 matmul are missing or slow; a CPU teacher runs in fp32 (or bf16 if asked).
torch::Dtype teacher_dtype(const RunConfig& config, const torch::Device& device) {
  auto dtype = checkpoint::parse_dtype(config.teacher.dtype, "teacher.dtype");
  if (device.is_cpu() && dtype == torch::kFloat16) dtype = torch::kFloat32;
  return dtype;
}

model::LlamaForCausalLM load_teacher(const RunConfig& config, const torch::Device& device) {
  const auto dtype = teacher_dtype(config, device);
  auto teacher = checkpoint::load_llama(config.teacher.path, {dtype, device});
  teacher->eval();
  for (auto& p : teacher->parameters()) p.requires_grad_(false);
  spdlog::info("teacher {} computed in {} on {}", config.teacher.path, checkpoint::dtype_to_string(dtype),
               device.str());
  return teacher;
}

model::LlamaForCausalLM build_student(const RunConfig& config, const torch::Device& device,
                                      std::vector<std::string>& quantized) {
  const auto dtype = checkpoint::parse_dtype(config.student.dtype, "student.dtype");
  model::LlamaForCausalLM student{nullptr};
  if (config.student.path == "teacher") {
    student = checkpoint::load_llama(config.teacher.path, {dtype, torch::kCPU});
    quantized = quant::attach_quantizers(*student, config.quant);
  } else {
    auto loaded = checkpoint::load_model_or_student(config.student.path, {dtype, torch::kCPU});
    student = loaded.model;
    if (!loaded.quant)
      quantized = quant::attach_quantizers(*student, config.quant);
    else if (*loaded.quant != config.quant)
      fail("student.init", config.student.path + " was quantized with a different quant section");
    else
      quantized = quant::quantized_modules(*student);
  }
  student->to(device);
  student->train();
  return student;
}

bool exempt_from_decay(const std::string& name) {
  return name.find("norm") != std::string::npos || name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0 ||
         name.find("_quantizer.") != std::string::npos;
}

bool is_projection_parameter(const std::string& name) {
  return name.find(".self_attn.") != std::string::npos || name.find(".mlp.") != std::string::npos;
}

bool decays(const RunConfig& config, const std::string& name) {
  return config.optim.decay_norms_and_biases || !exempt_from_decay(name);
}

std::unique_ptr<AdamW> build_optimizer(const RunConfig& config, model::LlamaForCausalLMImpl& student) {
  auto optimizer = std::make_unique<AdamW>(
      AdamWOptions{config.optim.beta1, config.optim.beta2, config.optim.eps, config.optim.weight_decay});
  for (auto& item : student.named_parameters(/*recurse=*/true)) {
    auto param = item.value();
    if (!config.optim.train_embeddings && !is_projection_parameter(item.key())) param.requires_grad_(false);
    if (!param.requires_grad()) continue;
    optimizer->add_parameter(item.key(), param, decays(config, item.key()));
  }
  return optimizer;
}

// Refuses a checkpoint whose teacher/student/quant sections differ from the config, showing how.
void check_identity(const nlohmann::json& saved, const nlohmann::json& current, const std::string& dir) {
  if (saved == current) return;
  std::string diff;
  for (const auto& op : nlohmann::json::diff(saved, current)) {
    diff += (diff.empty() ? "" : "; ") + op.value("path", std::string()) + ": checkpoint " +
            (saved.contains(nlohmann::json::json_pointer(op.value("path", std::string("/"))))
                 ? json_excerpt(saved.at(nlohmann::json::json_pointer(op.value("path", std::string("/")))))
                 : std::string("(absent)")) +
            ", config " + json_excerpt(op.value("value", nlohmann::json()));
  }
  fail(dir, "checkpoint was made with a different model or quantizer config (" + diff + ")");
}

std::optional<std::string> checkpoint_to_resume(const RunConfig& config, const CheckpointStore& store) {
  const auto& resume = config.checkpoint.resume;
  if (resume == "never") {
    if (store.newest())
      fail("checkpoint.resume",
           "\"never\" but " + config.run_dir + " already has checkpoints; use auto or another run_dir");
    return std::nullopt;
  }
  if (resume == "auto") return store.newest();
  if (!fs::is_directory(resume))
    fail("checkpoint.resume", "expected auto, never or a checkpoint directory, got \"" + resume + "\"");
  return resume;
}

void restore_state(TrainingSession& s, const std::string& dir);

// state.json was written by this program, but a hand-edited or damaged one must still fail with
// its name and not nlohmann's bare "key 'identity' not found".
void restore(TrainingSession& s, const std::string& dir) {
  try {
    restore_state(s, dir);
  } catch (const nlohmann::json::exception& e) {
    fail(dir + "/state.json", "malformed checkpoint state: " + json_error_text(e));
  }
}

void restore_state(TrainingSession& s, const std::string& dir) {
  auto data = CheckpointStore::load(dir);
  check_identity(data.state.at("identity"), model_identity(s.config), dir);
  for (const auto& module : data.state.at("frozen").get<std::vector<std::string>>()) {
    for (const auto& name : monitor::freeze_module(*s.student, module)) s.optimizer->remove_parameter(name);
    s.frozen_modules.insert(module);
  }
  checkpoint::copy_weights_into(*s.student, data.student, dir + "/student.safetensors");
  checkpoint::load_quantizer_state_from(*s.student, data.student, dir + "/student.safetensors");
  s.optimizer->load_state(data.optimizer, dir + "/optimizer.safetensors");
  s.data->restore(data.state.at("data_cursor"));
  s.monitor->load_state(data.state.at("monitor"));
  s.freeze->load_state(data.state.value("freeze", nlohmann::json()));
  s.stable_weights.load_state(data.stable_weights, *s.student, dir + "/stable_weights.safetensors");
  restore_rng_state(data.state.at("rng"));
  s.step = data.step;
  s.skipped_steps = data.state.value("skipped_steps", int64_t{0});
  s.loss_scale = data.state.value("loss_scale", 65536.0);
  spdlog::info("resumed from {} at step {}", dir, s.step);
}

// Input ranges from the first act_calib_batches batches of a fresh copy of the training stream (the
// run's own stream is left untouched, so calibration does not shift the data order).
void calibrate_activations(TrainingSession& s) {
  data::DataStream calibration(s.config.data, s.tokenizer.get());
  quant::begin_activation_calibration(*s.student);
  torch::NoGradGuard no_grad;
  for (int64_t i = 0; i < s.config.quant.act_calib_batches; ++i)
    s.student->forward(calibration.next_batch(s.config.train.micro_batch).to(s.device));
  quant::end_activation_calibration(*s.student);
  spdlog::info("calibrated {}-bit input ranges on {} batches", s.config.quant.act_bits,
               s.config.quant.act_calib_batches);
}

}  // namespace

int64_t trainable_parameter_count(model::LlamaForCausalLMImpl& model) {
  int64_t n = 0;
  for (const auto& p : model.parameters()) n += p.requires_grad() ? p.numel() : 0;
  return n;
}

namespace {
// Token files hold ids the embedding must have; one out of range would crash mid-run with torch's
// "index out of range in self".
void check_token_sources(const data::DataConfig& data, int64_t vocab_size) {
  for (const auto& source : data.sources)
    if (data::is_token_file_format(data::resolve_source_format(source)))
      data::TokenFile::open(source.path).check_vocabulary(vocab_size);
}
}  // namespace

namespace {
// The policy only freezes quantized projections: a policy that reaches none of them would train as if
// it were "none", without a word.
void check_freeze_reaches_quantized_modules(const RunConfig& config, const monitor::FreezePolicy& freeze) {
  using monitor::FreezeMode;
  if (config.freeze.policy == FreezeMode::ov && freeze.initial().empty())
    fail("freeze.policy", "\"ov\" would freeze nothing: no o_proj or v_proj is quantized (see quant.modules)");
  if (config.freeze.policy == FreezeMode::automatic && freeze.watched_modules().empty())
    fail("freeze.auto_watch", "no watched projection is quantized (see quant.modules): auto would never freeze");
}
}  // namespace

std::unique_ptr<TrainingSession> open_session(const RunConfig& config) {
  auto s = std::make_unique<TrainingSession>();
  s->config = config;
  set_cpu_threads(config.train.threads);
  torch::manual_seed(config.train.seed);
  s->device = parse_device(config.train.device);
  s->tokenizer = std::make_unique<tokenizer::Tokenizer>(tokenizer::load_tokenizer_for_checkpoint(config.teacher.path));
  s->data = std::make_unique<data::DataStream>(config.data, s->tokenizer.get());
  check_token_sources(config.data, s->tokenizer->vocab_size());
  eval::check_eval_inputs(config.eval.ppl, config.eval.mc, s->tokenizer->vocab_size());
  s->teacher = load_teacher(config, s->device);
  s->student = build_student(config, s->device, s->quantized_modules);
  s->optimizer = build_optimizer(config, *s->student);
  s->monitor = std::make_unique<monitor::SignalMonitor>(config.monitor, s->student);
  if (config.freeze.policy == monitor::FreezeMode::automatic) s->monitor->watch_every_step(config.freeze.auto_watch);
  s->freeze = std::make_unique<monitor::FreezePolicy>(config.freeze, s->quantized_modules);
  check_freeze_reaches_quantized_modules(config, *s->freeze);
  for (const auto& line : config.unread_settings) spdlog::warn("{}", line);
  s->checkpoints = std::make_unique<CheckpointStore>(config.run_dir);
  const auto resume_from = checkpoint_to_resume(config, *s->checkpoints);
  // Everything is validated: only now does the run directory appear.
  s->created_run_dir = !fs::exists(config.run_dir);
  fs::create_directories(config.run_dir);
  write_text_atomically((fs::path(config.run_dir) / "config.json").string(), config.resolved.dump(2) + "\n");
  if (resume_from) restore(*s, *resume_from);
  // A fresh start redoes everything, so records left by an attempt that never checkpointed go.
  const int64_t keep_records_up_to = resume_from ? s->step : -1;
  s->metrics = std::make_unique<JsonlWriter>((fs::path(config.run_dir) / "metrics.jsonl").string(), keep_records_up_to);
  s->signal = std::make_unique<JsonlWriter>((fs::path(config.run_dir) / "signal.jsonl").string(), keep_records_up_to);
  s->events = std::make_unique<JsonlWriter>((fs::path(config.run_dir) / "events.jsonl").string(), keep_records_up_to);
  if (!resume_from) {
    if (config.quant.act_bits > 0) calibrate_activations(*s);
    freeze_modules(*s, s->freeze->initial(), "freeze.policy " + monitor::freeze_mode_name(config.freeze.policy), 0);
  }
  // A shape an export format cannot hold fails now, not after the training it would waste.
  exporting::check_export(student_export_source(*s), config.export_.formats, export_options(config));
  spdlog::info("student: {} quantized projections ({} bits), {} trainable parameters", s->quantized_modules.size(),
               config.quant.bits, trainable_parameter_count(*s->student));
  return s;
}

namespace {
void log_trainable_change(TrainingSession& s, const char* kind, const std::vector<std::string>& modules,
                          const std::string& reason, int64_t step, int64_t before) {
  const int64_t after = trainable_parameter_count(*s.student);
  spdlog::info("{} {} modules ({}): trainable parameters {} -> {}", kind, modules.size(), reason, before, after);
  if (s.events)
    s.events->write({{"step", step},
                     {"kind", kind},
                     {"modules", modules},
                     {"reason", reason},
                     {"trainable_before", before},
                     {"trainable_after", after}});
}
}  // namespace

void freeze_modules(TrainingSession& s, const std::vector<std::string>& modules, const std::string& reason,
                    int64_t step) {
  if (modules.empty()) return;
  const int64_t before = trainable_parameter_count(*s.student);
  for (const auto& module : modules) {
    for (const auto& name : monitor::freeze_module(*s.student, module)) s.optimizer->remove_parameter(name);
    s.frozen_modules.insert(module);
  }
  log_trainable_change(s, "freeze", modules, reason, step, before);
}

void release_modules(TrainingSession& s, const std::vector<std::string>& modules, const std::string& reason,
                     int64_t step) {
  if (modules.empty()) return;
  const int64_t before = trainable_parameter_count(*s.student);
  auto params = s.student->named_parameters(/*recurse=*/true);
  for (const auto& module : modules) {
    for (const auto& name : monitor::release_module(*s.student, module))
      s.optimizer->add_parameter(name, params[name], decays(s.config, name), s.config.freeze.release_warmup_steps);
    s.frozen_modules.erase(module);
  }
  s.monitor->forget(modules);
  log_trainable_change(s, "release", modules, reason, step, before);
}

exporting::ExportSource student_export_source(TrainingSession& s) {
  return exporting::ExportSource{*s.student, s.config.quant, s.config.teacher.path};
}

exporting::ExportOptions export_options(const RunConfig& config) {
  exporting::ExportOptions options;
  options.dtype = checkpoint::parse_dtype(config.export_.dtype, "export.dtype");
  options.gguf_type = config.export_.gguf_type;
  return options;
}

std::string save_checkpoint(TrainingSession& s) {
  CheckpointData data;
  data.step = s.step;
  data.student = checkpoint::model_weights(*s.student, s.student->parameters().front().scalar_type());
  for (auto& item : quant::quantizer_state(*s.student)) data.student.push_back(std::move(item));
  data.optimizer = s.optimizer->state();
  data.stable_weights = s.stable_weights.state();
  data.state = {{"identity", model_identity(s.config)},
                {"data_cursor", s.data->cursor()},
                {"frozen", std::vector<std::string>(s.frozen_modules.begin(), s.frozen_modules.end())},
                {"freeze", s.freeze->state()},
                {"monitor", s.monitor->state()},
                {"rng", capture_rng_state()},
                {"skipped_steps", s.skipped_steps},
                {"loss_scale", s.loss_scale}};
  const auto dir = s.checkpoints->save(data, s.config.checkpoint.keep_last);
  spdlog::info("checkpoint {}", dir);
  return dir;
}

namespace {
eval::EvalResults evaluate_model(TrainingSession& s, model::LlamaForCausalLM model, const std::vector<std::string>& mc,
                                 OnStop on_stop) {
  const auto& e = s.config.eval;
  const auto plan = eval::make_eval_plan(e.ppl, mc, e.seq_len, e.batch_size, e.max_windows, e.mc_limit, s.device);
  const bool was_training = model->is_training();
  model->eval();
  torch::NoGradGuard no_grad;
  const auto forward = [&](const torch::Tensor& ids) {
    if (on_stop == OnStop::abandon) throw_if_stop_requested();
    return model->forward(ids);
  };
  struct RestoreMode {
    model::LlamaForCausalLM& model;
    bool training;
    ~RestoreMode() {
      if (training) model->train();
    }
  } restore{model, was_training};
  const auto results = eval::evaluate_all(forward, *s.tokenizer, plan);
  return results;
}
}  // namespace

nlohmann::json evaluate_student(TrainingSession& s, OnStop on_stop) {
  const auto& e = s.config.eval;
  if (e.ppl.empty() && e.mc.empty()) return nullptr;
  return eval::results_to_json(evaluate_model(s, s.student, e.mc, on_stop));
}

nlohmann::json evaluate_perplexity_baselines(TrainingSession& s) {
  if (s.config.eval.ppl.empty()) return nullptr;
  return {{"teacher", eval::results_to_json(evaluate_model(s, s.teacher, {}, OnStop::abandon)).at("ppl")},
          {"student", eval::results_to_json(evaluate_model(s, s.student, {}, OnStop::abandon)).at("ppl")}};
}

}  // namespace qkd::train
