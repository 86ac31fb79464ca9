// Writes a Hugging Face LLaMA checkpoint directory (config.json, model.safetensors, tokenizer.model)
// with random weights of a chosen shape: projections and embeddings normal(0, 0.02), RMSNorm scales 1,
// as transformers initializes a LlamaForCausalLM. scripts/bench_memory.py uses it to measure the
// trainer's memory on models larger than the shipped 7M one; the weights carry no knowledge, only
// the shapes matter there. Prints one JSON object with the shape and the exact parameter count.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <iostream>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/common/dtype_names.h"
#include "qkd/model/llama.h"
#include "qkd/model/llama_config.h"

namespace fs = std::filesystem;

namespace {

bool is_norm_scale(const std::string& name, const torch::Tensor& t) {
  return t.dim() == 1 && name.size() >= 6 && name.compare(name.size() - 6, 6, "weight") == 0 &&
         name.find("norm") != std::string::npos;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Random-weight LLaMA checkpoint of a given shape"};
  qkd::model::LlamaConfig config;
  config.vocab_size = 4096;
  config.hidden_size = 768;
  config.intermediate_size = 2048;
  config.num_hidden_layers = 12;
  config.num_attention_heads = 12;
  config.num_key_value_heads = 0;  // 0: same as heads
  config.max_position_embeddings = 2048;
  config.rms_norm_eps = 1e-5;
  std::string out, tokenizer = "assets/models/kjv-teacher-7m/tokenizer.model", dtype_text = "bfloat16";
  uint64_t seed = 0;
  app.add_option("--hidden", config.hidden_size)->check(CLI::PositiveNumber);
  app.add_option("--layers", config.num_hidden_layers)->check(CLI::PositiveNumber);
  app.add_option("--intermediate", config.intermediate_size)->check(CLI::PositiveNumber);
  app.add_option("--heads", config.num_attention_heads)->check(CLI::PositiveNumber);
  app.add_option("--kv-heads", config.num_key_value_heads, "0: as many as --heads")->check(CLI::NonNegativeNumber);
  app.add_option("--vocab", config.vocab_size, "must match the tokenizer (the default one has 4096)")
      ->check(CLI::PositiveNumber);
  app.add_option("--max-positions", config.max_position_embeddings)->check(CLI::PositiveNumber);
  app.add_option("--tokenizer", tokenizer, "tokenizer.model copied into the checkpoint");
  app.add_option("--dtype", dtype_text, "dtype of the weights on disk");
  app.add_option("--seed", seed);
  app.add_option("--out", out, "checkpoint directory to write")->required();
  CLI11_PARSE(app, argc, argv);
  try {
    if (config.num_key_value_heads == 0) config.num_key_value_heads = config.num_attention_heads;
    if (config.hidden_size % config.num_attention_heads != 0)
      throw std::runtime_error("--hidden must be a multiple of --heads");
    if (config.num_attention_heads % config.num_key_value_heads != 0)
      throw std::runtime_error("--heads must be a multiple of --kv-heads");
    config.head_dim = config.hidden_size / config.num_attention_heads;
    if (!fs::is_regular_file(tokenizer)) throw std::runtime_error(tokenizer + ": tokenizer model not found");
    const auto dtype = qkd::parse_dtype(dtype_text, "--dtype");

    torch::manual_seed(seed);
    qkd::model::LlamaForCausalLM model(config);
    int64_t params = 0;
    {
      torch::NoGradGuard no_grad;
      for (auto& item : model->named_parameters()) {
        auto& t = item.value();
        if (is_norm_scale(item.key(), t))
          t.fill_(1.0);
        else
          t.normal_(0.0, 0.02);
        params += t.numel();
      }
    }
    // save_hf_checkpoint copies <dir>/tokenizer.model; a file under another name is copied here.
    const fs::path tokenizer_path(tokenizer);
    const bool standard_name = tokenizer_path.filename() == "tokenizer.model";
    const auto tokenizer_dir = tokenizer_path.has_parent_path() ? tokenizer_path.parent_path() : fs::path(".");
    qkd::checkpoint::save_hf_checkpoint(*model, out, dtype, standard_name ? tokenizer_dir.string() : "");
    if (!standard_name)
      fs::copy_file(tokenizer_path, fs::path(out) / "tokenizer.model", fs::copy_options::overwrite_existing);

    // o_proj [hidden, heads*head_dim] and v_proj [kv_heads*head_dim, hidden]: what ov-freeze freezes.
    const int64_t per_layer_ov =
        config.hidden_size * (config.num_attention_heads + config.num_key_value_heads) * config.head_dim;
    nlohmann::json report = {{"out", out},
                             {"hidden", config.hidden_size},
                             {"layers", config.num_hidden_layers},
                             {"intermediate", config.intermediate_size},
                             {"heads", config.num_attention_heads},
                             {"kv_heads", config.num_key_value_heads},
                             {"vocab", config.vocab_size},
                             {"dtype", qkd::dtype_name(dtype)},
                             {"seed", seed},
                             {"params", params},
                             {"ov_params", per_layer_ov * config.num_hidden_layers}};
    std::cout << report.dump() << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "qkd-bench-random-llama: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
