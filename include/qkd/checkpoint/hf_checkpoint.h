#pragma once
// Hugging Face checkpoint directories: config.json, model.safetensors or sharded
// model-XXXXX-of-YYYYY.safetensors with model.safetensors.index.json, tokenizer.model.
#include <torch/torch.h>

#include <string>

#include "qkd/io/safetensors.h"
#include "qkd/model/llama.h"

namespace qkd::checkpoint {

struct LoadOptions {
  torch::Dtype dtype = torch::kFloat32;  // compute dtype; stored F32/F16/BF16 weights are cast to it
  torch::Device device = torch::kCPU;
};

// Every tensor of the checkpoint's weight files (one file or all shards of the index), as stored.
io::NamedTensors read_checkpoint_tensors(const std::string& dir);

// Builds the model from config.json and copies the weights in. Missing, unexpected or mis-shaped
// tensors raise one qkd::Error listing them all.
model::LlamaForCausalLM load_llama(const std::string& dir, const LoadOptions& options = {});

// Copies `tensors` into `model`'s parameters by Hugging Face name (the strict check load_llama does).
void copy_weights_into(model::LlamaForCausalLMImpl& model, const io::NamedTensors& tensors, const std::string& source,
                       const std::vector<std::string>& ignored_suffixes = {});

// The model's weights under Hugging Face names, cast to `dtype` (quantizer state excluded).
io::NamedTensors model_weights(model::LlamaForCausalLMImpl& model, torch::Dtype dtype);

// Copies a model directory's tokenizer files from `from_dir` into `to_dir`: tokenizer.model and/or
// tokenizer.json (one is required: fails naming it when both are missing), with tokenizer_config.json,
// special_tokens_map.json and chat_template.jinja when present.
void copy_tokenizer_files(const std::string& from_dir, const std::string& to_dir);

// The weight files of a Hugging Face model directory, in the order they are read: model.safetensors, or
// the shards model.safetensors.index.json names. Fails naming `dir` when there are none.
std::vector<std::string> weight_files(const std::string& dir);

// Writes config.json and model.safetensors (atomically) into `dir`, and copies the tokenizer files of
// `tokenizer_source_dir` when given. The result loads with transformers' from_pretrained.
void save_hf_checkpoint(model::LlamaForCausalLMImpl& model, const std::string& dir, torch::Dtype dtype,
                        const std::string& tokenizer_source_dir = "");

}  // namespace qkd::checkpoint
