// Perplexity windowing and the results JSON, checked with fake LogitsFns whose answers are exact.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "qkd/common/error.h"
#include "qkd/data/token_file.h"
#include "qkd/eval/perplexity.h"
#include "qkd/eval/results.h"
#include "qkd/tokenizer/tokenizer.h"
#include "test_support.h"

using namespace qkd;
using namespace qkd::eval;

namespace {

constexpr int64_t kVocab = 4096;

std::string kjv(const std::string& name) { return test::repo_path("assets/data/kjv/" + name); }

const tokenizer::Tokenizer& kjv_tokenizer() {
  static const tokenizer::Tokenizer tok(kjv("tokenizer.model"));
  return tok;
}

// Same logits everywhere: every token has probability 1/V, so ppl == V exactly.
LogitsFn uniform_logits(torch::Dtype dtype = torch::kFloat32) {
  return [dtype](const torch::Tensor& ids) { return torch::zeros({ids.size(0), ids.size(1), kVocab}, dtype); };
}

// Knows the stream and the order windows arrive in; gives the true next token logit `boost` (others 0),
// so each target's log-prob is boost - log(e^boost + V - 1). Also checks every window's inputs.
struct OracleLogits {
  torch::Tensor stream;
  int64_t seq_len;
  double boost;
  int64_t next_window = 0;

  torch::Tensor operator()(const torch::Tensor& ids) {
    auto logits = torch::zeros({ids.size(0), ids.size(1), kVocab});
    for (int64_t row = 0; row < ids.size(0); ++row, ++next_window) {
      const int64_t begin = next_window * seq_len;
      EXPECT_TRUE(torch::equal(ids[row], stream.narrow(0, begin, seq_len))) << "window " << next_window;
      const auto next = stream.narrow(0, begin + 1, seq_len);
      logits[row].scatter_(1, next.unsqueeze(1), boost);
    }
    return logits;
  }
};

double expected_oracle_ppl(double boost) { return std::exp(-(boost - std::log(std::exp(boost) + kVocab - 1))); }

torch::Tensor kjv_val_stream() { return data::TokenFile::open(kjv("kjv-val.u16")).slice(0, 47193); }

}  // namespace

TEST(EvalPerplexity, CountsWindowsLikeTheReference) {
  EXPECT_EQ(count_windows(47193, 256), 184);  // kjv-val.u16
  EXPECT_EQ(count_windows(257, 256), 1);      // a window needs L + 1 tokens
  EXPECT_EQ(count_windows(256, 256), 0);
  EXPECT_EQ(count_windows(513, 256), 2);
  EXPECT_EQ(count_windows(512, 256), 1);
}

TEST(EvalPerplexity, UniformLogitsGiveVocabSizeOnKjvVal) {
  PerplexityOptions options;
  options.seq_len = 256;
  options.batch_size = 16;
  int64_t last_done = 0, last_total = 0;
  options.progress = [&](int64_t done, int64_t total) { last_done = done, last_total = total; };
  const auto r = perplexity_of_token_file(uniform_logits(), kjv("kjv-val.u16"), options);
  EXPECT_EQ(r.windows, 184);
  EXPECT_EQ(r.tokens, 184 * 256);
  EXPECT_NEAR(r.ppl / kVocab, 1.0, 1e-6);
  EXPECT_EQ(last_done, 184);
  EXPECT_EQ(last_total, 184);
}

TEST(EvalPerplexity, ReducedPrecisionLogitsAreScoredInFp32) {
  PerplexityOptions options;
  options.max_windows = 3;
  const auto r = perplexity_of_token_file(uniform_logits(torch::kBFloat16), kjv("kjv-val.u16"), options);
  EXPECT_EQ(r.windows, 3);
  EXPECT_NEAR(r.ppl / kVocab, 1.0, 1e-6);
}

TEST(EvalPerplexity, OracleFeedsTheRightWindowsAndScoresExactly) {
  const auto stream = kjv_val_stream();
  for (int64_t batch : {1, 7}) {
    PerplexityOptions options;
    options.seq_len = 64;
    options.batch_size = batch;
    options.max_windows = 20;
    OracleLogits oracle{stream, 64, 2.0};
    const auto r = perplexity_of_tokens(std::ref(oracle), stream, options);
    EXPECT_EQ(oracle.next_window, 20);
    // fp32 log-softmax: the same ~1e-7 relative error on every token, so compare relatively.
    EXPECT_NEAR(r.ppl / expected_oracle_ppl(2.0), 1.0, 1e-5) << "batch " << batch;
  }
}

TEST(EvalPerplexity, CertainOracleGivesPplOne) {
  const auto stream = kjv_val_stream();
  PerplexityOptions options;
  options.seq_len = 256;
  options.batch_size = 32;
  OracleLogits oracle{stream, 256, 50.0};
  const auto r = perplexity_of_tokens(std::ref(oracle), stream, options);
  EXPECT_EQ(r.windows, 184);
  EXPECT_NEAR(r.ppl, 1.0, 1e-6);
}

TEST(EvalPerplexity, JsonlDocumentsTokenizeLikeTheU16File) {
  const auto from_text = tokenize_jsonl_documents(kjv_tokenizer(), kjv("kjv-val.jsonl"));
  const auto from_file = kjv_val_stream();
  ASSERT_EQ(from_text.size(0), 47193);
  EXPECT_TRUE(torch::equal(from_text, from_file));
}

TEST(EvalPerplexity, JsonlFileGoesThroughTheSameWindows) {
  PerplexityOptions options;
  options.seq_len = 256;
  const auto r = perplexity_of_file(uniform_logits(), kjv_tokenizer(), kjv("kjv-val.jsonl"), options);
  EXPECT_EQ(r.windows, 184);
  EXPECT_NEAR(r.ppl / kVocab, 1.0, 1e-6);
}

TEST(EvalPerplexity, RejectsBadInputs) {
  const auto dir = test::scratch_dir("eval-ppl");
  const auto short_file = dir + "/short.jsonl";
  std::ofstream(short_file) << "{\"text\": \"In the beginning\"}\n";
  const auto bad_file = dir + "/bad.jsonl";
  std::ofstream(bad_file) << "{\"text\": \"ok\"}\n{\"id\": 3}\n";
  PerplexityOptions options;
  try {
    perplexity_of_file(uniform_logits(), kjv_tokenizer(), short_file, options);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(short_file + ": "), std::string::npos) << e.what();
  }
  try {
    perplexity_of_file(uniform_logits(), kjv_tokenizer(), bad_file, options);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), bad_file + ":2: missing field \"text\"");
  }
  EXPECT_THROW(perplexity_of_file(uniform_logits(), kjv_tokenizer(), dir + "/none.u16", options), Error);
  EXPECT_THROW(perplexity_of_file(uniform_logits(), kjv_tokenizer(), dir + "/x.txt", options), Error);
  const LogitsFn wrong_shape = [](const torch::Tensor& ids) { return torch::zeros({ids.size(0), kVocab}); };
  EXPECT_THROW(perplexity_of_file(wrong_shape, kjv_tokenizer(), kjv("kjv-val.u16"), options), Error);
  const LogitsFn small_vocab = [](const torch::Tensor& ids) { return torch::zeros({ids.size(0), ids.size(1), 8}); };
  EXPECT_THROW(perplexity_of_file(small_vocab, kjv_tokenizer(), kjv("kjv-val.u16"), options), Error);
}

TEST(EvalResults, EvaluatesAllFilesAndWritesTheJson) {
  EvalPlan plan;
  plan.ppl_files = {kjv("kjv-val.u16")};
  plan.mc_files = {test::repo_path("tests/fixtures/mc/generic.jsonl")};
  plan.ppl.max_windows = 2;
  std::map<std::string, int64_t> last_done;
  plan.progress = [&](const std::string& file, int64_t done, int64_t) { last_done[file] = done; };
  const auto results = evaluate_all(uniform_logits(), kjv_tokenizer(), plan);
  const auto json = results_to_json(results);
  EXPECT_NEAR(json["ppl"]["kjv-val.u16"].get<double>(), kVocab, 1e-3);
  const auto& mc = json["mc"]["generic.jsonl"];
  EXPECT_EQ(mc["n"].get<int64_t>(), 3);
  EXPECT_TRUE(mc.contains("acc"));
  EXPECT_TRUE(mc.contains("acc_norm"));
  EXPECT_EQ(last_done["kjv-val.u16"], 2);
  EXPECT_EQ(last_done["generic.jsonl"], 8);  // 3 + 2 + 3 requests
}

TEST(EvalResults, JsonShape) {
  EvalResults results;
  results.ppl["a.u16"] = 12.5;
  results.mc["b.jsonl"] = McScore{0.25, 0.5, 4};
  const auto json = results_to_json(results);
  EXPECT_EQ(json.dump(), R"({"mc":{"b.jsonl":{"acc":0.25,"acc_norm":0.5,"n":4}},"ppl":{"a.u16":12.5}})");
  EXPECT_EQ(results_to_json(EvalResults{}).dump(), R"({"mc":{},"ppl":{}})");
}
