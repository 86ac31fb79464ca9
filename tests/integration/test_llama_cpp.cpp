// The GGUF export in real llama.cpp (tests/llama_cpp_check.h): a W4 PTQ student of the shipped teacher,
// written with write_gguf, must tokenize held-out KJV text exactly as qkd-train does and predict the
// same next tokens with the same log-probabilities as qkd-train's own fp32 forward pass.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "llama_cpp_check.h"
#include "qkd/checkpoint/student_checkpoint.h"
#include "qkd/export/gguf_writer.h"
#include "qkd/tokenizer/tokenizer.h"
#include "test_support.h"

namespace fs = std::filesystem;
using namespace qkd;

namespace {
constexpr size_t kDocuments = 12;    // held-out KJV documents compared
constexpr int64_t kMaxTokens = 256;  // per document, BOS included
}  // namespace

TEST(LlamaCpp, W4StudentGgufMatchesQkdTrainTokensAndLogprobs) {
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

  // Held-out text, tokenized by qkd-train.
  auto tok = tokenizer::load_tokenizer_for_checkpoint(student_dir);
  test::LlamaCppRequest request;
  for (const auto& record : test::read_jsonl(test::repo_path("assets/data/kjv/kjv-val.jsonl"))) {
    request.texts.push_back(record.at("text").get<std::string>());
    if (request.texts.size() == kDocuments) break;
  }
  ASSERT_EQ(request.texts.size(), kDocuments);
  std::vector<std::vector<int64_t>> ours;
  for (const auto& text : request.texts) {
    ours.push_back(tok.encode(text));
    std::vector<int64_t> seq{tok.special().bos};
    for (auto id : ours.back()) {
      if (static_cast<int64_t>(seq.size()) == kMaxTokens) break;
      seq.push_back(id);
    }
    request.sequences.push_back(seq);
  }
  request.vocab_size = student.config().vocab_size;
  request.context_size = kMaxTokens;

  const auto result = test::run_llama_cpp(gguf_path, request, work);
  const auto a = test::compare_with_llama_cpp(student, request, result, ours);
  if (const char* keep = std::getenv("QKD_LLAMA_CPP_KEEP"); keep && *keep) {
    // For a closer look: the GGUF, the request and llama.cpp's answer.
    fs::create_directories(keep);
    for (const auto* name : {"model.gguf", "request.json", "llama_cpp.json"})
      fs::copy_file(work + "/" + name, std::string(keep) + "/" + name, fs::copy_options::overwrite_existing);
  }
  std::cout << "llama.cpp (node-llama-cpp " << test::kNodeLlamaCppVersion << ", CPU, Q4_0) vs qkd-train fp32 student:\n"
            << "  tokenization: " << a.same_texts << "/" << request.texts.size() << " documents identical\n"
            << "  positions compared: " << a.positions << "\n"
            << "  mean |delta logprob|: " << a.mean_abs_logprob_diff << " nats (max " << a.max_abs_logprob_diff << ")\n"
            << "  argmax agreement: " << a.argmax_share * 100 << "%\n"
            << "  llama.cpp run (node, load + tokenize + evaluate): " << result.seconds << " s\n";
  RecordProperty("mean_abs_logprob_diff", std::to_string(a.mean_abs_logprob_diff));
  RecordProperty("max_abs_logprob_diff", std::to_string(a.max_abs_logprob_diff));
  RecordProperty("argmax_agreement", std::to_string(a.argmax_share));
  RecordProperty("positions", std::to_string(a.positions));
  EXPECT_EQ(a.same_texts, request.texts.size());
  EXPECT_LT(a.mean_abs_logprob_diff, 0.02);
  EXPECT_GE(a.argmax_share, 0.99);
}
