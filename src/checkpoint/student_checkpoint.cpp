#include "qkd/checkpoint/student_checkpoint.h"

#include <filesystem>
#include <fstream>

#include "qkd/common/atomic_file.h"
#include "qkd/common/error.h"
#include "qkd/common/json_io.h"
#include "qkd/quant/student.h"

namespace qkd::checkpoint {

namespace fs = std::filesystem;

namespace {
constexpr const char* kQuantizerStateFile = "quantizer_state.safetensors";

quant::QuantSpec read_spec(const fs::path& path) {
  const auto json = read_json_file(path.string());
  if (!json.is_object() || !json.contains("quant")) fail(path.string(), "missing field 'quant'");
  return quant::quant_spec_from_json(json.at("quant"), path.string() + ": quant");
}
}  // namespace

void load_quantizer_state_from(model::LlamaForCausalLMImpl& model, const io::NamedTensors& tensors,
                               const std::string& source) {
  try {
    quant::load_quantizer_state(model, tensors);
  } catch (const Error& e) {
    fail(source, e.what());
  }
}

bool is_student_checkpoint(const std::string& dir) { return fs::exists(fs::path(dir) / quant::kQuantSpecFileName); }

LoadedModel load_model_or_student(const std::string& dir, const LoadOptions& options) {
  LoadedModel loaded;
  loaded.model = load_llama(dir, {options.dtype, torch::kCPU});
  if (is_student_checkpoint(dir)) {
    const auto spec = read_spec(fs::path(dir) / quant::kQuantSpecFileName);
    quant::attach_quantizers(*loaded.model, spec);
    const auto state_path = (fs::path(dir) / kQuantizerStateFile).string();
    if (fs::exists(state_path)) load_quantizer_state_from(*loaded.model, io::read_safetensors(state_path), state_path);
    loaded.quant = spec;
  }
  loaded.model->to(options.device);
  return loaded;
}

void save_student_checkpoint(model::LlamaForCausalLMImpl& student, const quant::QuantSpec& spec, const std::string& dir,
                             torch::Dtype dtype, const std::string& tokenizer_source_dir) {
  // Whole or not at all: a directory without quantization.json would load as a float model.
  write_directory_atomically(dir, "student", [&](const std::string& temp) {
    save_hf_checkpoint(student, temp, dtype, tokenizer_source_dir);
    io::write_safetensors((fs::path(temp) / kQuantizerStateFile).string(), quant::quantizer_state(student));
    const nlohmann::json description = {
        {"format", "qkd-train student"},
        {"note",
         "model.safetensors holds the latent float weights; the forward pass fake-quantizes them as 'quant' says"},
        {"quant", quant::quant_spec_to_json(spec)}};
    write_text_atomically((fs::path(temp) / quant::kQuantSpecFileName).string(), description.dump(2) + "\n");
  });
}

}  // namespace qkd::checkpoint
