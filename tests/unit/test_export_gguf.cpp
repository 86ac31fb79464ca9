// GGUF export: the file read back by an independent reader (tests/gguf_reader.h) against the GGUF v3
// layout, the model config, the sentencepiece vocabulary and the student's own integer weights.
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "gguf_reader.h"
#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/common/error.h"
#include "qkd/export/gguf_writer.h"
#include "qkd/export/integer_weights.h"
#include "qkd/model/llama.h"
#include "qkd/quant/fp4_grid.h"
#include "qkd/quant/student.h"
#include "qkd/tokenizer/sentencepiece_vocab.h"
#include "qkd/tokenizer/tokenizer.h"
#include "test_support.h"

namespace fs = std::filesystem;
using namespace qkd;
using qkd::exporting::ExportOptions;
using qkd::exporting::ExportSource;
namespace gguf = qkd::test::gguf;

namespace {

using qkd::test::expect_error;

std::string teacher_dir() { return qkd::test::shipped_teacher(); }
std::string shared_model(const std::string& name) { return test::fixture_path("models/" + name); }

// spdlog's default logger captured for the scope.
struct LogCapture {
  std::ostringstream text;
  std::shared_ptr<spdlog::logger> previous = spdlog::default_logger();
  LogCapture() {
    auto logger = std::make_shared<spdlog::logger>("capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(text));
    logger->set_level(spdlog::level::info);
    spdlog::set_default_logger(logger);
  }
  ~LogCapture() { spdlog::set_default_logger(previous); }
};

// Hugging Face rows -> llama.cpp rows (convert_hf_to_gguf.py LlamaModel.permute), and back.
torch::Tensor permute_rows(const torch::Tensor& x, int64_t heads) {
  return x.reshape({heads, 2, x.size(0) / heads / 2, -1}).transpose(1, 2).reshape(x.sizes()).contiguous();
}
torch::Tensor unpermute_rows(const torch::Tensor& x, int64_t heads) {
  return x.reshape({heads, x.size(0) / heads / 2, 2, -1}).transpose(1, 2).reshape(x.sizes()).contiguous();
}

struct Names {
  std::string gguf, hf;
  int64_t heads = 0;  // q/k permutation
};

std::vector<Names> expected_tensors(const model::LlamaConfig& c) {
  std::vector<Names> names;
  if (c.rope.type == "llama3") names.push_back({"rope_freqs.weight", ""});
  names.push_back({"token_embd.weight", "model.embed_tokens.weight"});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const auto b = "blk." + std::to_string(i) + ".", h = "model.layers." + std::to_string(i) + ".";
    names.push_back({b + "attn_norm.weight", h + "input_layernorm.weight"});
    names.push_back({b + "attn_q.weight", h + "self_attn.q_proj.weight", c.num_attention_heads});
    names.push_back({b + "attn_k.weight", h + "self_attn.k_proj.weight", c.num_key_value_heads});
    names.push_back({b + "attn_v.weight", h + "self_attn.v_proj.weight"});
    names.push_back({b + "attn_output.weight", h + "self_attn.o_proj.weight"});
    names.push_back({b + "ffn_norm.weight", h + "post_attention_layernorm.weight"});
    names.push_back({b + "ffn_gate.weight", h + "mlp.gate_proj.weight"});
    names.push_back({b + "ffn_up.weight", h + "mlp.up_proj.weight"});
    names.push_back({b + "ffn_down.weight", h + "mlp.down_proj.weight"});
  }
  names.push_back({"output_norm.weight", "model.norm.weight"});
  if (!c.tie_word_embeddings) names.push_back({"output.weight", "lm_head.weight"});
  return names;
}

torch::Tensor parameter(model::LlamaForCausalLMImpl& m, const std::string& name) {
  for (const auto& p : m.named_parameters(true))
    if (p.key() == name) return p.value().detach().to(torch::kFloat);
  throw std::runtime_error("no parameter " + name);
}

model::Linear linear(model::LlamaForCausalLMImpl& m, const std::string& weight_name) {
  for (auto& [name, l] : m.named_linears())
    if (name + ".weight" == weight_name) return l;
  throw std::runtime_error("no linear " + weight_name);
}

// The scale of every 32-column block of an integer weight, [out, in / 32].
torch::Tensor chunk_scales(const exporting::IntegerWeight& w) {
  const auto out = w.out_features(), in = w.in_features();
  auto idx = torch::arange(0, out * in, 32, torch::kLong).div(w.block_length(), "floor");
  return w.scale.reshape({-1}).index_select(0, idx).reshape({out, in / 32});
}

void expect_uint(const gguf::File& f, const std::string& key, int64_t value) {
  ASSERT_TRUE(f.has(key)) << key;
  EXPECT_EQ(f.at(key).type, gguf::kUint32) << key;
  EXPECT_EQ(f.at(key).integer, value) << key;
}
void expect_f32(const gguf::File& f, const std::string& key, double value) {
  ASSERT_TRUE(f.has(key)) << key;
  EXPECT_EQ(f.at(key).type, gguf::kFloat32) << key;
  EXPECT_EQ(f.at(key).real, static_cast<double>(static_cast<float>(value))) << key;
}
void expect_string(const gguf::File& f, const std::string& key, const std::string& value) {
  ASSERT_TRUE(f.has(key)) << key;
  EXPECT_EQ(f.at(key).type, gguf::kString) << key;
  EXPECT_EQ(f.at(key).text, value) << key;
}
void expect_bool(const gguf::File& f, const std::string& key, bool value) {
  ASSERT_TRUE(f.has(key)) << key;
  EXPECT_EQ(f.at(key).type, gguf::kBool) << key;
  EXPECT_EQ(f.at(key).integer, value ? 1 : 0) << key;
}

// Header, metadata, vocabulary and tensor table against the model and its tokenizer.
void check_layout_and_metadata(const gguf::File& f, model::LlamaForCausalLMImpl& m, const std::string& tokenizer_dir,
                               const std::string& gguf_type) {
  const auto& c = m.config();
  EXPECT_EQ(f.version, 3u);
  EXPECT_EQ(f.alignment, 32u);
  EXPECT_EQ(f.data_start % 32, 0u);
  expect_uint(f, "general.alignment", 32);
  expect_string(f, "general.architecture", "llama");
  ASSERT_TRUE(f.has("general.name"));
  EXPECT_FALSE(f.at("general.name").text.empty());
  expect_uint(f, "general.file_type", gguf_type == "q4_0" ? 2 : 7);
  expect_uint(f, "general.quantization_version", 2);
  expect_uint(f, "llama.context_length", c.max_position_embeddings);
  expect_uint(f, "llama.embedding_length", c.hidden_size);
  expect_uint(f, "llama.block_count", c.num_hidden_layers);
  expect_uint(f, "llama.feed_forward_length", c.intermediate_size);
  expect_uint(f, "llama.rope.dimension_count", c.head_dim);
  expect_uint(f, "llama.attention.head_count", c.num_attention_heads);
  expect_uint(f, "llama.attention.head_count_kv", c.num_key_value_heads);
  expect_f32(f, "llama.attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  expect_f32(f, "llama.rope.freq_base", c.rope.theta);
  expect_uint(f, "llama.vocab_size", c.vocab_size);
  EXPECT_FALSE(f.has("llama.rope.scaling.type"));  // llama3 travels as rope_freqs, like the converter

  // Vocabulary: the sentencepiece model's pieces, scores and types.
  expect_string(f, "tokenizer.ggml.model", "llama");
  const auto vocab = tokenizer::read_sentencepiece_vocab(tokenizer_dir + "/tokenizer.model");
  const auto& tokens = f.at("tokenizer.ggml.tokens");
  const auto& scores = f.at("tokenizer.ggml.scores");
  const auto& types = f.at("tokenizer.ggml.token_type");
  EXPECT_EQ(tokens.element_type, gguf::kString);
  EXPECT_EQ(scores.element_type, gguf::kFloat32);
  EXPECT_EQ(types.element_type, gguf::kInt32);
  ASSERT_EQ(static_cast<int64_t>(tokens.texts.size()), c.vocab_size);
  ASSERT_EQ(scores.reals.size(), tokens.texts.size());
  ASSERT_EQ(types.integers.size(), tokens.texts.size());
  ASSERT_EQ(vocab.pieces.size(), tokens.texts.size());
  for (size_t i = 0; i < vocab.pieces.size(); ++i) {
    EXPECT_EQ(tokens.texts[i], vocab.pieces[i].piece) << i;
    EXPECT_EQ(scores.reals[i], vocab.pieces[i].score) << i;
    EXPECT_EQ(types.integers[i], static_cast<int64_t>(vocab.pieces[i].type)) << i;
  }
  // ... which are the tokenizer's own: its encoding, spelled with these pieces, is the text.
  auto tok = tokenizer::load_tokenizer_for_checkpoint(tokenizer_dir);
  EXPECT_EQ(tok.vocab_size(), c.vocab_size);
  for (const std::string text : {"In the beginning God created the heaven and the earth.",
                                 "And Jesus answered, Verily I say unto thee; 42 loaves!"}) {
    std::string spelled;
    for (auto id : tok.encode(text)) {
      const auto& piece = tokens.texts.at(id);
      if (types.integers.at(id) == 6)
        spelled += static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16));
      else
        spelled += piece;
    }
    std::string decoded;
    for (size_t i = 0; i < spelled.size();) {
      if (spelled.compare(i, 3, "\xe2\x96\x81") == 0) {
        decoded += ' ';
        i += 3;
      } else {
        decoded += spelled[i++];
      }
    }
    EXPECT_EQ(decoded, " " + text);
  }
  expect_uint(f, "tokenizer.ggml.bos_token_id", tok.special().bos);
  expect_uint(f, "tokenizer.ggml.eos_token_id", tok.special().eos);
  EXPECT_EQ(types.integers.at(tok.special().bos), 3);
  EXPECT_EQ(types.integers.at(tok.special().eos), 3);
  ASSERT_TRUE(f.has("tokenizer.ggml.unknown_token_id"));
  EXPECT_EQ(types.integers.at(f.at("tokenizer.ggml.unknown_token_id").integer), 2);
  EXPECT_EQ(f.has("tokenizer.ggml.padding_token_id"), c.pad_token_id >= 0);
  expect_bool(f, "tokenizer.ggml.add_bos_token", true);
  expect_bool(f, "tokenizer.ggml.add_eos_token", false);
  expect_bool(f, "tokenizer.ggml.add_space_prefix", vocab.add_dummy_prefix);

  // Tensor table: llama.cpp's names, order, reversed dims and types.
  const auto names = expected_tensors(c);
  ASSERT_EQ(f.tensors.size(), names.size());
  const auto big = gguf_type == "q8_0" ? gguf::Q8_0 : gguf::F16;
  const auto proj = gguf_type == "q8_0" ? gguf::Q8_0 : gguf::Q4_0;
  for (size_t i = 0; i < names.size(); ++i) {
    const auto& t = f.tensors[i];
    EXPECT_EQ(t.name, names[i].gguf);
    if (names[i].hf.empty()) continue;
    const auto p = parameter(m, names[i].hf);
    std::vector<int64_t> ne(p.sizes().rbegin(), p.sizes().rend());
    EXPECT_EQ(t.ne, ne) << t.name;
    if (p.dim() == 1)
      EXPECT_EQ(t.type, gguf::F32) << t.name;
    else if (t.name == "token_embd.weight" || t.name == "output.weight")
      EXPECT_EQ(t.type, big) << t.name;
    else
      EXPECT_EQ(t.type, proj) << t.name;
  }
  // The file ends with the last tensor's (padded) data.
  const auto& last = f.tensors.back();
  EXPECT_LE(f.file_size() - (f.data_start + last.offset + gguf::type_size_bytes(last.type, last.elements())), 31u);
}

// Every projection: the GGUF blocks hold the student's codes and its scales rounded to fp16, and
// dequantize (after undoing the q/k permutation) to its effective weight within that rounding.
void check_projections_exact(const gguf::File& f, model::LlamaForCausalLMImpl& m) {
  for (const auto& n : expected_tensors(m.config())) {
    const auto& t = f.tensor(n.gguf);
    if (t.type != gguf::Q4_0 && t.type != gguf::Q8_0) continue;
    if (n.gguf == "token_embd.weight" || (n.gguf == "output.weight" && !m.lm_head->weight_quantizer())) continue;
    SCOPED_TRACE(n.gguf);
    const auto w = exporting::integer_weight(m, n.hf);
    auto [levels, scales] = f.blocks(t);
    if (n.heads) {
      levels = unpermute_rows(levels, n.heads);
      scales = unpermute_rows(scales, n.heads);
    }
    EXPECT_TRUE(torch::equal(levels, w.codes.to(torch::kShort)));
    EXPECT_TRUE(torch::equal(scales, chunk_scales(w).to(torch::kHalf).to(torch::kFloat)));
    auto deq = f.to_float(t);
    if (n.heads) deq = unpermute_rows(deq, n.heads);
    const auto effective = linear(m, n.hf)->effective_weight().detach().to(torch::kFloat);
    EXPECT_TRUE(torch::allclose(deq, effective, /*rtol=*/1.0 / 1024, /*atol=*/1e-7))
        << (deq - effective).abs().max().item<float>();
  }
}

void check_float_tensors(const gguf::File& f, model::LlamaForCausalLMImpl& m) {
  for (const auto& n : expected_tensors(m.config())) {
    if (n.hf.empty()) continue;
    const auto& t = f.tensor(n.gguf);
    const auto p = parameter(m, n.hf);
    SCOPED_TRACE(n.gguf);
    if (t.type == gguf::F32) EXPECT_TRUE(torch::equal(f.to_float(t), p));
    if (t.type == gguf::F16) EXPECT_TRUE(torch::equal(f.to_float(t), p.to(torch::kHalf).to(torch::kFloat)));
    if (t.type == gguf::Q8_0 && (n.gguf == "token_embd.weight" || n.gguf == "output.weight"))
      EXPECT_TRUE(torch::allclose(f.to_float(t), p, 0, p.abs().max().item<double>() / 127));
  }
}

std::string write(model::LlamaForCausalLMImpl& m, const quant::QuantSpec& spec, const std::string& tokenizer_dir,
                  const std::string& gguf_type, const std::string& tag) {
  const auto path = test::scratch_dir(tag) + "/model.gguf";
  ExportOptions options;
  options.gguf_type = exporting::gguf_types().parse(gguf_type, "gguf_type");
  ExportSource source{m, spec, tokenizer_dir};
  exporting::check_gguf(source, options);
  exporting::write_gguf(source, path, options);
  return path;
}

}  // namespace

TEST(SentencepieceVocab, ReadsPiecesScoresAndTypes) {
  const auto vocab = tokenizer::read_sentencepiece_vocab(teacher_dir() + "/tokenizer.model");
  ASSERT_EQ(vocab.pieces.size(), 4096u);
  EXPECT_EQ(vocab.pieces[0].piece, "<unk>");
  EXPECT_EQ(vocab.pieces[0].type, tokenizer::PieceType::unknown);
  EXPECT_EQ(vocab.pieces[1].piece, "<s>");
  EXPECT_EQ(vocab.pieces[1].type, tokenizer::PieceType::control);
  EXPECT_EQ(vocab.pieces[2].piece, "</s>");
  EXPECT_EQ(vocab.pieces[2].type, tokenizer::PieceType::control);
  int normal = 0, bytes = 0;
  for (const auto& p : vocab.pieces) {
    normal += p.type == tokenizer::PieceType::normal;
    if (p.type == tokenizer::PieceType::byte) {
      ++bytes;
      EXPECT_EQ(p.piece.rfind("<0x", 0), 0u) << p.piece;
    }
  }
  EXPECT_GT(normal, 3000);
  EXPECT_TRUE(bytes == 0 || bytes == 256) << bytes;
  EXPECT_TRUE(vocab.add_dummy_prefix);
}

TEST(SentencepieceVocab, ErrorsNameTheFile) {
  const auto dir = test::scratch_dir("spm-bad");
  expect_error([&] { tokenizer::read_sentencepiece_vocab(dir + "/absent.model"); },
               {dir + "/absent.model", "cannot open"});
  const auto garbage = dir + "/garbage.model";
  std::ofstream(garbage) << "this is not a protobuf \xff\xff\xff";
  expect_error([&] { tokenizer::read_sentencepiece_vocab(garbage); }, {garbage, "not a sentencepiece model"});
  // A truncated copy of a real model.
  std::ifstream in(teacher_dir() + "/tokenizer.model", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto truncated = dir + "/truncated.model";
  std::ofstream(truncated, std::ios::binary) << bytes.substr(0, bytes.size() / 2 + 3);
  expect_error([&] { tokenizer::read_sentencepiece_vocab(truncated); }, {truncated, "not a sentencepiece model"});
}

TEST(Gguf, TeacherW4PerChannelIsTheStudentsOwnQ4_0) {
  quant::QuantSpec spec;  // 4-bit symmetric per channel
  auto m = test::load_student(teacher_dir(), spec);
  LogCapture log;
  const auto path = write(*m, spec, teacher_dir(), "q4_0", "gguf-w4");
  EXPECT_EQ(log.text.str().find("re-quantized"), std::string::npos) << log.text.str();
  gguf::File f(path);
  check_layout_and_metadata(f, *m, teacher_dir(), "q4_0");
  check_projections_exact(f, *m);
  check_float_tensors(f, *m);
  EXPECT_EQ(f.at("llama.context_length").integer, 512);
  // Nothing but model.gguf in the directory (the temporary was renamed).
  EXPECT_EQ(std::distance(fs::directory_iterator(fs::path(path).parent_path()), fs::directory_iterator()), 1);
}

// gguf_type f32 / f16: every projection is the student's dequantized weight (bitwise in F32, its fp16
// rounding in F16), embeddings and output F32 / F16, norms F32.
TEST(Gguf, F32AndF16ProjectionsAreTheDequantizedStudent) {
  quant::QuantSpec spec;  // 4-bit symmetric per channel
  auto m = test::load_student(teacher_dir(), spec);
  for (const std::string type : {"f32", "f16"}) {
    SCOPED_TRACE(type);
    LogCapture log;
    const auto path = write(*m, spec, teacher_dir(), type, "gguf-float-" + type);
    EXPECT_NE(log.text.str().find("written dequantized (" + type + ")"), std::string::npos) << log.text.str();
    gguf::File f(path);
    expect_uint(f, "general.file_type", type == "f32" ? 0 : 1);
    const auto as_written = [&](const torch::Tensor& x) {
      return type == "f32" ? x : x.to(torch::kHalf).to(torch::kFloat);
    };
    int64_t projections = 0;
    for (const auto& n : expected_tensors(m->config())) {
      if (n.hf.empty()) continue;
      SCOPED_TRACE(n.gguf);
      const auto& t = f.tensor(n.gguf);
      const auto p = parameter(*m, n.hf);
      auto values = f.to_float(t);
      if (p.dim() == 1) {
        EXPECT_EQ(t.type, gguf::F32);
        EXPECT_TRUE(torch::equal(values, p));
        continue;
      }
      EXPECT_EQ(t.type, type == "f32" ? gguf::F32 : gguf::F16);
      if (n.gguf == "token_embd.weight" || n.gguf == "output.weight") {
        EXPECT_TRUE(torch::equal(values, as_written(p)));
        continue;
      }
      if (n.heads) values = unpermute_rows(values, n.heads);
      const auto effective = linear(*m, n.hf)->effective_weight().detach().to(torch::kFloat);
      EXPECT_TRUE(torch::equal(values, as_written(effective)));
      ++projections;
    }
    EXPECT_EQ(projections, 7 * m->config().num_hidden_layers);
  }
}

TEST(Gguf, PerGroup64AndPerTensorStudentsAreExact) {
  for (auto granularity : {quant::Granularity::per_group, quant::Granularity::per_tensor}) {
    quant::QuantSpec spec;
    spec.granularity = granularity;
    spec.group_size = 64;
    spec.scale_policy = quant::ScalePolicy::fixed;
    auto m = test::load_student(teacher_dir(), spec);
    LogCapture log;
    const auto path = write(*m, spec, teacher_dir(), "q4_0", "gguf-group");
    EXPECT_EQ(log.text.str().find("re-quantized"), std::string::npos) << log.text.str();
    gguf::File f(path);
    check_layout_and_metadata(f, *m, teacher_dir(), "q4_0");
    check_projections_exact(f, *m);
    // Per group 64: two consecutive blocks share a scale.
    const auto [levels, scales] = f.blocks(f.tensor("blk.0.ffn_down.weight"));
    if (granularity == quant::Granularity::per_group) {
      const auto s = scales.reshape({scales.size(0), -1, 2});
      EXPECT_TRUE(torch::equal(s.select(2, 0), s.select(2, 1)));
    } else {
      EXPECT_TRUE((scales == scales.flatten()[0]).all().item<bool>());
    }
  }
}

TEST(Gguf, EightBitStudentIsTheStudentsOwnQ8_0) {
  quant::QuantSpec spec;
  spec.bits = 8;
  auto m = test::load_student(teacher_dir(), spec);
  LogCapture log;
  const auto path = write(*m, spec, teacher_dir(), "q8_0", "gguf-w8");
  EXPECT_EQ(log.text.str().find("re-quantized"), std::string::npos) << log.text.str();
  gguf::File f(path);
  check_layout_and_metadata(f, *m, teacher_dir(), "q8_0");
  check_projections_exact(f, *m);
  check_float_tensors(f, *m);
}

TEST(Gguf, NarrowerSymmetricGridsFitAsIs) {
  // 2-bit symmetric codes (-2..1) are Q4_0 levels; 4-bit ones are Q8_0 levels.
  const std::vector<std::pair<int64_t, std::string>> cases = {{2, "q4_0"}, {4, "q8_0"}};
  for (const auto& [bits, type] : cases) {
    quant::QuantSpec spec;
    spec.bits = bits;
    auto m = test::load_student(shared_model("tiny-llama-tied-llama3rope-bf16"), spec);
    LogCapture log;
    const auto path = write(*m, spec, shared_model("tiny-llama-tied-llama3rope-bf16"), type, "gguf-narrow");
    EXPECT_EQ(log.text.str().find("re-quantized"), std::string::npos) << log.text.str();
    gguf::File f(path);
    check_projections_exact(f, *m);
  }
}

TEST(Gguf, AsymmetricAndFloatProjectionsAreRequantizedWithAWarning) {
  quant::QuantSpec spec;
  spec.symmetric = false;
  spec.modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj"};  // down_proj stays float
  auto m = test::load_student(teacher_dir(), spec);
  LogCapture log;
  const auto path = write(*m, spec, teacher_dir(), "q4_0", "gguf-asym");
  const auto text = log.text.str();
  EXPECT_NE(text.find("42 of 42 projections re-quantized to q4_0"), std::string::npos) << text;
  EXPECT_NE(text.find("asymmetric 4-bit grid"), std::string::npos) << text;
  EXPECT_NE(text.find("float (not quantized by the student)"), std::string::npos) << text;
  EXPECT_NE(text.find("||W_student - W_gguf|| / ||W_student||"), std::string::npos) << text;
  EXPECT_NE(text.find("worst"), std::string::npos) << text;
  EXPECT_NE(text.find("overall"), std::string::npos) << text;
  gguf::File f(path);
  check_layout_and_metadata(f, *m, teacher_dir(), "q4_0");
  // The re-quantized weights stay near the student's (Q4_0 of a 4-bit weight: a few percent).
  double diff2 = 0, ref2 = 0, worst = 0;
  for (const auto& n : expected_tensors(m->config())) {
    const auto& t = f.tensor(n.gguf);
    if (t.type != gguf::Q4_0) continue;
    auto deq = f.to_float(t);
    if (n.heads) deq = unpermute_rows(deq, n.heads);
    const auto w = linear(*m, n.hf)->effective_weight().detach().to(torch::kFloat);
    const double d = (deq - w).to(torch::kDouble).pow(2).sum().item<double>(),
                 r = w.to(torch::kDouble).pow(2).sum().item<double>();
    diff2 += d;
    ref2 += r;
    worst = std::max(worst, std::sqrt(d / r));
  }
  EXPECT_GT(worst, 1e-3);
  EXPECT_LT(worst, 0.2);
  // The warning's figures are these.
  char expected[64];
  std::snprintf(expected, sizeof expected, "overall %.4g", std::sqrt(diff2 / ref2));
  EXPECT_NE(text.find(expected), std::string::npos) << text << " lacks " << expected;
}

TEST(Gguf, Llama3RopeAndTiedEmbeddings) {
  const auto dir = shared_model("tiny-llama-tied-llama3rope-bf16");
  quant::QuantSpec spec;
  auto m = test::load_student(dir, spec);
  ASSERT_EQ(m->config().rope.type, "llama3");
  ASSERT_TRUE(m->config().tie_word_embeddings);
  const auto path = write(*m, spec, dir, "q4_0", "gguf-llama3");
  gguf::File f(path);
  check_layout_and_metadata(f, *m, dir, "q4_0");
  check_projections_exact(f, *m);
  check_float_tensors(f, *m);
  EXPECT_FALSE(f.has_tensor("output.weight"));
  // ggml divides each base frequency by rope_freqs: that must give the model's scaled frequencies.
  const auto& rf = f.tensor("rope_freqs.weight");
  EXPECT_EQ(rf.type, gguf::F32);
  EXPECT_EQ(rf.ne, std::vector<int64_t>{m->config().head_dim / 2});
  const auto factors = f.to_float(rf);
  const auto& c = m->config();
  const auto base = 1.0 / torch::pow(torch::tensor(c.rope.theta, torch::kFloat64),
                                     torch::arange(0, c.head_dim, 2, torch::kFloat64) / double(c.head_dim));
  const auto scaled = model::RotaryEmbedding(c).inv_freq().to(torch::kFloat64);
  EXPECT_TRUE(torch::allclose(base / factors.to(torch::kFloat64), scaled, 1e-6, 0)) << factors;
  EXPECT_GT(factors.max().item<float>(), 1.0f);  // some scaling happens at this original context
}

TEST(Gguf, InFeaturesNotAMultipleOf32FailsNamingTheTensorAndWritesNothing) {
  model::LlamaConfig c;
  c.vocab_size = 4096;
  c.hidden_size = 48;
  c.intermediate_size = 64;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 24;
  model::LlamaForCausalLM m(c);
  quant::QuantSpec spec;
  quant::attach_quantizers(*m, spec);
  const auto dir = test::scratch_dir("gguf-bad");
  const auto path = dir + "/model.gguf";
  ExportSource source{*m, spec, teacher_dir()};
  for (const auto* type : {"q4_0", "q8_0"}) {
    ExportOptions options;
    options.gguf_type = exporting::gguf_types().parse(type, "gguf_type");
    // The first tensor in file order that cannot be blocked: q_proj, or with q8_0 the embeddings.
    const std::string tensor = std::string(type) == "q4_0"
                                   ? "model.layers.0.self_attn.q_proj.weight (blk.0.attn_q.weight)"
                                   : "model.embed_tokens.weight (token_embd.weight)";
    expect_error([&] { exporting::check_gguf(source, options); }, {tensor, "in_features 48", "multiple of 32"});
    expect_error([&] { exporting::write_gguf(source, path, options); }, {tensor, "in_features 48"});
    EXPECT_TRUE(fs::is_empty(dir));
  }
  // A real checkpoint: intermediate_size 176 puts down_proj off the blocks.
  auto gqa = test::load_student(shared_model("tiny-llama-gqa-sharded"), spec);
  ExportSource gqa_source{*gqa, spec, shared_model("tiny-llama-gqa-sharded")};
  expect_error([&] { exporting::write_gguf(gqa_source, path, {}); },
               {"model.layers.0.mlp.down_proj.weight (blk.0.ffn_down.weight)", "in_features 176"});
  EXPECT_TRUE(fs::is_empty(dir));
}

TEST(Gguf, BadOptionsAndTokenizerFailBeforeWriting) {
  quant::QuantSpec spec;
  auto m = test::load_student(teacher_dir(), spec);
  const auto dir = test::scratch_dir("gguf-opts");
  ExportOptions options;
  expect_error(
      [&] {
        options.gguf_type = exporting::gguf_types().parse("q4_k", "gguf_type");
        exporting::write_gguf({*m, spec, teacher_dir()}, dir + "/model.gguf", options);
      },
      {"gguf_type", "q4_k"});
  expect_error(
      [&] {
        exporting::write_gguf({*m, spec, dir}, dir + "/model.gguf", {});
      },
      {dir + "/tokenizer.model", "cannot open"});
  EXPECT_TRUE(fs::is_empty(dir));
}

namespace {

quant::QuantSpec fp4_spec(quant::WeightFormat format) {
  return quant::quant_spec_from_json({{"format", quant::weight_formats().name(format)}});
}

bool is_projection(const Names& n) { return !n.hf.empty() && n.hf.find("_proj.weight") != std::string::npos; }

}  // namespace

// fp4 students: MXFP4 / NVFP4 blocks hold the student's own codes and scale bytes, NVFP4 projections
// carry their per-tensor scale as "<name>.scale" (what llama.cpp's graph multiplies by), and ggml's
// dequantization times that scale gives the forward weights bitwise.
TEST(Gguf, Fp4StudentsAreTheirOwnMxfp4AndNvfp4) {
  for (auto format : {quant::WeightFormat::mxfp4, quant::WeightFormat::nvfp4}) {
    SCOPED_TRACE(quant::weight_formats().name(format));
    const bool nv = format == quant::WeightFormat::nvfp4;
    const auto spec = fp4_spec(format);
    auto m = test::load_student(teacher_dir(), spec);
    LogCapture log;
    const auto path = write(*m, spec, teacher_dir(), "auto", "gguf-fp4");
    EXPECT_EQ(log.text.str().find("re-quantized"), std::string::npos) << log.text.str();
    gguf::File f(path);
    expect_uint(f, "general.file_type", nv ? 39 : 38);  // LLAMA_FTYPE_MOSTLY_NVFP4 / _MXFP4_MOE
    const auto names = expected_tensors(m->config());
    size_t scales = 0, projections = 0;
    for (const auto& n : names) {
      if (!is_projection(n)) continue;
      SCOPED_TRACE(n.gguf);
      const auto& t = f.tensor(n.gguf);
      EXPECT_EQ(t.type, nv ? gguf::NVFP4 : gguf::MXFP4);
      const auto w = exporting::integer_weight(*m, n.hf);
      auto [codes, bytes] = f.fp4_blocks(t);
      auto deq = f.to_float(t);
      if (n.heads) {
        codes = unpermute_rows(codes, n.heads);
        bytes = unpermute_rows(bytes, n.heads);
        deq = unpermute_rows(deq, n.heads);
      }
      EXPECT_TRUE(torch::equal(codes, w.codes.to(torch::kShort)));
      EXPECT_TRUE(torch::equal(bytes, nv ? quant::fp4::e4m3_bytes(w.scale) : quant::fp4::e8m0_bytes(w.scale)));
      const auto scale_name = n.gguf.substr(0, n.gguf.size() - 7) + ".scale";
      ASSERT_EQ(f.has_tensor(scale_name), nv);
      float tensor_scale = 1.0f;
      if (nv) {
        const auto& s = f.tensor(scale_name);
        EXPECT_EQ(s.type, gguf::F32);
        EXPECT_EQ(s.ne, std::vector<int64_t>{1});
        tensor_scale = f.to_float(s).item<float>();
        EXPECT_EQ(tensor_scale, w.tensor_scale.item<float>());
        ++scales;
      }
      torch::NoGradGuard no_grad;
      EXPECT_TRUE(torch::equal(deq * tensor_scale, linear(*m, n.hf)->effective_weight().to(torch::kFloat)));
      ++projections;
    }
    EXPECT_EQ(projections, 42u);
    EXPECT_EQ(f.tensors.size(), names.size() + scales);
    check_float_tensors(f, *m);
  }
}

TEST(Gguf, GridsThatAreNotTheTypesAreRequantizedWithAWarning) {
  // An integer student into NVFP4 (qkd-train's own min-max NVFP4 quantizer, with a per-tensor scale).
  quant::QuantSpec spec;
  auto m = test::load_student(teacher_dir(), spec);
  LogCapture log;
  auto path = write(*m, spec, teacher_dir(), "nvfp4", "gguf-int-nvfp4");
  auto text = log.text.str();
  EXPECT_NE(text.find("42 of 42 projections re-quantized to nvfp4"), std::string::npos) << text;
  EXPECT_NE(text.find("4-bit integer grid"), std::string::npos) << text;
  gguf::File f(path);
  expect_uint(f, "general.file_type", 39);
  const auto& t = f.tensor("blk.0.ffn_up.weight");
  EXPECT_EQ(t.type, gguf::NVFP4);
  const auto deq = f.to_float(t) * f.to_float(f.tensor("blk.0.ffn_up.scale")).item<float>();
  const auto w = exporting::integer_weight(*m, "model.layers.0.mlp.up_proj.weight").dequantize();
  EXPECT_LT(((deq - w).norm() / w.norm()).item<double>(), 0.2);
  // An fp4 student into Q4_0.
  const auto mx = fp4_spec(quant::WeightFormat::mxfp4);
  auto s = test::load_student(teacher_dir(), mx);
  LogCapture log2;
  write(*s, mx, teacher_dir(), "q4_0", "gguf-mxfp4-q4");
  text = log2.text.str();
  EXPECT_NE(text.find("re-quantized to q4_0"), std::string::npos) << text;
  EXPECT_NE(text.find("mxfp4 grid (4-bit float, not integer levels)"), std::string::npos) << text;
}

TEST(Gguf, Nvfp4NeedsRowsOfWholeSixtyFourBlocks) {
  auto config = test::tiny_llama_config();
  config.hidden_size = 80;  // 5 heads of 16: whole NVFP4 groups of 16, but not 64-value ggml blocks
  config.num_attention_heads = 5;
  config.num_key_value_heads = 5;
  model::LlamaForCausalLM model(config);
  const auto spec = fp4_spec(quant::WeightFormat::nvfp4);
  quant::attach_quantizers(*model, spec);
  ExportOptions options;
  expect_error(
      [&] {
        exporting::check_gguf({*model, spec, teacher_dir()}, options);
      },
      {"model.layers.0.self_attn.q_proj.weight (blk.0.attn_q.weight)", "in_features 80",
       "not a multiple of 64, the block length of NVFP4"});
}
