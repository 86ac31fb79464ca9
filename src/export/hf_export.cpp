#include "qkd/export/hf_export.h"
#include "qkd/common/dtype_names.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <map>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/checkpoint/hf_config.h"
#include "qkd/common/atomic_file.h"
#include "qkd/common/error.h"
#include "qkd/common/input_file.h"
#include "qkd/common/json_io.h"
#include "qkd/export/integer_weights.h"

namespace qkd::exporting {

namespace fs = std::filesystem;

namespace {

// The student's weights as its forward pass sees them: quantized projections dequantized from their
// integer codes, everything else as trained.
io::NamedTensors effective_weights(model::LlamaForCausalLMImpl& student, torch::Dtype dtype) {
  auto weights = checkpoint::model_weights(student, dtype);
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < weights.size(); ++i) index[weights[i].first] = i;
  for_each_integer_weight(student, [&](const IntegerWeight& w) {
    weights.at(index.at(w.name)).second = w.dequantize().to(dtype).contiguous();
  });
  return weights;
}

int64_t tensor_bytes(const torch::Tensor& t) { return t.numel() * static_cast<int64_t>(t.element_size()); }

std::vector<io::NamedTensors> split_into_shards(io::NamedTensors weights, int64_t max_shard_bytes) {
  std::vector<io::NamedTensors> shards(1);
  int64_t bytes = 0;
  for (auto& item : weights) {
    const int64_t size = tensor_bytes(item.second);
    if (!shards.back().empty() && bytes + size > max_shard_bytes) {
      shards.emplace_back();
      bytes = 0;
    }
    bytes += size;
    shards.back().push_back(std::move(item));
  }
  return shards;
}

void write_weights(io::NamedTensors weights, const fs::path& dir, int64_t max_shard_bytes) {
  auto shards = split_into_shards(std::move(weights), max_shard_bytes);
  if (shards.size() == 1) return io::write_safetensors((dir / "model.safetensors").string(), shards.front());
  nlohmann::json map = nlohmann::json::object();
  int64_t total = 0;
  for (size_t i = 0; i < shards.size(); ++i) {
    const auto file = fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards.size());
    for (const auto& [name, tensor] : shards[i]) {
      map[name] = file;
      total += tensor_bytes(tensor);
    }
    io::write_safetensors((dir / file).string(), shards[i]);
  }
  const nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", map}};
  write_text_atomically((dir / "model.safetensors.index.json").string(), index.dump(2) + "\n");
}

}  // namespace

void write_hf(const ExportSource& source, const std::string& dir, const ExportOptions& options) {
  if (source.spec.act_bits > 0)
    spdlog::warn(
        "hf export: a Hugging Face checkpoint cannot hold the {}-bit input quantization; its activations "
        "compute in float (the encodings format carries them)",
        source.spec.act_bits);
  auto config = source.student.config();
  config.torch_dtype = dtype_name(options.dtype);
  write_directory_atomically(dir, format_kind(Format::hf), [&](const std::string& temp) {
    write_weights(effective_weights(source.student, options.dtype), temp, options.max_shard_bytes);
    write_hf_companion_files(source, temp, checkpoint::llama_config_to_json(config));
  });
}

}  // namespace qkd::exporting
