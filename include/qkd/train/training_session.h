#pragma once
// What a run holds, how it opens (from the config, and from a checkpoint when resuming) and how it
// saves. The loop in trainer.cpp reads like the algorithm over these parts; what one micro-batch
// computes lives in distiller.h.
//
// Invariants once open() returns: every part exists and agrees with the config; the student's
// trainable parameters are exactly the optimizer's (freezes and releases go through the freeze
// controller, which keeps both in step); every rank holds the same student; the run directory exists
// on rank 0 and its logs hold no record after step().
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "qkd/data/data_stream.h"
#include "qkd/distributed/communicator.h"
#include "qkd/distributed/sharded_optimizer.h"
#include "qkd/export/export.h"
#include "qkd/freeze/freeze_controller.h"
#include "qkd/model/llama.h"
#include "qkd/monitor/signal_monitor.h"
#include "qkd/tokenizer/tokenizer.h"
#include "qkd/train/distiller.h"
#include "qkd/train/loss_scaler.h"
#include "qkd/train/micro_batch.h"
#include "qkd/train/run_config.h"
#include "qkd/train/run_directory.h"
#include "qkd/train/student_init.h"
#include "qkd/train/teacher.h"

namespace qkd::train {

class TrainingSession {
 public:
  // Builds teacher, student, optimizer, data, monitor and freeze controller; resumes from a checkpoint
  // when checkpoint.resume says so. Fails before any compute on bad input, and creates the run
  // directory only once everything is validated.
  static std::unique_ptr<TrainingSession> open(const RunConfig& config);
  ~TrainingSession();

  const RunConfig& config() const { return config_; }
  // The ranks of the run (one, unless torchrun or SLURM started several). Every rank holds the whole
  // session; rank 0 alone writes the run directory.
  distributed::Communicator& ranks() { return *ranks_; }
  const torch::Device& device() const { return device_; }
  const tokenizer::Tokenizer& tokenizer() const { return *tokenizer_; }
  data::DataStream& data() { return *data_; }
  Teacher& teacher() { return *teacher_; }
  model::LlamaForCausalLM& student() { return student_.model; }
  const std::vector<std::string>& quantized_modules() const { return student_.quantized_modules; }
  Distiller& distiller() { return *distiller_; }
  distributed::ShardedOptimizer& optimizer() { return *optimizer_; }
  monitor::SignalMonitor& monitor() { return *monitor_; }
  freeze::FreezeController& freeze() { return *freeze_; }
  RunDirectory& run_dir() { return *run_dir_; }
  LossScaler& loss_scaler() { return loss_scaler_; }

  int64_t step() const { return step_; }  // completed optimizer steps
  int64_t skipped_steps() const { return skipped_steps_; }
  void complete_step() { ++step_; }
  void count_skipped_step() { ++skipped_steps_; }

  // This rank's rows of the next global micro-batch of `stream` (the run's data(), or a copy of it),
  // laid out as the run trains on them. Every rank draws the whole global micro-batch, so the stream's
  // cursor is the run's whatever the number of ranks.
  MicroBatch local_micro_batch(data::DataStream& stream);

  // Checkpoint of the current state (every rank takes part in gathering a sharded optimizer's state;
  // rank 0, which holds the same student as every other rank, writes); returns its directory.
  std::string save_checkpoint();
  // The student's parameters and buffers (weights, quantizer scales), in a fixed order: what every rank
  // must hold bitwise the same.
  std::vector<torch::Tensor> replicated_state();
  // Logs a freeze or release to the console and events.jsonl.
  void log_freeze_change(const freeze::FreezeChange& change);
  // The student as the export writers read it.
  exporting::ExportSource export_source();

 private:
  explicit TrainingSession(const RunConfig& config);
  void build_parts();
  // The checkpoint checkpoint.resume names: the newest (auto), none (never, refused when one exists),
  // or the directory given.
  std::optional<std::string> checkpoint_to_resume() const;
  void restore(const std::string& dir);
  void restore_state(const std::string& dir);
  void calibrate_activations();

  RunConfig config_;
  std::unique_ptr<distributed::Communicator> ranks_;
  torch::Device device_{torch::kCPU};
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
  std::unique_ptr<data::DataStream> data_;
  std::unique_ptr<Teacher> teacher_;
  InitialStudent student_;
  std::unique_ptr<Distiller> distiller_;
  std::unique_ptr<distributed::ShardedOptimizer> optimizer_;
  std::unique_ptr<monitor::SignalMonitor> monitor_;
  std::unique_ptr<freeze::FreezeController> freeze_;
  std::unique_ptr<RunDirectory> run_dir_;
  LossScaler loss_scaler_{false};
  std::string teacher_digest_;  // the teacher's files' contents: a checkpoint resumes only with the same
  int64_t step_ = 0;
  int64_t skipped_steps_ = 0;
};

// TrainingSession::open, for tests and tools that build a session without training.
inline std::unique_ptr<TrainingSession> open_session(const RunConfig& config) { return TrainingSession::open(config); }

}  // namespace qkd::train
