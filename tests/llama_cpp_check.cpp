#include "llama_cpp_check.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "test_support.h"

namespace qkd::test {

namespace {

std::string node_llama_cpp_dir() {
  if (const char* dir = std::getenv("NODE_LLAMA_CPP_DIR"); dir && *dir) return dir;
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "") + "/.cache/qkd-train/node-llama-cpp";
}

// "" when usable, else why not.
std::string node_llama_cpp_problem(const std::string& dir) {
  if (std::system("node --version > /dev/null 2>&1") != 0) return "`node` is not on PATH (Debian package nodejs)";
  std::ifstream in(dir + "/node_modules/node-llama-cpp/package.json");
  if (!in) return "node-llama-cpp is not installed in " + dir;
  const auto version = nlohmann::json::parse(in).value("version", "");
  if (version != kNodeLlamaCppVersion)
    return dir + " holds node-llama-cpp " + version + ", expected " + kNodeLlamaCppVersion;
  return "";
}

}  // namespace

LlamaCppResult run_llama_cpp(const std::string& gguf, const LlamaCppRequest& request, const std::string& work_dir) {
  const auto dir = node_llama_cpp_dir();
  if (const auto problem = node_llama_cpp_problem(dir); !problem.empty())
    throw std::runtime_error("llama.cpp check needs node-llama-cpp " + std::string(kNodeLlamaCppVersion) + ": " +
                             problem + ". Install it with `bash scripts/bootstrap.sh test`, or set NODE_LLAMA_CPP_DIR");
  const auto request_path = work_dir + "/request.json", output_path = work_dir + "/llama_cpp.json";
  std::ofstream(request_path) << nlohmann::json{{"tokenize", request.texts},
                                                {"evaluate", request.sequences},
                                                {"vocab_size", request.vocab_size},
                                                {"context_size", request.context_size}}
                                     .dump();
  const auto command = "NODE_LLAMA_CPP_DIR=" + shell_quote(dir) + " node " +
                       shell_quote(repo_path("scripts/llama_cpp/compare.mjs")) + " " + shell_quote(gguf) + " " +
                       shell_quote(request_path) + " > " + shell_quote(output_path) + " 2> " +
                       shell_quote(work_dir + "/node.err");
  const auto started = std::chrono::steady_clock::now();
  if (std::system(command.c_str()) != 0)
    throw std::runtime_error(command + "\n" + read_file(work_dir + "/node.err"));
  LlamaCppResult out;
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const auto json = nlohmann::json::parse(read_file(output_path));
  if (json.at("node_llama_cpp").get<std::string>() != kNodeLlamaCppVersion)
    throw std::runtime_error("compare.mjs ran node-llama-cpp " + json.at("node_llama_cpp").get<std::string>());
  for (const auto& ids : json.at("tokenize")) out.tokens.push_back(ids.get<std::vector<int64_t>>());
  for (const auto& e : json.at("evaluate")) {
    out.logprobs.push_back(e.at("logprobs").get<std::vector<double>>());
    out.argmax.push_back(e.at("argmax").get<std::vector<int64_t>>());
  }
  return out;
}

Agreement compare_with_llama_cpp(model::LlamaForCausalLMImpl& model, const LlamaCppRequest& request,
                                 const LlamaCppResult& result, const std::vector<std::vector<int64_t>>& our_tokens) {
  Agreement a;
  for (size_t d = 0; d < our_tokens.size() && d < result.tokens.size(); ++d) a.same_texts += result.tokens[d] == our_tokens[d];
  torch::NoGradGuard no_grad;
  double abs_sum = 0;
  int64_t same_argmax = 0;
  for (size_t d = 0; d < request.sequences.size(); ++d) {
    const auto& seq = request.sequences[d];
    const auto ids = torch::tensor(seq, torch::kLong).unsqueeze(0);
    const auto logprobs = torch::log_softmax(model.forward(ids).to(torch::kFloat)[0], -1);  // [L, vocab]
    const auto our_argmax = logprobs.argmax(-1);
    if (result.logprobs.at(d).size() + 1 != seq.size())
      throw std::runtime_error("llama.cpp scored " + std::to_string(result.logprobs[d].size()) + " positions of sequence " +
                               std::to_string(d) + ", expected " + std::to_string(seq.size() - 1));
    for (size_t i = 0; i + 1 < seq.size(); ++i) {
      const double diff = std::fabs(logprobs[i][seq[i + 1]].item<double>() - result.logprobs[d][i]);
      abs_sum += diff;
      a.max_abs_logprob_diff = std::max(a.max_abs_logprob_diff, diff);
      same_argmax += our_argmax[i].item<int64_t>() == result.argmax[d][i];
      ++a.positions;
    }
  }
  a.mean_abs_logprob_diff = abs_sum / std::max<int64_t>(1, a.positions);
  a.argmax_share = static_cast<double>(same_argmax) / std::max<int64_t>(1, a.positions);
  return a;
}

}  // namespace qkd::test
