// The GGUF export in real llama.cpp (tests/llama_cpp_check.h): a W4 PTQ student of the shipped teacher,
// written with write_gguf, and the main job's recipe trained in MXFP4 and in NVFP4 by the qkd-train
// binary (exported to GGUF by the run itself) must tokenize held-out KJV text exactly as qkd-train does
// and predict the same next tokens with the same log-probabilities as qkd-train's own fp32 forward pass.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "llama_cpp_check.h"
#include "qkd/checkpoint/student_checkpoint.h"
#include "qkd/export/gguf_writer.h"
#include "qkd/quant/quant_spec.h"
#include "qkd/tokenizer/tokenizer.h"
#include "qkd/train/student_to_export.h"
#include "test_support.h"

namespace fs = std::filesystem;
using namespace qkd;

namespace {
constexpr size_t kDocuments = 12;    // held-out KJV documents compared
constexpr int64_t kMaxTokens = 256;  // per document, BOS included

// Held-out documents tokenized by qkd-train and by llama.cpp, and the next-token log-probabilities of
// `student` (its own fp32 forward pass) against llama.cpp's on `gguf_path`; printed, recorded as test
// properties and held to the bar: identical tokens, mean |log-prob difference| under 0.02 nats, the
// same argmax on at least 99% of positions.
void expect_agreement(model::LlamaForCausalLMImpl& student, const std::string& gguf_path,
                      const std::string& tokenizer_dir, const std::string& work, const std::string& what) {
  auto tok = tokenizer::load_tokenizer_for_checkpoint(tokenizer_dir);
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
    fs::copy_file(gguf_path, std::string(keep) + "/model.gguf", fs::copy_options::overwrite_existing);
    for (const auto* name : {"request.json", "llama_cpp.json"})
      fs::copy_file(work + "/" + name, std::string(keep) + "/" + name, fs::copy_options::overwrite_existing);
  }
  std::cout << "llama.cpp (node-llama-cpp " << test::kNodeLlamaCppVersion << ", CPU, " << what
            << ") vs qkd-train fp32 student:\n"
            << "  tokenization: " << a.same_texts << "/" << request.texts.size() << " documents identical\n"
            << "  positions compared: " << a.positions << "\n"
            << "  mean |delta logprob|: " << a.mean_abs_logprob_diff << " nats (max " << a.max_abs_logprob_diff << ")\n"
            << "  argmax agreement: " << a.argmax_share * 100 << "%\n"
            << "  llama.cpp run (node, load + tokenize + evaluate): " << result.seconds << " s\n";
  ::testing::Test::RecordProperty("mean_abs_logprob_diff", std::to_string(a.mean_abs_logprob_diff));
  ::testing::Test::RecordProperty("max_abs_logprob_diff", std::to_string(a.max_abs_logprob_diff));
  ::testing::Test::RecordProperty("argmax_agreement", std::to_string(a.argmax_share));
  ::testing::Test::RecordProperty("positions", std::to_string(a.positions));
  EXPECT_EQ(a.same_texts, request.texts.size());
  EXPECT_LT(a.mean_abs_logprob_diff, 0.02);
  EXPECT_GE(a.argmax_share, 0.99);
}

// The main job (configs/tiny-kjv.json) with its weights in `format`, trained by the binary for 12
// steps (the recipe's schedule over fewer steps; evaluation bounded) and exported to GGUF by the run.
void expect_fp4_main_job_matches_llama_cpp(const std::string& format, int64_t group_size, const std::string& type) {
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
  expect_agreement(*student.model, run_dir + "/export/gguf/model.gguf", student.tokenizer_dir, work,
                   type + ", the main job's recipe, 12 steps");
}

}  // namespace

TEST(LlamaCpp, W4StudentGgufMatchesQkdTrainTokensAndLogprobs) {
  // W4 RTN student of the shipped teacher, by the CLI.
  const auto work = test::scratch_dir("llama-cpp");
  const auto student_dir = work + "/student";
  const auto ptq = test::run_cli("ptq --model " + qkd::test::shipped_teacher() + " --out " +
                                 student_dir + " --bits 4");
  ASSERT_EQ(ptq.exit_code, 0) << ptq.output;
  auto loaded = checkpoint::load_model_or_student(student_dir);
  ASSERT_TRUE(loaded.quant.has_value());
  auto& student = *loaded.model;
  student.eval();
  const auto gguf_path = work + "/model.gguf";
  exporting::write_gguf({student, *loaded.quant, student_dir}, gguf_path, {});
  expect_agreement(student, gguf_path, student_dir, work, "Q4_0");
  // The same student with dequantized F32 projections: what is left is llama.cpp's F16 KV cache, so
  // the gap above is its Q4_0 matmul arithmetic (docs/models.md, "GGUF").
  exporting::ExportOptions f32;
  f32.gguf_type = exporting::GgufType::f32;
  exporting::write_gguf({student, *loaded.quant, student_dir}, work + "/model-f32.gguf", f32);
  expect_agreement(student, work + "/model-f32.gguf", student_dir, work, "F32 projections");
}

TEST(LlamaCpp, Mxfp4MainJobGgufMatchesQkdTrainTokensAndLogprobs) {
  expect_fp4_main_job_matches_llama_cpp("mxfp4", 32, "MXFP4");
}

TEST(LlamaCpp, Nvfp4MainJobGgufMatchesQkdTrainTokensAndLogprobs) {
  expect_fp4_main_job_matches_llama_cpp("nvfp4", 16, "NVFP4");
}
