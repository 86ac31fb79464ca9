#pragma once
// llama.cpp as the independent check of a GGUF export: node-llama-cpp 3.21.1's prebuilt CPU binaries,
// driven by scripts/llama_cpp/compare.mjs, tokenize texts and score next tokens; the model qkd-train
// exported is scored by its own forward pass on the same sequences, and the two are compared.
//
// node-llama-cpp is looked up in $NODE_LLAMA_CPP_DIR, else $HOME/.cache/qkd-train/node-llama-cpp
// (`bash scripts/bootstrap.sh test` installs it there). Missing, the check fails: it does not skip.
#include <cstdint>
#include <string>
#include <vector>

#include "qkd/model/llama.h"

namespace qkd::test {

inline constexpr const char* kNodeLlamaCppVersion = "3.21.1";

struct LlamaCppRequest {
  std::vector<std::string> texts;                 // tokenized by llama.cpp (no BOS added)
  std::vector<std::vector<int64_t>> sequences;    // scored: log p(ids[i + 1] | ids[0..i])
  int64_t vocab_size = 0;
  int64_t context_size = 0;
};

struct LlamaCppResult {
  std::vector<std::vector<int64_t>> tokens;
  std::vector<std::vector<double>> logprobs;
  std::vector<std::vector<int64_t>> argmax;
  double seconds = 0.0;  // node: load, tokenize, evaluate
};

// Runs llama.cpp on `gguf` in `work_dir` (request and answer files stay there). Throws std::runtime_error
// with what to install when node-llama-cpp is missing, or llama.cpp's stderr when it fails.
LlamaCppResult run_llama_cpp(const std::string& gguf, const LlamaCppRequest& request, const std::string& work_dir);

struct Agreement {
  size_t same_texts = 0;  // texts llama.cpp tokenized exactly as `our_tokens`
  int64_t positions = 0;
  double mean_abs_logprob_diff = 0.0, max_abs_logprob_diff = 0.0;
  double argmax_share = 0.0;  // positions whose most likely next token is the same
};

// `model`'s fp32 forward on the request's sequences against llama.cpp's answer.
Agreement compare_with_llama_cpp(model::LlamaForCausalLMImpl& model, const LlamaCppRequest& request,
                                 const LlamaCppResult& result, const std::vector<std::vector<int64_t>>& our_tokens);

}  // namespace qkd::test
