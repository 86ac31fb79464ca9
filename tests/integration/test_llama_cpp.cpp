// The GGUF export in real llama.cpp (node-llama-cpp 3.21.1's prebuilt CPU binaries, driven by
// scripts/llama_cpp/compare.mjs): a W4 PTQ student of the shipped teacher, written with write_gguf,
// and the main job's recipe trained in MXFP4 and in NVFP4 by the qkd-train binary (exported to GGUF
// by the run itself) must tokenize held-out KJV text exactly as qkd-train does and predict the same
// next tokens with the same log-probabilities as qkd-train's own fp32 forward pass.
//
// node-llama-cpp is looked up in $NODE_LLAMA_CPP_DIR, else $HOME/.cache/qkd-train/node-llama-cpp
// (`bash scripts/bootstrap.sh test` installs it there). Missing, the test fails: it does not skip.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "qkd/checkpoint/student_checkpoint.h"
#include "qkd/export/gguf_writer.h"
#include "qkd/tokenizer/tokenizer.h"
#include "qkd/train/student_to_export.h"
#include "test_support.h"

namespace fs = std::filesystem;
using namespace qkd;

namespace {

constexpr const char* kNodeLlamaCppVersion = "3.21.1";
constexpr size_t kDocuments = 12;    // held-out KJV documents compared
constexpr int64_t kMaxTokens = 256;  // per document, BOS included

std::string node_llama_cpp_dir() {
  if (const char* dir = std::getenv("NODE_LLAMA_CPP_DIR"); dir && *dir) return dir;
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "") + "/.cache/qkd-train/node-llama-cpp";
}

// "" when usable, else why not.
std::string node_llama_cpp_problem(const std::string& dir) {
  if (std::system("node --version > /dev/null 2>&1") != 0) return "`node` is not on PATH (Debian package nodejs)";
  const auto package = dir + "/node_modules/node-llama-cpp/package.json";
  std::ifstream in(package);
  if (!in) return "node-llama-cpp is not installed in " + dir;
  const auto version = nlohmann::json::parse(in).value("version", "");
  if (version != kNodeLlamaCppVersion)
    return dir + " holds node-llama-cpp " + version + ", expected " + kNodeLlamaCppVersion;
  return "";
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

void require_node_llama_cpp() {
  const auto problem = node_llama_cpp_problem(node_llama_cpp_dir());
  if (problem.empty()) return;
  FAIL() << "llama.cpp check needs node-llama-cpp " << kNodeLlamaCppVersion << ": " << problem
         << ". Install it with `bash scripts/bootstrap.sh test`, or set NODE_LLAMA_CPP_DIR to a folder"
         << " where `npm install node-llama-cpp@" << kNodeLlamaCppVersion << "` was run.";
}

struct Agreement {
  size_t documents = 0, same_documents = 0, tokens = 0;
  int64_t positions = 0, same_argmax = 0;
  double abs_sum = 0, max_abs = 0, node_seconds = 0;
  double mean_abs() const { return abs_sum / static_cast<double>(positions); }
  double argmax_agreement() const { return static_cast<double>(same_argmax) / static_cast<double>(positions); }
};

// Held-out documents tokenized by qkd-train and by llama.cpp, and the next-token log-probabilities of
// `student` (its own fp32 forward pass) against llama.cpp's on `gguf_path`. Adds a test failure for a
// document tokenized differently.
Agreement compare_with_llama_cpp(model::LlamaForCausalLMImpl& student, const std::string& gguf_path,
                                 const std::string& tokenizer_dir, const std::string& work) {
  Agreement a;
  auto tok = tokenizer::load_tokenizer_for_checkpoint(tokenizer_dir);
  std::vector<std::string> texts;
  for (const auto& record : test::read_jsonl(test::repo_path("assets/data/kjv/kjv-val.jsonl"))) {
    texts.push_back(record.at("text").get<std::string>());
    if (texts.size() == kDocuments) break;
  }
  EXPECT_EQ(texts.size(), kDocuments);
  std::vector<std::vector<int64_t>> ours, sequences;
  for (const auto& text : texts) {
    ours.push_back(tok.encode(text));
    std::vector<int64_t> seq{tok.special().bos};
    for (auto id : ours.back()) {
      if (static_cast<int64_t>(seq.size()) == kMaxTokens) break;
      seq.push_back(id);
    }
    sequences.push_back(seq);
  }
  nlohmann::json request = {{"tokenize", texts},
                            {"evaluate", sequences},
                            {"vocab_size", student.config().vocab_size},
                            {"context_size", kMaxTokens}};
  const auto request_path = work + "/request.json";
  std::ofstream(request_path) << request.dump();

  const auto output_path = work + "/llama_cpp.json";
  const auto command = "NODE_LLAMA_CPP_DIR=" + shell_quote(node_llama_cpp_dir()) + " node " +
                       shell_quote(test::repo_path("scripts/llama_cpp/compare.mjs")) + " " + shell_quote(gguf_path) +
                       " " + shell_quote(request_path) + " > " + shell_quote(output_path) + " 2> " +
                       shell_quote(work + "/node.err");
  const auto started = std::chrono::steady_clock::now();
  const int rc = std::system(command.c_str());
  a.node_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (rc != 0) {
    ADD_FAILURE() << command << "\n" << test::read_file(work + "/node.err");
    return a;
  }
  const auto result = nlohmann::json::parse(test::read_file(output_path));
  EXPECT_EQ(result.at("node_llama_cpp").get<std::string>(), kNodeLlamaCppVersion);

  // Tokenization: identical ids for every document.
  a.documents = texts.size();
  for (size_t d = 0; d < texts.size(); ++d) {
    const auto theirs = result.at("tokenize").at(d).get<std::vector<int64_t>>();
    a.tokens += ours[d].size();
    if (theirs == ours[d])
      ++a.same_documents;
    else
      ADD_FAILURE() << "document " << d << ": llama.cpp tokenizes differently (" << theirs.size() << " vs "
                    << ours[d].size() << " tokens)";
  }

  // Next-token log-probabilities: llama.cpp against the student's own fp32 forward pass.
  torch::NoGradGuard no_grad;
  auto ours_json = nlohmann::json::array();
  for (size_t d = 0; d < sequences.size(); ++d) {
    const auto& seq = sequences[d];
    const auto ids = torch::tensor(seq, torch::kLong).unsqueeze(0);
    const auto logprobs = torch::log_softmax(student.forward(ids).to(torch::kFloat)[0], -1);  // [L, vocab]
    const auto& theirs = result.at("evaluate").at(d);
    const auto their_lp = theirs.at("logprobs").get<std::vector<double>>();
    const auto their_argmax = theirs.at("argmax").get<std::vector<int64_t>>();
    EXPECT_EQ(their_lp.size(), seq.size() - 1);
    if (their_lp.size() != seq.size() - 1) continue;
    const auto our_argmax = logprobs.argmax(-1);
    nlohmann::json mine = {{"logprobs", nlohmann::json::array()}, {"argmax", nlohmann::json::array()}};
    for (size_t i = 0; i + 1 < seq.size(); ++i) {
      const double ours_lp = logprobs[i][seq[i + 1]].item<double>();
      const double diff = std::fabs(ours_lp - their_lp[i]);
      a.abs_sum += diff;
      a.max_abs = std::max(a.max_abs, diff);
      a.same_argmax += our_argmax[i].item<int64_t>() == their_argmax[i];
      ++a.positions;
      mine["logprobs"].push_back(ours_lp);
      mine["argmax"].push_back(our_argmax[i].item<int64_t>());
    }
    ours_json.push_back(mine);
  }
  if (const char* keep = std::getenv("QKD_LLAMA_CPP_KEEP"); keep && *keep) {
    // For a closer look: the GGUF, the request, llama.cpp's answer and ours.
    fs::create_directories(keep);
    fs::copy_file(gguf_path, std::string(keep) + "/model.gguf", fs::copy_options::overwrite_existing);
    for (const auto* name : {"request.json", "llama_cpp.json"})
      fs::copy_file(work + "/" + name, std::string(keep) + "/" + name, fs::copy_options::overwrite_existing);
    std::ofstream(std::string(keep) + "/qkd_train.json") << nlohmann::json{{"evaluate", ours_json}}.dump();
  }
  return a;
}

// Prints the agreement, records it as test properties, and holds it to the bar: identical tokens,
// mean |log-prob difference| under 0.02 nats, the same argmax on at least 99% of positions.
void expect_agreement(const Agreement& a, const std::string& what) {
  ASSERT_GT(a.positions, 0);
  std::cout << "llama.cpp (node-llama-cpp " << kNodeLlamaCppVersion << ", CPU, " << what
            << ") vs qkd-train fp32 student:\n"
            << "  tokenization: " << a.same_documents << "/" << a.documents << " documents identical (" << a.tokens
            << " tokens)\n"
            << "  positions compared: " << a.positions << "\n"
            << "  mean |delta logprob|: " << a.mean_abs() << " nats (max " << a.max_abs << ")\n"
            << "  argmax agreement: " << a.argmax_agreement() * 100 << "% (" << a.same_argmax << "/" << a.positions
            << ")\n"
            << "  llama.cpp run (node, load + tokenize + evaluate): " << a.node_seconds << " s\n";
  ::testing::Test::RecordProperty("mean_abs_logprob_diff", std::to_string(a.mean_abs()));
  ::testing::Test::RecordProperty("max_abs_logprob_diff", std::to_string(a.max_abs));
  ::testing::Test::RecordProperty("argmax_agreement", std::to_string(a.argmax_agreement()));
  ::testing::Test::RecordProperty("positions", std::to_string(a.positions));
  EXPECT_EQ(a.same_documents, a.documents);
  EXPECT_LT(a.mean_abs(), 0.02);
  EXPECT_GE(a.argmax_agreement(), 0.99);
}

// The main job (configs/tiny-kjv.json) with its weights in `format`, trained by the binary for 12
// steps (the recipe's schedule over fewer steps; evaluation bounded) and exported to GGUF by the run.
void expect_fp4_main_job_matches_llama_cpp(const std::string& format, int64_t group_size, const std::string& type) {
  ASSERT_NO_FATAL_FAILURE(require_node_llama_cpp());
  const auto work = test::scratch_dir("llama-cpp-" + format);
  const auto run_dir = work + "/run";
  const auto train =
      test::run_cli("--config " + test::repo_path("configs/tiny-kjv.json") + " --set run_dir=" + run_dir +
                    " --set quant.format=" + format +
                    " --set quant.granularity=per_group --set quant.group_size=" + std::to_string(group_size) +
                    " --set train.steps=12 --set eval.max_windows=8 --set eval.mc=[] --set eval.baselines=false"
                    " --set 'export.formats=[\"gguf\"]'");
  ASSERT_EQ(train.exit_code, 0) << train.output;
  EXPECT_NE(train.output.find("projections written with the student's own codes and scales (" + format + ")"),
            std::string::npos)
      << train.output;
  auto student = train::load_student_to_export(run_dir);
  ASSERT_EQ(student.spec.format, quant::weight_formats().parse(format, "format"));
  const auto agreement =
      compare_with_llama_cpp(*student.model, run_dir + "/export/gguf/model.gguf", student.tokenizer_dir, work);
  expect_agreement(agreement, type + ", the main job's recipe, 12 steps");
}

}  // namespace

TEST(LlamaCpp, W4StudentGgufMatchesQkdTrainTokensAndLogprobs) {
  ASSERT_NO_FATAL_FAILURE(require_node_llama_cpp());
  // W4 RTN student of the shipped teacher, by the CLI.
  const auto work = test::scratch_dir("llama-cpp");
  const auto student_dir = work + "/student";
  const auto ptq = test::run_cli("ptq --model " + test::repo_path("assets/models/kjv-teacher-7m") + " --out " +
                                 student_dir + " --bits 4");
  ASSERT_EQ(ptq.exit_code, 0) << ptq.output;
  auto loaded = checkpoint::load_model_or_student(student_dir);
  ASSERT_TRUE(loaded.quant.has_value());
  auto& student = *loaded.model;
  student.eval();
  const auto gguf_path = work + "/model.gguf";
  exporting::write_gguf({student, *loaded.quant, student_dir}, gguf_path, {});
  expect_agreement(compare_with_llama_cpp(student, gguf_path, student_dir, work), "Q4_0");
}

TEST(LlamaCpp, Mxfp4MainJobGgufMatchesQkdTrainTokensAndLogprobs) {
  expect_fp4_main_job_matches_llama_cpp("mxfp4", 32, "MXFP4");
}

TEST(LlamaCpp, Nvfp4MainJobGgufMatchesQkdTrainTokensAndLogprobs) {
  expect_fp4_main_job_matches_llama_cpp("nvfp4", 16, "NVFP4");
}
