#pragma once
// Everything a run holds, built from the config (and a checkpoint when resuming). The training loop
// in trainer.cpp reads like the algorithm; the setup lives here.
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "qkd/data/data_stream.h"
#include "qkd/eval/results.h"
#include "qkd/export/export.h"
#include "qkd/model/llama.h"
#include "qkd/monitor/freeze_policy.h"
#include "qkd/monitor/signal_monitor.h"
#include "qkd/monitor/stable_weights.h"
#include "qkd/tokenizer/tokenizer.h"
#include "qkd/train/adamw.h"
#include "qkd/train/checkpoint_store.h"
#include "qkd/train/metrics_log.h"
#include "qkd/train/run_config.h"

namespace qkd::train {

struct TrainingSession {
  RunConfig config;
  torch::Device device{torch::kCPU};
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;
  model::LlamaForCausalLM teacher{nullptr};
  model::LlamaForCausalLM student{nullptr};
  std::vector<std::string> quantized_modules;
  std::unique_ptr<AdamW> optimizer;
  std::unique_ptr<data::DataStream> data;
  std::unique_ptr<monitor::SignalMonitor> monitor;
  std::unique_ptr<monitor::FreezePolicy> freeze;
  std::set<std::string> frozen_modules;
  monitor::StableWeights stable_weights;  // auto freeze with rollback: last calm o/v weights
  std::unique_ptr<CheckpointStore> checkpoints;
  std::unique_ptr<JsonlWriter> metrics, signal, events;
  bool created_run_dir = false;  // this invocation made run_dir (a failed fresh start removes it again)
  int64_t step = 0;              // completed optimizer steps
  int64_t skipped_steps = 0;
  double loss_scale = 65536.0;  // fp16 dynamic loss scaling only
};

// Builds teacher, student, optimizer, data, monitor and logs; resumes from a checkpoint when
// config.checkpoint.resume says so. Fails before any compute on bad input.
std::unique_ptr<TrainingSession> open_session(const RunConfig& config);

// Freezes modules (weights get no gradient computation, optimizer state dropped), logs the
// trainable-parameter counts before and after, and records an event at `step`.
void freeze_modules(TrainingSession& session, const std::vector<std::string>& modules, const std::string& reason,
                    int64_t step);
// Lets frozen modules train again with fresh optimizer state; logged like a freeze.
void release_modules(TrainingSession& session, const std::vector<std::string>& modules, const std::string& reason,
                     int64_t step);

// The student as the export writers read it, and the run's export settings.
exporting::ExportSource student_export_source(TrainingSession& session);
exporting::ExportOptions export_options(const RunConfig& config);

// Checkpoint of the session's current state; returns its directory.
std::string save_checkpoint(TrainingSession& session);

// What an evaluation does when SIGINT/SIGTERM arrives during it: `finish` it, or `abandon` it by
// throwing StopRequested before the next batch.
enum class OnStop { finish, abandon };

// Validation through the eval harness on the student (null when nothing is configured).
nlohmann::json evaluate_student(TrainingSession& session, OnStop on_stop);
// Perplexity of the teacher and of the student as it is now, on eval.ppl only:
// {"teacher": {"<file>": ppl}, "student": {...}}; null when eval.ppl is empty. Abandoned on a stop.
nlohmann::json evaluate_perplexity_baselines(TrainingSession& session);

int64_t trainable_parameter_count(model::LlamaForCausalLMImpl& model);

}  // namespace qkd::train
