#include "qkd/train/training_session.h"

#include <spdlog/spdlog.h>

#include <filesystem>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/checkpoint/student_checkpoint.h"
#include "qkd/common/atomic_file.h"
#include "qkd/common/dtype_names.h"
#include "qkd/common/error.h"
#include "qkd/common/json_io.h"
#include "qkd/common/system.h"
#include "qkd/common/torch_compat.h"
#include "qkd/data/token_file.h"
#include "qkd/dist/launch.h"
#include "qkd/dist/replicas.h"
#include "qkd/dist/sharding.h"
#include "qkd/loss/head_kd_loss.h"
#include "qkd/ptq/gptq.h"
#include "qkd/quant/student.h"
#include "qkd/train/cache_teacher.h"
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

// With several ranks, "cuda" means this rank's GPU: the one its local rank names.
torch::Device rank_device(const RunConfig& config, const dist::LaunchInfo& launch) {
  auto device = parse_device(config.train.device);
  if (device.is_cuda() && !device.has_index() && launch.distributed()) {
    const auto gpus = static_cast<int>(torch::cuda::device_count());
    if (launch.local_rank >= gpus)
      fail("train.device", "local rank " + std::to_string(launch.local_rank) + " has no GPU of its own (" +
                               std::to_string(gpus) + " visible)");
    device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(launch.local_rank));
  }
  return device;
}

std::unique_ptr<dist::Communicator> join_ranks(const RunConfig& config, const dist::LaunchInfo& launch,
                                               const torch::Device& device) {
  if (launch.launcher == dist::Launcher::single) return std::make_unique<dist::Communicator>();
  if (config.kd.teacher == loss::TeacherSource::cache && launch.distributed())
    fail("kd.teacher", "\"cache\" runs in one process (the cache is read in one stream order); this run has " +
                           std::to_string(launch.world_size) + " ranks");
  // Each rank's console lines say whose they are (torchrun interleaves them).
  spdlog::set_pattern(fmt::format("[%H:%M:%S] rank {} %^%l%$ %v", launch.rank));
  dist::CommunicatorOptions options;
  options.backend = config.dist.backend;
  options.timeout = std::chrono::seconds(config.dist.timeout_s);
  return std::make_unique<dist::Communicator>(launch, options, device);
}

// LibTorch's CPU kernels for fp16 matmul are missing or slow: a CPU teacher asked for fp16 runs in fp32.
torch::Dtype teacher_dtype(const RunConfig& config, const torch::Device& device) {
  if (device.is_cpu() && config.teacher.dtype == torch::kFloat16) {
    spdlog::warn("teacher.dtype float16 computes in float32 on cpu (no fast fp16 matmul there)");
    return torch::kFloat32;
  }
  return config.teacher.dtype;
}

model::LlamaForCausalLM load_teacher(const RunConfig& config, const torch::Device& device) {
  const auto dtype = teacher_dtype(config, device);
  auto teacher = checkpoint::load_llama(config.teacher.path, {dtype, device});
  teacher->eval();
  for (auto& p : teacher->parameters()) p.requires_grad_(false);
  spdlog::info("teacher {} computed in {} on {}", config.teacher.path, dtype_name(dtype), device.str());
  return teacher;
}

// "scale_policy: checkpoint \"static\", config \"dynamic\"; ..." for the fields that differ.
std::string quant_differences(const quant::QuantSpec& saved, const quant::QuantSpec& current) {
  const auto a = quant::quant_spec_to_json(saved), b = quant::quant_spec_to_json(current);
  std::string out;
  for (const auto& [key, value] : b.items()) {
    const auto old = a.contains(key) ? json_excerpt(a.at(key)) : std::string("(absent)");
    if (!a.contains(key) || a.at(key) != value)
      out += (out.empty() ? "" : "; ") + key + ": checkpoint " + old + ", config " + json_excerpt(value);
  }
  for (const auto& [key, value] : a.items())
    if (!b.contains(key))
      out += (out.empty() ? "" : "; ") + key + ": checkpoint " + json_excerpt(value) + ", config (absent)";
  return out;
}

// student.init gptq: the teacher quantized by GPTQ (in fp32 on the CPU) on the first windows of a fresh
// copy of the training stream, which the run's own stream does not notice.
model::LlamaForCausalLM gptq_student(const RunConfig& config, std::vector<std::string>& quantized) {
  auto student = checkpoint::load_llama(config.teacher.path, {torch::kFloat32, torch::kCPU});
  quantized = quant::attach_quantizers(*student, config.quant);
  const auto& s = config.student;
  auto data = config.data;
  if (s.gptq_calib_seq_len > 0) data.seq_len = s.gptq_calib_seq_len;
  const auto tokenizer = tokenizer::load_tokenizer_for_checkpoint(config.teacher.path);
  data::DataStream stream(data, &tokenizer);
  ptq::GptqOptions options;
  options.damp = s.gptq_damp;
  options.act_order = s.gptq_act_order;
  options.latent = s.gptq_latent;
  ptq::gptq_quantize_student(*student, stream.next_batch(s.gptq_calib_batches), options);
  student->to(s.dtype);
  return student;
}

model::LlamaForCausalLM build_student(const RunConfig& config, const torch::Device& device,
                                      std::vector<std::string>& quantized) {
  const auto dtype = config.student.dtype;
  const auto& init = config.student.init;
  model::LlamaForCausalLM student{nullptr};
  if (init.kind == StudentInit::Kind::teacher) {
    student = checkpoint::load_llama(config.teacher.path, {dtype, torch::kCPU});
    quantized = quant::attach_quantizers(*student, config.quant);
  } else if (init.kind == StudentInit::Kind::gptq) {
    student = gptq_student(config, quantized);
  } else {
    auto loaded = checkpoint::load_model_or_student(init.path, {dtype, torch::kCPU});
    student = loaded.model;
    if (!loaded.quant)
      quantized = quant::attach_quantizers(*student, config.quant);
    else if (*loaded.quant != config.quant)
      fail("student.init", init.path + " was quantized with a different quant section (" +
                               quant_differences(*loaded.quant, config.quant) + ")");
    else
      quantized = quant::quantized_modules(*student);
  }
  student->to(device);
  student->train();
  student->set_activation_checkpointing(config.train.activation_checkpointing);
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

// dist.shard_optimizer: owners over every student parameter, so that a projection released later
// already has one.
std::map<std::string, int> shard_optimizer_state(const RunConfig& config, const dist::Communicator& ranks,
                                                 model::LlamaForCausalLMImpl& student) {
  std::map<std::string, int> owners;
  if (!config.dist.shard_optimizer || ranks.world_size() < 2) return owners;
  std::vector<std::string> names;
  std::vector<int64_t> sizes;
  for (const auto& item : student.named_parameters(/*recurse=*/true)) {
    names.push_back(item.key());
    sizes.push_back(item.value().numel());
  }
  const auto assigned = dist::shard_owners(sizes, ranks.world_size());
  for (size_t i = 0; i < names.size(); ++i) owners[names[i]] = assigned[i];
  return owners;
}

std::unique_ptr<optim::AdamW> build_optimizer(const RunConfig& config, model::LlamaForCausalLMImpl& student,
                                              const std::map<std::string, int>& owners, int rank) {
  optim::AdamWOptions options;
  options.beta1 = config.optim.beta1;
  options.beta2 = config.optim.beta2;
  options.eps = config.optim.eps;
  options.weight_decay = config.optim.weight_decay;
  options.moment_dtype = config.optim.moment_dtype;
  auto optimizer = std::make_unique<optim::AdamW>(options);
  if (!owners.empty()) optimizer->shard([owners, rank](const std::string& name) { return owners.at(name) == rank; });
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

// Checkpoints written before the freeze controller kept the frozen list beside the release schedule.
nlohmann::json saved_freeze_state(const nlohmann::json& state) {
  const auto freeze = state.value("freeze", nlohmann::json());
  if (freeze.is_object() && freeze.contains("frozen")) return freeze;
  return {{"frozen", state.at("frozen")}, {"release_lr", freeze}};
}

void restore_state(TrainingSession& s, const std::string& dir) {
  auto data = CheckpointStore::load(dir);
  check_identity(data.state.at("identity"), model_identity(s.config), dir);
  // Frozen modules first: the optimizer state then holds exactly the parameters still training.
  s.freeze->restore(saved_freeze_state(data.state), data.stable_weights, dir + "/stable_weights.safetensors");
  checkpoint::copy_weights_into(*s.student, data.student, dir + "/student.safetensors");
  checkpoint::load_quantizer_state_from(*s.student, data.student, dir + "/student.safetensors");
  s.optimizer->load_state(data.optimizer, dir + "/optimizer.safetensors");
  s.data->restore(data.state.at("data_cursor"));
  s.monitor->load_state(data.state.at("monitor"));
  restore_rng_state(data.state.at("rng"));
  s.step = data.step;
  s.skipped_steps = data.state.value("skipped_steps", int64_t{0});
  s.loss_scaler.load_state(data.state.value("loss_scale", nlohmann::json()));
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

// Token files hold ids the embedding must have; one out of range would crash mid-run with torch's
// "index out of range in self".
void check_token_sources(const data::DataConfig& data, int64_t vocab_size) {
  for (const auto& source : data.sources)
    if (data::is_token_file_format(data::resolve_source_format(source)))
      data::TokenFile::open(source.path).check_vocabulary(vocab_size);
}

namespace {
// The policy only freezes quantized projections: a policy that reaches none of them would train as if
// it were "none", without a word.
void check_freeze_reaches_quantized_modules(const RunConfig& config, const freeze::FreezePolicy& policy) {
  using freeze::FreezeMode;
  if (config.freeze.policy == FreezeMode::ov && policy.initial().empty())
    fail("freeze.policy", "\"ov\" would freeze nothing: no o_proj or v_proj is quantized (see quant.modules)");
  if (config.freeze.policy == FreezeMode::automatic && policy.watched_modules().empty())
    fail("freeze.auto_watch", "no watched projection is quantized (see quant.modules): auto would never freeze");
}

// Ranks other than 0 log nowhere: their records would repeat rank 0's.
std::unique_ptr<JsonlWriter> open_log(const RunConfig& config, const char* name, int64_t keep_up_to, bool writes) {
  if (!writes) return std::make_unique<JsonlWriter>();
  return std::make_unique<JsonlWriter>((fs::path(config.run_dir) / name).string(), keep_up_to);
}

// kd.teacher cache: the cache, checked against this run before anything is computed. The teacher
// model is not loaded.
std::unique_ptr<teacher_cache::CacheReader> open_teacher_cache(const RunConfig& config) {
  const auto& dir = config.kd.teacher_cache;
  std::unique_ptr<teacher_cache::CacheReader> reader;
  try {
    reader = std::make_unique<teacher_cache::CacheReader>(dir);
  } catch (const Error& e) {
    fail("kd.teacher_cache", e.what());
  }
  const auto& m = reader->manifest();
  teacher_cache::require_usable_for(m, teacher_cache_identity(config), config.train.steps * config.train.grad_accum,
                                    dir, "kd.teacher_cache");
  spdlog::info("teacher: top-{} log-probabilities cached in {} ({} micro-batches); the teacher model is not loaded",
               m.k, dir, m.micro_batches());
  return reader;
}

void open_teacher(TrainingSession& s) {
  if (s.config.kd.teacher == loss::TeacherSource::cache)
    s.teacher_cache = open_teacher_cache(s.config);
  else
    s.teacher = load_teacher(s.config, s.device);
}
}  // namespace

std::unique_ptr<TrainingSession> open_session(const RunConfig& config) {
  auto s = std::make_unique<TrainingSession>();
  s->config = config;
  set_cpu_threads(config.train.threads);
  torch::manual_seed(config.train.seed);
  const auto launch = dist::detect_launch_from_environment();
  s->device = rank_device(config, launch);
  s->ranks = join_ranks(config, launch, s->device);
  s->tokenizer = std::make_unique<tokenizer::Tokenizer>(tokenizer::load_tokenizer_for_checkpoint(config.teacher.path));
  s->data = std::make_unique<data::DataStream>(config.data, s->tokenizer.get());
  check_token_sources(config.data, s->tokenizer->vocab_size());
  eval::check_eval_inputs(config.eval.ppl, config.eval.mc, s->tokenizer->vocab_size());
  open_teacher(*s);
  s->student = build_student(config, s->device, s->quantized_modules);
  s->optimizer_owners = shard_optimizer_state(config, *s->ranks, *s->student);
  s->optimizer = build_optimizer(config, *s->student, s->optimizer_owners, s->ranks->rank());
  if (!s->optimizer_owners.empty())
    spdlog::info("optimizer state sharded over {} ranks: this rank keeps {:.1f} MB of it", s->ranks->world_size(),
                 static_cast<double>(s->optimizer->state_bytes()) / (1024.0 * 1024.0));
  s->monitor = std::make_unique<monitor::SignalMonitor>(config.monitor, s->student);
  if (config.freeze.policy == freeze::FreezeMode::automatic) s->monitor->watch_every_step(config.freeze.auto_watch);
  if (s->ranks->distributed())
    s->monitor->set_statistics_reducer(
        [ranks = s->ranks.get()](std::vector<double>& values) { dist::average_values(*ranks, values); });
  s->freeze = std::make_unique<freeze::FreezeController>(
      config.freeze, s->quantized_modules, s->student, *s->optimizer,
      [session = s.get()](const std::string& name) { return decays(session->config, name); });
  check_freeze_reaches_quantized_modules(config, s->freeze->policy());
  s->loss_scaler = LossScaler(config.train.precision == Precision::fp16, config.train.loss_scale,
                              config.train.loss_scale_growth_interval);
  for (const auto& line : config.unread_settings) spdlog::warn("{}", line);
  s->checkpoints = std::make_unique<CheckpointStore>(config.run_dir);
  const auto resume_from = checkpoint_to_resume(config, *s->checkpoints);
  // Everything is validated: only now does the run directory appear.
  const bool writes = s->ranks->is_root();
  s->created_run_dir = writes && !fs::exists(config.run_dir);
  if (writes) {
    fs::create_directories(config.run_dir);
    write_text_atomically((fs::path(config.run_dir) / "config.json").string(), config.resolved.dump(2) + "\n");
  }
  if (resume_from) restore(*s, *resume_from);
  // Replicas start equal (whatever a rank's own initialization did), and no rank goes on until every
  // rank has read the checkpoint that rank 0 may soon replace.
  dist::copy_from_root(*s->ranks, replicated_state(*s));
  s->ranks->barrier();
  // The next micro-batch the stream hands out: step x grad_accum (the stream counts its windows).
  if (s->teacher_cache) s->teacher_cache->seek(s->data->stats().windows / config.train.micro_batch);
  // A fresh start redoes everything, so records left by an attempt that never checkpointed go.
  const int64_t keep_records_up_to = resume_from ? s->step : -1;
  s->logs.metrics = open_log(config, "metrics.jsonl", keep_records_up_to, writes);
  s->logs.signal = open_log(config, "signal.jsonl", keep_records_up_to, writes);
  s->logs.events = open_log(config, "events.jsonl", keep_records_up_to, writes);
  if (!resume_from) {
    if (config.quant.act_bits > 0) calibrate_activations(*s);
    if (const auto change = s->freeze->freeze_at_start()) log_freeze_change(*s, *change);
  }
  // A shape an export format cannot hold fails now, not after the training it would waste.
  exporting::check_export(student_export_source(*s), config.export_.formats, export_options(config));
  spdlog::info("student: {} quantized projections ({} bits), {} trainable parameters", s->quantized_modules.size(),
               config.quant.bits, freeze::trainable_parameter_count(*s->student));
  return s;
}

MicroBatch prepare_micro_batch(const TrainingSession& s, const data::TokenBatch& windows) {
  MicroBatch batch;
  batch.input_ids = windows.input_ids.to(s.device);
  if (s.config.data.document_mask) batch.documents = model::document_layout(windows.document_starts());
  batch.labels = s.config.kd.ce_on == loss::CeTargets::responses
                     ? windows.input_ids.masked_fill(windows.prompt_tokens(), -1).to(s.device)
                     : batch.input_ids;
  return batch;
}

torch::Tensor teacher_logits(TrainingSession& s, const MicroBatch& batch) {
  const compat::NoAutocastScope no_autocast;
  torch::NoGradGuard no_grad;
  return s.teacher->forward(batch.input_ids, nullptr, batch.layout());
}

namespace {
// fp16's loss scale must multiply the fp32 logit gradient before any fp16 product, and it is only
// known in backward: that precision keeps the logits path.
bool loss_through_heads(const TrainingSession& s) { return s.config.train.precision != Precision::fp16; }

torch::Tensor teacher_hidden_states(TrainingSession& s, const MicroBatch& batch) {
  const compat::NoAutocastScope no_autocast;
  torch::NoGradGuard no_grad;
  return s.teacher->final_hidden_states(batch.input_ids, batch.layout());
}

loss::KdLossResult kd_loss_through_heads(TrainingSession& s, const torch::Tensor& teacher_hidden,
                                         const torch::Tensor& student_hidden, const MicroBatch& batch) {
  torch::Tensor teacher_head;
  {
    torch::NoGradGuard no_grad;
    teacher_head = s.teacher->lm_head_weight();
  }
  // The student's head products run under its autocast, as its own lm_head would.
  const compat::AutocastScope autocast(s.device, s.config.train.precision);
  return loss::kd_loss_from_hidden(teacher_hidden, teacher_head, student_hidden, s.student->lm_head_weight(),
                                   batch.labels, s.config.kd, batch.loss_denominators());
}
}  // namespace

TeacherTargets teacher_targets(TrainingSession& s, const MicroBatch& batch) {
  if (s.teacher_cache) return {torch::Tensor(), torch::Tensor(), s.teacher_cache->next(batch.input_ids)};
  if (loss_through_heads(s)) return {teacher_hidden_states(s, batch), torch::Tensor(), std::nullopt};
  return {torch::Tensor(), teacher_logits(s, batch), std::nullopt};
}

TeacherTargets teacher_target_rows(const TeacherTargets& t, int64_t begin, int64_t count) {
  const auto rows = [&](const torch::Tensor& x) { return x.defined() ? x.narrow(0, begin, count) : x; };
  TeacherTargets out{rows(t.hidden), rows(t.logits), std::nullopt};
  if (t.topk) out.topk = loss::topk_rows(*t.topk, begin, count);
  return out;
}

torch::Tensor student_outputs(TrainingSession& s, const TeacherTargets& targets, const MicroBatch& batch) {
  if (!targets.pair_with_student_hidden()) return student_logits(s, batch);
  const compat::AutocastScope autocast(s.device, s.config.train.precision);
  return s.student->final_hidden_states(batch.input_ids, batch.layout());
}

loss::KdLossResult distillation_loss(TrainingSession& s, const TeacherTargets& targets,
                                     const torch::Tensor& student_outputs, const MicroBatch& batch) {
  const auto* over = batch.loss_denominators();
  if (targets.topk) return loss::topk_kd_loss(*targets.topk, student_outputs, batch.labels, s.config.kd, over);
  if (targets.pair_with_student_hidden()) return kd_loss_through_heads(s, targets.hidden, student_outputs, batch);
  return loss::kd_loss(targets.logits, student_outputs, batch.labels, s.config.kd, over);
}

torch::Device run_device(const RunConfig& config) { return parse_device(config.train.device); }

model::LlamaForCausalLM load_teacher_model(const RunConfig& config, const torch::Device& device) {
  return load_teacher(config, device);
}

torch::Tensor student_logits(TrainingSession& s, const MicroBatch& batch) {
  const compat::AutocastScope autocast(s.device, s.config.train.precision);
  return s.student->forward(batch.input_ids, nullptr, batch.layout());
}

void log_freeze_change(TrainingSession& s, const freeze::FreezeChange& change) {
  spdlog::info("step {}: {} {} modules ({}): trainable parameters {} -> {}", change.step,
               freeze::change_kind_name(change.kind), change.modules.size(), change.reason, change.trainable_before,
               change.trainable_after);
  if (s.logs.events) s.logs.events->write(change.to_json());
}

exporting::ExportSource student_export_source(TrainingSession& s) {
  return exporting::ExportSource{*s.student, s.config.quant, s.config.teacher.path};
}

exporting::ExportOptions export_options(const RunConfig& config) {
  exporting::ExportOptions options;
  options.dtype = config.export_.dtype;
  options.gguf_type = config.export_.gguf_type;
  return options;
}

io::NamedTensors optimizer_state(TrainingSession& s) {
  if (s.optimizer_owners.empty()) return s.optimizer->state();
  std::map<std::string, std::vector<torch::Tensor>> parts;
  std::vector<torch::Tensor> tensors;
  std::vector<int> owners;
  for (const auto& name : s.optimizer->parameter_names()) {
    auto& p = parts[name] = s.optimizer->parameter_state(name);
    for (const auto& t : p) {
      tensors.push_back(t);
      owners.push_back(s.optimizer_owners.at(name));
    }
  }
  dist::broadcast_from_owners(*s.ranks, tensors, owners);
  return s.optimizer->state_from(parts);
}

void share_updated_parameters(TrainingSession& s) {
  if (s.optimizer_owners.empty()) return;
  std::vector<torch::Tensor> updated;
  std::vector<int> owners;
  for (const auto& item : s.student->named_parameters(/*recurse=*/true)) {
    const auto& p = item.value();
    if (!p.grad().defined() || !s.optimizer->has_parameter(item.key())) continue;
    updated.push_back(p);
    owners.push_back(s.optimizer_owners.at(item.key()));
  }
  dist::broadcast_from_owners(*s.ranks, updated, owners);
}

std::string save_checkpoint(TrainingSession& s) {
  // Every rank takes part in gathering a sharded optimizer's state; rank 0 writes.
  auto optimizer = optimizer_state(s);
  if (!s.ranks->is_root()) return s.checkpoints->directory_for_step(s.step);
  CheckpointData data;
  data.step = s.step;
  data.student = checkpoint::model_weights(*s.student, s.student->parameters().front().scalar_type());
  for (auto& item : quant::quantizer_state(*s.student)) data.student.push_back(std::move(item));
  data.optimizer = std::move(optimizer);
  data.stable_weights = s.freeze->rollback_weights();
  data.state = {{"identity", model_identity(s.config)}, {"data_cursor", s.data->cursor()},
                {"freeze", s.freeze->state()},          {"monitor", s.monitor->state()},
                {"rng", capture_rng_state()},           {"skipped_steps", s.skipped_steps},
                {"loss_scale", s.loss_scaler.state()}};
  const auto dir = s.checkpoints->save(data, s.config.checkpoint.keep_last);
  spdlog::info("checkpoint {}", dir);
  return dir;
}

std::vector<torch::Tensor> replicated_state(TrainingSession& s) {
  std::vector<torch::Tensor> state;
  for (const auto& p : s.student->parameters()) state.push_back(p);
  for (const auto& b : s.student->buffers()) state.push_back(b);
  return state;
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
  // kd.teacher cache: no teacher model to evaluate; its perplexity is absent (null).
  const nlohmann::json teacher =
      s.teacher ? eval::results_to_json(evaluate_model(s, s.teacher, {}, OnStop::abandon)).at("ppl") : nullptr;
  return {{"teacher", teacher},
          {"student", eval::results_to_json(evaluate_model(s, s.student, {}, OnStop::abandon)).at("ppl")}};
}

}  // namespace qkd::train
