#pragma once
// One JSON file describes a whole run (torchtune style). It is validated up front: unknown keys,
// wrong types and out-of-range values fail with their JSON path before anything is loaded.
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "qkd/common/precision.h"
#include "qkd/data/data_config.h"
#include "qkd/export/export.h"
#include "qkd/loss/kd_loss.h"
#include "qkd/monitor/monitor_config.h"
#include "qkd/quant/quant_spec.h"
#include "qkd/train/lr_schedule.h"

namespace qkd::train {

struct ModelSection {
  std::string path;               // Hugging Face checkpoint directory (teacher) or "teacher" (student init)
  std::string dtype = "float32";  // compute dtype on the chosen device
};

struct OptimSection {
  double lr = 1e-4;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;
  bool decay_norms_and_biases = false;
  LrSchedule schedule = LrSchedule::cosine;
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.0;
  double grad_clip = 1.0;        // global norm; 0 disables
  bool train_embeddings = true;  // embeddings, norms and lm_head train too (false: only the projections)
};

struct TrainSection {
  int64_t steps = 100;
  int64_t micro_batch = 8;
  int64_t grad_accum = 1;
  int64_t log_interval = 10;
  int64_t eval_interval = 0;              // 0: only at the end
  std::string device = "cpu";             // cpu | cuda | cuda:N
  Precision precision = Precision::fp32;  // autocast on CUDA
  int64_t threads = 0;                    // CPU threads, 0: all cores
  uint64_t seed = 0;
};

struct EvalSection {
  std::vector<std::string> ppl;  // token files or JSONL text
  std::vector<std::string> mc;   // multiple-choice JSONL
  int64_t seq_len = 256;
  int64_t batch_size = 8;
  int64_t max_windows = 0;  // 0: all
  int64_t mc_limit = 0;     // 0: all items
  bool at_start = true;     // evaluate the initial student (round-to-nearest) too
  bool baselines = true;    // fresh runs: teacher and round-to-nearest perplexity on `ppl`, for comparison
};

struct CheckpointSection {
  int64_t interval = 0;  // steps between checkpoints; 0: only at the end / on signal
  int64_t keep_last = 2;
  std::string resume = "auto";  // auto | never | <checkpoint dir>
};

struct ExportSection {
  // Written to <run_dir>/export/<format> when the run finishes; empty: no export.
  std::vector<exporting::Format> formats = {exporting::Format::hf};
  std::string dtype = "float16";   // float weights of hf and packed
  std::string gguf_type = "q4_0";  // gguf projections: q4_0 or q8_0
};

struct RunConfig {
  std::string run_dir;
  std::string label;  // shown by `qkd-train report` (default: the run directory's name)
  ModelSection teacher;
  ModelSection student;
  quant::QuantSpec quant;
  data::DataConfig data;
  loss::KdLossOptions kd;
  OptimSection optim;
  TrainSection train;
  EvalSection eval;
  monitor::FreezeConfig freeze;
  monitor::MonitorConfig monitor;
  CheckpointSection checkpoint;
  ExportSection export_;
  nlohmann::json resolved;  // the validated config with defaults filled in, as written to the run dir
  // Settings given but not read by what the rest of the config chose ("freeze.scope: only read by
  // policy auto; policy is ov"): logged as warnings when the run starts.
  std::vector<std::string> unread_settings;
};

// Reads `path`, applies `overrides` ("a.b=value", value parsed as JSON when it parses, else a string)
// and validates. Relative paths inside the file are taken relative to the current directory, as for
// every other command-line tool.
RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides = {});
RunConfig parse_run_config(const nlohmann::json& json);

// Applies one "a.b.c=value" override to `json`; errors name the override.
void apply_override(nlohmann::json& json, const std::string& assignment);

// Sections whose change makes a checkpoint incompatible (teacher, student, quant), as JSON.
nlohmann::json model_identity(const RunConfig& config);

}  // namespace qkd::train
