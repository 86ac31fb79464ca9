#pragma once
// The student `qkd-train export` writes, from whatever the user points at: a run directory (its newest
// checkpoint), one training checkpoint (<run>/checkpoints/step-N), or a student checkpoint directory
// (what `ptq` writes without --format).
#include <string>

#include "qkd/model/llama.h"
#include "qkd/quant/quant_spec.h"

namespace qkd::train {

struct StudentToExport {
  model::LlamaForCausalLM model{nullptr};  // quantizers attached, their state loaded, in eval mode
  quant::QuantSpec spec;
  std::string tokenizer_dir;  // where tokenizer.model (and generation_config.json) come from
  std::string origin;         // the checkpoint directory it was read from
};

// Throws qkd::Error naming the path when it is none of the three, or its files are damaged.
StudentToExport load_student_to_export(const std::string& path);

// Whether `path` is a run directory or a training checkpoint, the two that only this loader reads.
bool is_run_or_training_checkpoint(const std::string& path);

}  // namespace qkd::train
