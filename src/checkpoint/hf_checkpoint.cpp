#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/common/dtype_names.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "qkd/checkpoint/hf_config.h"
#include "qkd/common/atomic_file.h"
#include "qkd/common/error.h"
#include "qkd/common/json_io.h"

namespace qkd::checkpoint {

namespace fs = std::filesystem;

namespace {

// Shard files named by model.safetensors.index.json, in first-use order.
std::vector<std::string> shard_files(const fs::path& index_path) {
  const auto index = read_json_file(index_path.string());
  if (!index.is_object()) fail(index_path.string(), "expected a JSON object");
  if (!index.contains("weight_map") || !index["weight_map"].is_object())
    fail(index_path.string(), "missing field 'weight_map'");
  std::vector<std::string> files;
  std::set<std::string> seen;
  for (const auto& [tensor, file] : index["weight_map"].items()) {
    if (!file.is_string()) fail(index_path.string(), "weight_map." + tensor + ": expected a file name");
    const auto name = file.get<std::string>();
    if (seen.insert(name).second) files.push_back(name);
  }
  for (const auto& file : files) {
    const auto shard = index_path.parent_path() / file;
    if (!fs::exists(shard)) fail(index_path.string(), "shard '" + file + "' named in weight_map is missing");
  }
  return files;
}

bool is_quantizer_state(const std::string& name) { return name.find("_quantizer.") != std::string::npos; }

bool is_ignorable(const std::string& name) {
  return name.size() >= 19 && name.compare(name.size() - 19, 19, "rotary_emb.inv_freq") == 0;
}

std::string join(const std::vector<std::string>& items, size_t limit = 12) {
  std::ostringstream out;
  for (size_t i = 0; i < items.size() && i < limit; ++i) out << (i ? ", " : "") << items[i];
  if (items.size() > limit) out << ", ... (" << items.size() << " in all)";
  return out.str();
}

std::string shape_string(const at::IntArrayRef& shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  return out.str() + "]";
}

// Parameters the config promises (biases left out): a config.json that claims a million layers fails
// here, before the model is allocated, instead of growing memory until the machine gives out.
double promised_parameters(const model::LlamaConfig& c) {
  const double h = c.hidden_size, heads = c.num_attention_heads, kv = c.num_key_value_heads, d = c.head_dim;
  const double per_layer = h * heads * d * 2 + h * kv * d * 2 + 3 * h * c.intermediate_size + 2 * h;
  return c.vocab_size * h * (c.tie_word_embeddings ? 1 : 2) + c.num_hidden_layers * per_layer + h;
}

void check_weights_cover_config(const model::LlamaConfig& config, const io::NamedTensors& tensors,
                                const std::string& dir) {
  double held = 0;
  for (const auto& [name, tensor] : tensors) held += static_cast<double>(tensor.numel());
  // Small differences are left to copy_weights_into, which lists every missing or misshaped tensor.
  const double promised = promised_parameters(config);
  if (promised > 2 * held + (1 << 24))
    fail((fs::path(dir) / "config.json").string(),
         "describes a model of " + std::to_string(static_cast<int64_t>(promised)) + " parameters (num_hidden_layers " +
             std::to_string(config.num_hidden_layers) + ", hidden_size " + std::to_string(config.hidden_size) +
             ") but the weights hold " + std::to_string(static_cast<int64_t>(held)));
}

}  // namespace

std::vector<std::string> weight_files(const std::string& dir) {
  const fs::path root(dir);
  if (!fs::is_directory(root)) fail(dir, "checkpoint directory not found");
  const auto single = root / "model.safetensors";
  const auto index = root / "model.safetensors.index.json";
  std::vector<std::string> files;
  if (fs::exists(index)) {
    for (const auto& file : shard_files(index)) files.push_back((root / file).string());
  } else if (fs::exists(single)) {
    files = {single.string()};
  } else {
    fail(dir, "neither model.safetensors nor model.safetensors.index.json found");
  }
  return files;
}

io::NamedTensors read_checkpoint_tensors(const std::string& dir) {
  io::NamedTensors all;
  for (const auto& file : weight_files(dir)) {
    auto tensors = io::read_safetensors(file);
    all.insert(all.end(), std::make_move_iterator(tensors.begin()), std::make_move_iterator(tensors.end()));
  }
  return all;
}

void copy_weights_into(model::LlamaForCausalLMImpl& model, const io::NamedTensors& tensors, const std::string& source,
                       const std::vector<std::string>& ignored_suffixes) {
  std::map<std::string, torch::Tensor> params;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    if (!is_quantizer_state(item.key())) params.emplace(item.key(), item.value());
  }
  std::vector<std::string> unexpected, misshaped, not_float, not_finite;
  std::set<std::string> loaded;
  torch::NoGradGuard no_grad;
  for (const auto& [name, tensor] : tensors) {
    if (is_ignorable(name) || is_quantizer_state(name)) continue;
    bool ignored = false;
    for (const auto& suffix : ignored_suffixes)
      ignored |= name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    if (ignored) continue;
    const auto it = params.find(name);
    if (it == params.end()) {
      unexpected.push_back(printable(name));
      continue;
    }
    if (it->second.sizes() != tensor.sizes()) {
      misshaped.push_back(name + " " + shape_string(tensor.sizes()) + " (expected " + shape_string(it->second.sizes()) +
                          ")");
      loaded.insert(name);  // present, reported as misshaped rather than missing
      continue;
    }
    loaded.insert(name);
    // An integer tensor would load as if its codes were weights (a q_proj stored as I16 evaluated to
    // perplexity 108); a NaN or Inf makes every output NaN, far from where it came from.
    if (!torch::isFloatingType(tensor.scalar_type())) {
      not_float.push_back(name + " (" + std::string(c10::toString(tensor.scalar_type())) + ")");
      continue;
    }
    it->second.copy_(tensor.to(it->second.scalar_type()));
    if (!torch::isfinite(it->second).all().item<bool>()) not_finite.push_back(name);
  }
  std::vector<std::string> missing;
  for (const auto& [name, _] : params)
    if (!loaded.count(name)) missing.push_back(name);
  std::string problems;
  if (!missing.empty()) problems += "missing tensors: " + join(missing) + "; ";
  if (!unexpected.empty()) problems += "unexpected tensors: " + join(unexpected) + "; ";
  if (!misshaped.empty()) problems += "wrong shape: " + join(misshaped) + "; ";
  if (!not_float.empty()) problems += "not floating point: " + join(not_float) + "; ";
  if (!not_finite.empty()) problems += "NaN or Inf values: " + join(not_finite) + "; ";
  if (!problems.empty()) fail(source, problems.substr(0, problems.size() - 2));
}

model::LlamaForCausalLM load_llama(const std::string& dir, const LoadOptions& options) {
  const auto config = read_llama_config((fs::path(dir) / "config.json").string());
  const auto tensors = read_checkpoint_tensors(dir);
  check_weights_cover_config(config, tensors, dir);
  model::LlamaForCausalLM model(config);
  model->to(options.dtype);
  // A mismatch is between two files: the message names both.
  const auto index = fs::path(dir) / "model.safetensors.index.json";
  const auto weights = fs::exists(index) ? index : fs::path(dir) / "model.safetensors";
  copy_weights_into(*model, tensors, (fs::path(dir) / "config.json").string() + " (weights " + weights.string() + ")");
  model->to(options.device);
  return model;
}

io::NamedTensors model_weights(model::LlamaForCausalLMImpl& model, torch::Dtype dtype) {
  io::NamedTensors out;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    if (is_quantizer_state(item.key())) continue;
    out.emplace_back(item.key(), item.value().detach().to(torch::kCPU, dtype).contiguous());
  }
  return out;
}

void save_hf_checkpoint(model::LlamaForCausalLMImpl& model, const std::string& dir, torch::Dtype dtype,
                        const std::string& tokenizer_source_dir) {
  fs::create_directories(dir);
  auto config = model.config();
  config.torch_dtype = dtype_name(dtype);
  io::write_safetensors((fs::path(dir) / "model.safetensors").string(), model_weights(model, dtype));
  write_text_atomically((fs::path(dir) / "config.json").string(), llama_config_to_json(config).dump(2) + "\n");
  if (!tokenizer_source_dir.empty()) copy_tokenizer_files(tokenizer_source_dir, dir);
}

void copy_tokenizer_files(const std::string& from_dir, const std::string& to_dir) {
  const fs::path from(from_dir), to(to_dir);
  if (!fs::is_regular_file(from / "tokenizer.model") && !fs::is_regular_file(from / "tokenizer.json"))
    fail((from / "tokenizer.model").string(), "tokenizer model not found (nor a tokenizer.json beside it)");
  // Everything a runtime reads to tokenize and to render chats, as the source directory has it.
  for (const char* name : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                           "chat_template.jinja"})
    if (fs::is_regular_file(from / name)) copy_file_atomically((from / name).string(), (to / name).string());
}

}  // namespace qkd::checkpoint
