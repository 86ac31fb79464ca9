#include "qkd/train/training_session.h"

#include <spdlog/spdlog.h>

#include "qkd/checkpoint/hf_config.h"
#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/common/error.h"
#include "qkd/common/file_digest.h"
#include "qkd/teacher_cache/manifest.h"
#include "qkd/train/rank_agreement.h"
#include "qkd/common/memory.h"
#include "qkd/common/system.h"
#include "qkd/model/memory_estimate.h"
#include "qkd/distributed/launch.h"
#include "qkd/distributed/replicas.h"
#include "qkd/eval/results.h"
#include "qkd/quant/student.h"
#include "qkd/train/freeze_analysis.h"
#include "qkd/train/run_setup.h"

namespace qkd::train {

namespace {

std::unique_ptr<distributed::Communicator> join_ranks(const RunConfig& config, const distributed::LaunchInfo& launch,
                                                      const torch::Device& device) {
  if (launch.launcher == distributed::Launcher::single) return std::make_unique<distributed::Communicator>();
  if (config.kd().teacher == loss::TeacherSource::cache && launch.distributed())
    fail("kd.teacher", "\"cache\" runs in one process (the cache is read in one stream order); this run has " +
                           std::to_string(launch.world_size) + " ranks");
  // Each rank's console lines say whose they are (torchrun interleaves them).
  spdlog::set_pattern(fmt::format("[%H:%M:%S] rank {} %^%l%$ %v", launch.rank));
  return std::make_unique<distributed::Communicator>(launch, config.distributed().communicator(), device);
}

// Every student parameter gets an owner (trained now or not); the trained ones are registered.
std::unique_ptr<distributed::ShardedOptimizer> build_optimizer(const RunConfig& config,
                                                              model::LlamaForCausalLMImpl& student,
                                                              distributed::Communicator& ranks) {
  std::vector<std::pair<std::string, torch::Tensor>> parameters;
  for (const auto& item : student.named_parameters(/*recurse=*/true)) parameters.emplace_back(item.key(), item.value());
  const auto& dist = config.distributed();
  auto optimizer = std::make_unique<distributed::ShardedOptimizer>(
      ranks, config.optim().adamw(), parameters, distributed::ShardingOptions{dist.shard_optimizer, dist.bucket_bytes()});
  for (auto& [name, param] : parameters) {
    if (!config.optim().trains(name)) param.requires_grad_(false);
    if (param.requires_grad()) optimizer->local().add_parameter(name, param, config.optim().decays(name));
  }
  if (optimizer->sharded())
    spdlog::info("optimizer state sharded over {} ranks: this rank keeps {:.1f} MB of it", ranks.world_size(),
                 static_cast<double>(optimizer->state_bytes()) / (1024.0 * 1024.0));
  return optimizer;
}

std::unique_ptr<monitor::SignalMonitor> build_monitor(const RunConfig& config, model::LlamaForCausalLM student,
                                                      distributed::Communicator& ranks) {
  auto monitor = std::make_unique<monitor::SignalMonitor>(config.monitor(), student);
  if (ranks.distributed())
    monitor->set_statistics_reducer([&ranks](std::vector<double>& values) { distributed::average_values(ranks, values); });
  return monitor;
}

// The teacher as its bytes, not its path: a teacher replaced at the same path must not go unnoticed by
// the run that resumes on it.
std::string teacher_contents_digest(const RunConfig& config) {
  auto files = checkpoint::weight_files(config.teacher().path);
  files.push_back(config.teacher().path + "/config.json");
  return files_digest(files);
}

// A step, or an evaluation batch, that cannot fit in the machine's memory is refused naming its setting
// before anything is allocated (on a GPU the allocator says so itself, naming the tensor).
void check_memory_fits(const RunConfig& config, const model::LlamaConfig& model, const torch::Device& device) {
  if (!device.is_cpu()) return;
  const auto& train = config.train();
  const int64_t element = static_cast<int64_t>(c10::elementSize(config.student().dtype));
  const model::BatchShape student{train.micro_batch, config.data().seq_len, true, config.compute().activation_checkpointing,
                                  3 * std::min<int64_t>(config.kd().chunk_tokens, train.micro_batch * config.data().seq_len),
                                  element};
  const model::BatchShape teacher{train.micro_batch, config.data().seq_len, false, false, 0, 4};
  require_memory(model::forward_bytes(model, student) + model::forward_bytes(model, teacher), "train.micro_batch",
                 fmt::format("micro-batches of {} x {} tokens (data.seq_len)", train.micro_batch, config.data().seq_len));
  const auto& e = config.eval();
  if (!e.evaluates_anything()) return;
  const model::BatchShape eval{e.batch_size, e.seq_len, false, false, e.batch_size * e.seq_len, 4};
  require_memory(model::forward_bytes(model, eval), "eval.batch_size",
                 fmt::format("evaluation batches of {} x {} tokens (eval.seq_len)", e.batch_size, e.seq_len));
}

// Positions past max_position_embeddings are computed (rotary tables extend) but were never trained.
void warn_about_positions(const RunConfig& config, const model::LlamaConfig& model) {
  for (const auto& [setting, seq] : {std::pair<const char*, int64_t>{"data.seq_len", config.data().seq_len},
                                     {"eval.seq_len", config.eval().seq_len}})
    if (seq > model.max_position_embeddings && (std::string(setting) == "data.seq_len" || config.eval().evaluates_anything()))
      spdlog::warn("{} {} is beyond the model's max_position_embeddings {}: positions it never saw in training",
                   setting, seq, model.max_position_embeddings);
}

// A sliding-window model runs only where its window covers every sequence of the run.
void check_attention_spans(const RunConfig& config, const model::LlamaConfig& model) {
  const auto source = config.teacher().path + "/config.json";
  model::check_sliding_window(model, config.data().seq_len, "data.seq_len", source);
  if (config.eval().evaluates_anything()) model::check_sliding_window(model, config.eval().seq_len, "eval.seq_len", source);
}

}  // namespace

TrainingSession::TrainingSession(const RunConfig& config) : config_(config) {}
TrainingSession::~TrainingSession() = default;

std::unique_ptr<TrainingSession> TrainingSession::open(const RunConfig& config) {
  std::unique_ptr<TrainingSession> s(new TrainingSession(config));
  s->build_parts();
  const auto resume_from = s->checkpoint_to_resume();
  require_same_on_every_rank(*s->ranks_, {{"resume", resume_from ? nlohmann::json(*resume_from) : nlohmann::json()}},
                             "checkpoint");
  // Everything is validated: only now does the run directory appear.
  s->run_dir_->create(config.resolved());
  if (resume_from) s->restore(*resume_from);
  // Replicas start equal (whatever a rank's own initialization did), and no rank goes on until every
  // rank has read the checkpoint that rank 0 may soon replace.
  distributed::copy_from_root(*s->ranks_, s->replicated_state());
  s->ranks_->barrier();
  // The next micro-batch the stream hands out: step x grad_accum (the stream counts its windows).
  s->teacher_->seek(s->data_->stats().windows / config.train().micro_batch);
  s->run_dir_->open_logs(resume_from ? s->step_ : -1);
  if (!resume_from) {
    try {
      if (config.quant().act_bits > 0) s->calibrate_activations();
      if (const auto change = s->freeze_->freeze_at_start()) s->log_freeze_change(*change);
      // auto's analysis draws the first micro-batches: a malformed record under data.strict fails here.
      run_freeze_analysis(*s);
    } catch (...) {
      // As a failure before the first checkpoint in run_training: a fresh run leaves nothing behind.
      s->run_dir_->remove_if_unfinished_fresh_start();
      throw;
    }
  }
  // What the freeze policy watches every step: after a resume or the analysis, its frozen types too.
  s->monitor_->watch_every_step(s->freeze_->watched_every_step());
  // A shape an export format cannot hold fails now, not after the training it would waste.
  exporting::check_export(s->export_source(), config.export_config().formats, config.export_config().options());
  spdlog::info("student: {} quantized projections ({} bits), {} trainable parameters", s->quantized_modules().size(),
               config.quant().bits, freeze::trainable_parameter_count(*s->student()));
  return s;
}

// In the order a fresh run has always drawn its random numbers in, so that seeds keep their meaning.
void TrainingSession::build_parts() {
  const auto& config = config_;
  set_cpu_threads(config.compute().threads, "train.threads");
  torch::manual_seed(config.train().seed);
  const auto launch = distributed::detect_launch_from_environment();
  device_ = rank_device(config, launch);
  ranks_ = join_ranks(config, launch, device_);
  require_same_on_every_rank(*ranks_, {{"config", config.resolved()}, {"data", teacher_cache::data_identity(config.data())}},
                             "config");
  tokenizer_ = std::make_unique<tokenizer::Tokenizer>(tokenizer::load_tokenizer_for_checkpoint(config.teacher().path));
  data_ = std::make_unique<data::DataStream>(config.data(), tokenizer_.get());
  const auto vocab = model_vocab_size(config, tokenizer_->vocab_size());
  check_token_sources(config.data(), vocab);
  eval::check_eval_inputs(config.eval().ppl, config.eval().mc, vocab);
  // What the architecture allows is checked before minutes of loading.
  const auto architecture = checkpoint::read_llama_config(config.teacher().path + "/config.json");
  check_attention_spans(config, architecture);
  check_memory_fits(config, architecture, device_);
  warn_about_positions(config, architecture);
  teacher_digest_ = teacher_contents_digest(config);
  teacher_ = std::make_unique<Teacher>(config, device_);
  student_ = build_student(config, device_);
  distiller_ = std::make_unique<Distiller>(*teacher_, student_.model, config.kd(), config.compute(), device_);
  optimizer_ = build_optimizer(config, *student_.model, *ranks_);
  freeze_ = std::make_unique<freeze::FreezeController>(
      config.freeze(), student_.quantized_modules, student_.model, optimizer_->local(),
      [optim = config.optim()](const std::string& name) { return optim.decays(name); });
  monitor_ = build_monitor(config, student_.model, *ranks_);
  freeze_->policy().check_reaches_modules();
  loss_scaler_ = LossScaler(config.compute().precision == Precision::fp16, config.compute().loss_scale,
                            config.compute().loss_scale_growth_interval);
  for (const auto& line : config.unread_settings()) spdlog::warn("{}", line);
  run_dir_ = std::make_unique<RunDirectory>(config.run_dir(), ranks_->is_root());
}

// Input ranges from the first act_calib_batches batches of a fresh copy of the training stream (the
// run's own stream is left untouched, so calibration does not shift the data order).
void TrainingSession::calibrate_activations() {
  data::DataStream calibration(config_.data(), tokenizer_.get());
  quant::begin_activation_calibration(*student());
  torch::NoGradGuard no_grad;
  for (int64_t i = 0; i < config_.quant().act_calib_batches; ++i)
    student()->forward(calibration.next_batch(config_.train().micro_batch).to(device_));
  quant::end_activation_calibration(*student());
  spdlog::info("calibrated {}-bit input ranges on {} batches", config_.quant().act_bits,
               config_.quant().act_calib_batches);
}

MicroBatch TrainingSession::local_micro_batch(data::DataStream& stream) {
  const int64_t world = ranks_->world_size();
  const auto global = stream.next_marked_batch(config_.train().micro_batch * world);
  const data::TokenBatch local{distributed::local_share(global.input_ids, ranks_->rank(), world),
                               distributed::local_share(global.marks, ranks_->rank(), world)};
  return make_micro_batch(local, {device_, config_.data().document_mask, config_.kd().ce_on});
}

std::vector<torch::Tensor> TrainingSession::replicated_state() {
  std::vector<torch::Tensor> state;
  for (const auto& p : student()->parameters()) state.push_back(p);
  for (const auto& b : student()->buffers()) state.push_back(b);
  return state;
}

void TrainingSession::log_freeze_change(const freeze::FreezeChange& change) {
  spdlog::info("step {}: {} {} modules ({}): trainable parameters {} -> {}", change.step,
               freeze::change_kinds().name(change.kind), change.modules.size(), change.reason, change.trainable_before,
               change.trainable_after);
  if (run_dir_->logs_open()) run_dir_->events().write(change.to_json());
}

exporting::ExportSource TrainingSession::export_source() {
  return exporting::ExportSource{*student(), config_.quant(), config_.teacher().path};
}

}  // namespace qkd::train
