#pragma once
// One JSON file describes a whole run (torchtune style). It is validated up front: unknown keys,
// wrong types and out-of-range values fail with their JSON path before anything is loaded. Each
// section is a struct of its own area that lists its fields once (common/config_fields.h); a
// RunConfig is the validated whole, immutable once read.
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "qkd/data/data_config.h"
#include "qkd/distributed/distributed_config.h"
#include "qkd/eval/eval_config.h"
#include "qkd/export/export_config.h"
#include "qkd/freeze/freeze_config.h"
#include "qkd/loss/kd_loss.h"
#include "qkd/monitor/monitor_config.h"
#include "qkd/optim/optim_config.h"
#include "qkd/quant/quant_spec.h"
#include "qkd/train/train_sections.h"

namespace qkd::train {

class RunConfig {
 public:
  const std::string& run_dir() const { return run_dir_; }
  const std::string& label() const { return label_; }  // shown by `qkd-train report` (default: the directory's name)
  const TeacherSection& teacher() const { return teacher_; }
  const StudentSection& student() const { return student_; }
  const quant::QuantSpec& quant() const { return quant_; }
  const data::DataConfig& data() const { return data_; }
  const loss::KdLossOptions& kd() const { return kd_; }
  const optim::OptimConfig& optim() const { return optim_; }
  const TrainSection& train() const { return train_; }
  const ComputeSection& compute() const { return train_.compute; }
  const eval::EvalConfig& eval() const { return eval_; }
  const freeze::FreezeConfig& freeze() const { return freeze_; }
  const monitor::MonitorConfig& monitor() const { return monitor_; }
  const CheckpointSection& checkpoint() const { return checkpoint_; }
  const exporting::ExportConfig& export_config() const { return export_; }
  const distributed::DistributedConfig& distributed() const { return distributed_; }
  // The validated config with defaults filled in, as written to the run directory.
  const nlohmann::json& resolved() const { return resolved_; }
  // Settings given but not read by what the rest of the config chose ("freeze.scope: only read by
  // policy auto; policy is ov"): logged as warnings when the run starts.
  const std::vector<std::string>& unread_settings() const { return unread_settings_; }

 private:
  friend RunConfig parse_run_config(const nlohmann::json& json);
  std::string run_dir_, label_;
  TeacherSection teacher_;
  StudentSection student_;
  quant::QuantSpec quant_;
  data::DataConfig data_;
  loss::KdLossOptions kd_;
  optim::OptimConfig optim_;
  TrainSection train_;
  eval::EvalConfig eval_;
  freeze::FreezeConfig freeze_;
  monitor::MonitorConfig monitor_;
  CheckpointSection checkpoint_;
  exporting::ExportConfig export_;
  distributed::DistributedConfig distributed_;
  nlohmann::json resolved_;
  std::vector<std::string> unread_settings_;
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
