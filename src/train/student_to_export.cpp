#include "qkd/train/student_to_export.h"
#include "qkd/common/dtype_names.h"

#include <filesystem>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/checkpoint/hf_config.h"
#include "qkd/checkpoint/student_checkpoint.h"
#include "qkd/common/error.h"
#include "qkd/common/json_io.h"
#include "qkd/io/safetensors.h"
#include "qkd/quant/student.h"
#include "qkd/train/checkpoint_store.h"

namespace qkd::train {

namespace fs = std::filesystem;

namespace {

bool is_training_checkpoint(const fs::path& dir) {
  return fs::is_regular_file(dir / "state.json") && fs::is_regular_file(dir / "student.safetensors");
}

bool is_run_directory(const fs::path& dir) { return fs::is_directory(dir / "checkpoints"); }

std::string string_field(const nlohmann::json& config, const std::string& section, const std::string& key,
                         const std::string& source) {
  if (!config.contains(section) || !config.at(section).is_object() || !config.at(section).contains(key) ||
      !config.at(section).at(key).is_string())
    fail(source, "missing field " + section + "." + key);
  return config.at(section).at(key).get<std::string>();
}

// A training checkpoint holds the student's weights and quantizer state; its run's config.json says
// which architecture, quant grid and compute dtype they belong to.
StudentToExport load_from_training_checkpoint(const fs::path& dir) {
  const auto config_path = (dir.parent_path().parent_path() / "config.json").string();
  if (!fs::is_regular_file(config_path))
    fail(dir.string(), "training checkpoint without its run's config.json (" + config_path + ")");
  const auto config = read_json_file(config_path);
  if (!config.is_object() || !config.contains("quant")) fail(config_path, "missing field quant");
  StudentToExport out;
  out.spec = quant::quant_spec_from_json(config.at("quant"), config_path + ": quant");
  out.tokenizer_dir = string_field(config, "teacher", "path", config_path);
  const auto dtype =
      parse_dtype(string_field(config, "student", "dtype", config_path), config_path + ": student.dtype");
  out.model =
      model::LlamaForCausalLM(checkpoint::read_llama_config((fs::path(out.tokenizer_dir) / "config.json").string()));
  out.model->to(dtype);
  const auto weights_path = (dir / "student.safetensors").string();
  const auto tensors = io::read_safetensors(weights_path);
  checkpoint::copy_weights_into(*out.model, tensors, weights_path);
  quant::attach_quantizers(*out.model, out.spec);
  checkpoint::load_quantizer_state_from(*out.model, tensors, weights_path);
  out.origin = dir.string();
  return out;
}

}  // namespace

bool is_run_or_training_checkpoint(const std::string& path) {
  return is_training_checkpoint(path) || is_run_directory(path);
}

StudentToExport load_student_to_export(const std::string& path) {
  const fs::path dir(path);
  if (!fs::is_directory(dir))
    fail(path, "not a directory (expected a run directory, a training checkpoint or a student checkpoint)");
  StudentToExport out;
  if (checkpoint::is_student_checkpoint(path)) {
    auto loaded = checkpoint::load_model_or_student(path);
    out.model = loaded.model;
    out.spec = *loaded.quant;
    out.tokenizer_dir = path;
    out.origin = path;
  } else if (is_training_checkpoint(dir)) {
    out = load_from_training_checkpoint(dir);
  } else if (is_run_directory(dir)) {
    const auto newest = CheckpointStore(path).newest();
    if (!newest) fail(path, "run directory without a complete checkpoint");
    out = load_from_training_checkpoint(*newest);
  } else {
    fail(path,
         "neither a run directory, a training checkpoint (state.json) nor a student checkpoint (quantization.json)");
  }
  out.model->eval();
  return out;
}

}  // namespace qkd::train
