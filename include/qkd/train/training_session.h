#pragma once
// Everything a run holds, built from the config (and a checkpoint when resuming). The training loop
// in trainer.cpp reads like the algorithm; the setup lives here.
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "qkd/data/data_stream.h"
#include "qkd/dist/communicator.h"
#include "qkd/eval/results.h"
#include "qkd/export/export.h"
#include "qkd/freeze/freeze_controller.h"
#include "qkd/loss/topk_kd_loss.h"
#include "qkd/model/llama.h"
#include "qkd/monitor/signal_monitor.h"
#include "qkd/optim/adamw.h"
#include "qkd/teacher_cache/cache_reader.h"
#include "qkd/tokenizer/tokenizer.h"
#include "qkd/train/checkpoint_store.h"
#include "qkd/train/loss_scaler.h"
#include "qkd/train/metrics_log.h"
#include "qkd/train/run_config.h"

namespace qkd::train {

// The run directory's logs: metrics.jsonl, signal.jsonl, events.jsonl.
struct RunLogs {
  std::unique_ptr<JsonlWriter> metrics, signal, events;
};

struct TrainingSession {
  RunConfig config;
  // The ranks of the run (one, unless torchrun or SLURM started several). Every rank holds the whole
  // session; rank 0 alone writes the run directory (logs, checkpoints, exports, summary).
  std::unique_ptr<dist::Communicator> ranks;
  torch::Device device{torch::kCPU};
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;
  model::LlamaForCausalLM teacher{nullptr};                   // null with kd.teacher cache: the cache stands in for it
  std::unique_ptr<teacher_cache::CacheReader> teacher_cache;  // kd.teacher cache
  model::LlamaForCausalLM student{nullptr};
  std::vector<std::string> quantized_modules;
  std::unique_ptr<optim::AdamW> optimizer;  // owns the fp32 master weights of a bf16/fp16 student
  // dist.shard_optimizer with several ranks: the rank that keeps each parameter's optimizer state (by
  // parameter name; every student parameter). Empty: every rank keeps all of it.
  std::map<std::string, int> optimizer_owners;
  std::unique_ptr<data::DataStream> data;
  std::unique_ptr<monitor::SignalMonitor> monitor;
  std::unique_ptr<freeze::FreezeController> freeze;
  std::unique_ptr<CheckpointStore> checkpoints;
  RunLogs logs;
  LossScaler loss_scaler{false};
  bool created_run_dir = false;  // this invocation made run_dir (a failed fresh start removes it again)
  int64_t step = 0;              // completed optimizer steps
  int64_t skipped_steps = 0;
};

// Builds teacher, student, optimizer, data, monitor and logs; resumes from a checkpoint when
// config.checkpoint.resume says so. Fails before any compute on bad input.
std::unique_ptr<TrainingSession> open_session(const RunConfig& config);

// What one micro-batch feeds both models and the loss.
struct MicroBatch {
  torch::Tensor input_ids;                         // [B, T] on the run's device
  std::optional<model::DocumentLayout> documents;  // data.document_mask: attention and positions per document
  torch::Tensor labels;  // input_ids, with -1 on the tokens kd.ce_on responses does not predict
  // A row shard of a micro-batch (train/row_shards.h): the whole micro-batch's counts, which its loss
  // is averaged over. Unset: the batch's own.
  std::optional<loss::LossDenominators> denominators;
  const model::DocumentLayout* layout() const { return documents ? &*documents : nullptr; }
  const loss::LossDenominators* loss_denominators() const { return denominators ? &*denominators : nullptr; }
};
// `windows` (this rank's rows, on the CPU) on the session's device, laid out per data.document_mask and
// labelled per kd.ce_on.
MicroBatch prepare_micro_batch(const TrainingSession& session, const data::TokenBatch& windows);

// The teacher's logits for `batch` in teacher.dtype, outside any autocast the caller has open.
torch::Tensor teacher_logits(TrainingSession& session, const MicroBatch& batch);

// What the student is distilled towards on one micro-batch. Online, the teacher's final hidden states:
// the loss applies both output heads chunk by chunk (loss::kd_loss_from_hidden), except under fp16,
// whose loss scale needs the logits path. With kd.teacher cache, the cached top-k of the micro-batch,
// read in stream order and checked against `batch`.
struct TeacherTargets {
  torch::Tensor hidden;                   // online: [batch, seq, hidden] in teacher.dtype
  torch::Tensor logits;                   // online under fp16: [batch, seq, vocab] in teacher.dtype
  std::optional<loss::TopKTargets> topk;  // cache
  // The student output these targets are compared with: final hidden states or logits.
  bool pair_with_student_hidden() const { return hidden.defined(); }
};
TeacherTargets teacher_targets(TrainingSession& session, const MicroBatch& batch);
// Rows [begin, begin + count) of `targets` (views).
TeacherTargets teacher_target_rows(const TeacherTargets& targets, int64_t begin, int64_t count);
// The student's forward on `batch` that `targets` pair with, under the autocast of train.precision on CUDA.
torch::Tensor student_outputs(TrainingSession& session, const TeacherTargets& targets, const MicroBatch& batch);
// The kd loss of the student's outputs against `targets`: from hidden states through both heads, kd_loss
// of logits, or topk_kd_loss for cached targets.
loss::KdLossResult distillation_loss(TrainingSession& session, const TeacherTargets& targets,
                                     const torch::Tensor& student_outputs, const MicroBatch& batch);

// Pieces of the session that cache-teacher shares, so that it draws the trainer's stream and computes
// the same teacher: train.device (checked), the frozen teacher in teacher.dtype (float16 on the CPU
// computes in float32), and the check that token files fit the vocabulary.
torch::Device run_device(const RunConfig& config);
model::LlamaForCausalLM load_teacher_model(const RunConfig& config, const torch::Device& device);
void check_token_sources(const data::DataConfig& data, int64_t vocab_size);
// The student's logits for `batch`, under the autocast of train.precision on CUDA.
torch::Tensor student_logits(TrainingSession& session, const MicroBatch& batch);

// Logs a freeze or release to the console and events.jsonl.
void log_freeze_change(TrainingSession& session, const freeze::FreezeChange& change);

// The student as the export writers read it, and the run's export settings.
exporting::ExportSource student_export_source(TrainingSession& session);
exporting::ExportOptions export_options(const RunConfig& config);

// The optimizer's full state (a sharded optimizer's gathered from every rank: call on all ranks).
io::NamedTensors optimizer_state(TrainingSession& session);

// After a sharded optimizer's step: every updated parameter from its owner to all ranks.
void share_updated_parameters(TrainingSession& session);

// Checkpoint of the session's current state (written by rank 0, which holds the same state as every
// other rank); returns its directory.
std::string save_checkpoint(TrainingSession& session);

// The student's parameters and buffers (weights, quantizer scales), in a fixed order: what every rank
// must hold bitwise the same.
std::vector<torch::Tensor> replicated_state(TrainingSession& session);

// What an evaluation does when SIGINT/SIGTERM arrives during it: `finish` it, or `abandon` it by
// throwing StopRequested before the next batch.
enum class OnStop { finish, abandon };

// Validation through the eval harness on the student (null when nothing is configured).
nlohmann::json evaluate_student(TrainingSession& session, OnStop on_stop);
// Perplexity of the teacher and of the student as it is now, on eval.ppl only:
// {"teacher": {"<file>": ppl}, "student": {...}}; null when eval.ppl is empty. Abandoned on a stop.
nlohmann::json evaluate_perplexity_baselines(TrainingSession& session);

}  // namespace qkd::train
