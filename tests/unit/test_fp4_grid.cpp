// The fp4 weight grids (NVFP4, MXFP4) against a direct, scalar implementation of each specification
// written here from the specs (OCP MX v1.0 E2M1 / E8M0, E4M3FN), on hand-computed blocks (ties,
// subnormal scales, saturation, zero blocks) and random weights, bit for bit; the quantizer's
// gradient; and the config rules of quant.format.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "qkd/common/error.h"
#include "qkd/quant/fp4_grid.h"
#include "qkd/quant/quant_spec.h"
#include "qkd/quant/weight_quantizer.h"
#include "test_support.h"

using namespace qkd::quant;
namespace fp4 = qkd::quant::fp4;

namespace {

using qkd::test::expect_error;

// ---- the specifications, one value at a time ----------------------------------------------------

// E2M1: sign, 2 exponent bits (bias 1), 1 mantissa bit; exponent 0 is subnormal (0.5 * m).
float spec_e2m1_decode(int code) {
  const int sign = (code >> 3) & 1, e = (code >> 1) & 3, m = code & 1;
  const float v = e == 0 ? 0.5f * m : std::ldexp(1.0f + 0.5f * m, e - 1);
  return sign ? -v : v;
}

// Nearest E2M1 magnitude to |x| (saturating at 6), ties to the code with mantissa bit 0; zero is +0.
int spec_e2m1_code(float x) {
  const float a = std::min(std::fabs(x), 6.0f);
  int best = 0;
  for (int c = 1; c < 8; ++c) {
    const float d = std::fabs(spec_e2m1_decode(c) - a), db = std::fabs(spec_e2m1_decode(best) - a);
    if (d < db || (d == db && (c & 1) == 0)) best = c;
  }
  return best != 0 && x < 0 ? best | 8 : best;
}

// E4M3 (FN): sign, 4 exponent bits (bias 7), 3 mantissa bits; exponent 0 subnormal (m * 2^-9); S.1111.111 NaN.
float spec_e4m3_decode(int byte) {
  if ((byte & 0x7F) == 0x7F) return std::numeric_limits<float>::quiet_NaN();
  const int e = (byte >> 3) & 15, m = byte & 7;
  const float v = e == 0 ? std::ldexp(float(m), -9) : std::ldexp(1.0f + m / 8.0f, e - 7);
  return byte & 0x80 ? -v : v;
}

// Nearest non-negative E4M3 value (saturating at 448), ties to even mantissa.
int spec_e4m3_byte(float x) {
  const float a = std::min(x, 448.0f);
  int best = 0;
  for (int b = 1; b < 0x7F; ++b) {
    const float d = std::fabs(spec_e4m3_decode(b) - a), db = std::fabs(spec_e4m3_decode(best) - a);
    if (d < db || (d == db && (b & 1) == 0)) best = b;
  }
  return best;
}

struct SpecResult {
  std::vector<int> codes;
  std::vector<float> values;
  std::vector<int> scale_bytes;
  float tensor_scale = 1.0f;
};

// NVFP4 of one row-major [rows, in] weight: g = 2688 / amax (1 if not finite), s_t = 1 / g, per 16:
// s = E4M3(min(g * (amax_b / 6), 448)), code = E2M1(x / (s * s_t)), value = (e2m1 * s) * s_t.
SpecResult spec_nvfp4(const std::vector<float>& w) {
  float amax = 0;
  for (float x : w) amax = std::max(amax, std::fabs(x));
  float g = 2688.0f / std::max(amax, std::numeric_limits<float>::min());
  if (!std::isfinite(g)) g = 1.0f;
  SpecResult r;
  r.tensor_scale = 1.0f / g;
  for (size_t b = 0; b < w.size(); b += 16) {
    float amax_b = 0;
    for (size_t j = 0; j < 16; ++j) amax_b = std::max(amax_b, std::fabs(w[b + j]));
    const int byte = spec_e4m3_byte(std::min(g * (amax_b / 6.0f), 448.0f));
    const float s = spec_e4m3_decode(byte), step = s * r.tensor_scale;
    r.scale_bytes.push_back(byte);
    for (size_t j = 0; j < 16; ++j) {
      const int code = step > 0 ? spec_e2m1_code(w[b + j] / step) : 0;
      r.codes.push_back(code);
      r.values.push_back((spec_e2m1_decode(code) * s) * r.tensor_scale);
    }
  }
  return r;
}

// MXFP4 (OCP MX v1.0, 6.3): per 32, shared exponent k = floor(log2(amax)) - emax(E2M1) = ... - 2,
// clamped to E8M0's [-127, 127] (-127 for an all-zero block); code = E2M1(x / 2^k), saturating.
SpecResult spec_mxfp4(const std::vector<float>& w) {
  SpecResult r;
  for (size_t b = 0; b < w.size(); b += 32) {
    float amax = 0;
    for (size_t j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(w[b + j]));
    int k = amax > 0 ? std::ilogb(amax) - 2 : -127;
    k = std::max(-127, std::min(127, k));
    const float s = std::ldexp(1.0f, k);
    r.scale_bytes.push_back(k + 127);
    for (size_t j = 0; j < 32; ++j) {
      const int code = spec_e2m1_code(w[b + j] / s);
      r.codes.push_back(code);
      r.values.push_back(spec_e2m1_decode(code) * s);
    }
  }
  return r;
}

// ---- helpers ---------------------------------------------------------------------------------------

QuantSpec fp4_spec(WeightFormat format, RangeMethod range = RangeMethod::minmax) {
  QuantSpec s;
  s.format = format;
  s.granularity = Granularity::per_group;
  s.group_size = fp4_group_size(format);
  s.range = range;
  return s;
}

torch::Tensor row(const std::vector<float>& values) {
  return torch::tensor(values, torch::kFloat).reshape({1, static_cast<int64_t>(values.size())});
}

bool bitwise_equal(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || !a.sizes().equals(b.sizes())) return false;
  auto ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.numel() * ca.element_size()) == 0;
}

std::vector<int> ints(const torch::Tensor& t) {
  const auto c = t.to(torch::kInt).contiguous().reshape({-1});
  return std::vector<int>(c.data_ptr<int>(), c.data_ptr<int>() + c.numel());
}

std::vector<float> floats(const torch::Tensor& t) {
  const auto c = t.to(torch::kFloat).contiguous().reshape({-1});
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// The quantizer's forward value, codes and scales for one [rows, in] weight.
struct Quantized {
  torch::Tensor value, codes, block, tensor;
};
Quantized quantize(const QuantSpec& spec, const torch::Tensor& w) {
  WeightQuantizer q(spec, w.size(0), w.size(1), "test.proj");
  auto c = q.fp4_codes(w);
  return {q.fake_quantize(w).detach(), c.codes.reshape(w.sizes()), c.scales.block.reshape({w.size(0), -1}),
          c.scales.tensor};
}

// Random weights with the shapes that matter: ordinary rows, a row of tiny values (E4M3 subnormal
// block scales), a row of zeros, and exact ties.
torch::Tensor awkward_weight(int64_t rows, int64_t in, uint64_t seed) {
  torch::manual_seed(seed);
  auto w = torch::randn({rows, in}) * 0.05;
  w[1] = w[1] * 1e-5;
  w[2].zero_();
  w[3] = torch::round(w[3] * 512) / 512;  // many values on a binary grid: ties after scaling
  return w.contiguous();
}

}  // namespace

TEST(Fp4Grid, E2M1RoundingMatchesTheSpecOnEveryTieAndBeyondSaturation) {
  std::vector<float> xs;
  for (int i = -1000; i <= 1000; ++i) xs.push_back(i / 128.0f);  // every tie (multiples of 0.125) and more
  for (float x : {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, 6.5f, 7.0f, 100.0f, 1e30f}) {
    xs.push_back(x);
    xs.push_back(-x);
  }
  const auto codes = ints(fp4::e2m1_codes(fp4::round_e2m1(torch::tensor(xs))));
  for (size_t i = 0; i < xs.size(); ++i) ASSERT_EQ(codes[i], spec_e2m1_code(xs[i])) << xs[i];
  // The ties, by hand: 0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4.
  EXPECT_EQ(floats(fp4::round_e2m1(torch::tensor({0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, -5.0f, 9.0f}))),
            (std::vector<float>{0, 1, 1, 2, 2, 4, 4, -4, 6}));
  // Zero of either sign is +0, code 0.
  const auto negative_zero = fp4::round_e2m1(torch::tensor({-0.1f}));
  EXPECT_FALSE(std::signbit(negative_zero.item<float>()));
}

TEST(Fp4Grid, E2M1CodesDecodeAsTheSpecSays) {
  const auto values = floats(fp4::e2m1_values(torch::arange(16, torch::kShort)));
  for (int c = 0; c < 16; ++c) EXPECT_EQ(values[c], spec_e2m1_decode(c)) << c;
  EXPECT_EQ(floats(fp4::e2m1_values(torch::arange(8, torch::kShort))),
            (std::vector<float>{0, 0.5, 1, 1.5, 2, 3, 4, 6}));
}

TEST(Fp4Grid, E4M3BytesRoundingAndSaturationMatchTheSpec) {
  // Every byte decodes as the spec says (NaN for S.1111.111).
  const auto decoded = floats(fp4::e4m3_from_bytes(torch::arange(256, torch::kInt).to(torch::kUInt8)));
  for (int b = 0; b < 256; ++b) {
    if ((b & 0x7F) == 0x7F)
      EXPECT_TRUE(std::isnan(decoded[b])) << b;
    else
      EXPECT_EQ(decoded[b], spec_e4m3_decode(b)) << b;
  }
  // Every non-negative value encodes back to its byte.
  const auto positive = torch::arange(0x7F, torch::kInt).to(torch::kUInt8);
  EXPECT_EQ(ints(fp4::e4m3_bytes(fp4::e4m3_from_bytes(positive))), ints(positive));
  // Rounding: a sweep over the whole range, subnormals, ties and saturation.
  std::vector<float> xs;
  for (int i = 0; i <= 4000; ++i) xs.push_back(std::ldexp(float(i), -12));  // 0 .. ~0.98, ties among them
  for (int i = 0; i <= 2000; ++i) xs.push_back(0.25f * i);                  // up to 500
  for (float x : {std::ldexp(2.5f, -9), std::ldexp(3.5f, -9), std::ldexp(0.5f, -9), 1.0625f, 1.1875f, 464.0f, 1e9f})
    xs.push_back(x);
  const auto bytes = ints(fp4::e4m3_bytes(fp4::round_e4m3(torch::tensor(xs))));
  for (size_t i = 0; i < xs.size(); ++i) ASSERT_EQ(bytes[i], spec_e4m3_byte(xs[i])) << xs[i];
  // By hand: subnormal ties 2.5 * 2^-9 -> 2 * 2^-9, 3.5 * 2^-9 -> 4 * 2^-9, 0.5 * 2^-9 -> 0;
  // 1.0625 -> 1 and 1.1875 -> 1.25 (ties to even mantissa); 464 saturates at 448 (0x7E).
  EXPECT_EQ(ints(fp4::e4m3_bytes(fp4::round_e4m3(torch::tensor(
                {std::ldexp(2.5f, -9), std::ldexp(3.5f, -9), std::ldexp(0.5f, -9), 1.0625f, 1.1875f, 464.0f})))),
            (std::vector<int>{0x02, 0x04, 0x00, 0x38, 0x3A, 0x7E}));
}

TEST(Fp4Grid, E8M0BytesArePowersOfTwo) {
  const auto bytes = torch::arange(255, torch::kInt).to(torch::kUInt8);
  const auto values = floats(fp4::e8m0_from_bytes(bytes));
  for (int b = 0; b < 255; ++b) EXPECT_EQ(values[b], std::ldexp(1.0f, b - 127)) << b;
  EXPECT_EQ(ints(fp4::e8m0_bytes(fp4::e8m0_from_bytes(bytes))), ints(bytes));
  EXPECT_TRUE(std::isnan(fp4::e8m0_from_bytes(torch::tensor({255}, torch::kInt).to(torch::kUInt8)).item<float>()));
}

// One row of 64: four NVFP4 blocks worked out by hand. amax 42 makes g = 2688 / 42 = 64 and s_t = 1/64.
TEST(Fp4Grid, Nvfp4HandComputedBlocks) {
  std::vector<float> w(64, 0.0f);
  // Block 0 holds the tensor's amax (6 steps): s = E4M3(64 * 42 / 6) = 448, step 448 / 64 = 7; x / 7
  // holds every E2M1 tie.
  const std::vector<float> t0 = {6, -3, 1.5, 0.5, -0.25, 3.5, 0.75, 1.25, 2.5, 5, 1.75, 0.1f, 5.5, -4.4f, 0.3f, -2.9f};
  for (int j = 0; j < 16; ++j) w[j] = 7 * t0[j];
  // Block 1: amax 15 * 2^-15: g * amax / 6 = 2.5 * 2^-9, an E4M3 subnormal tie -> 2 * 2^-9 (byte 0x02);
  // step 2^-8 / 64 = 2^-14, so the amax element is 7.5 steps: saturated at 6.
  w[16] = std::ldexp(15.0f, -15);
  w[17] = std::ldexp(-5.0f, -15);  // -2.5 steps: tie -> -2
  w[18] = std::ldexp(1.0f, -16);   // 0.25 steps: tie -> 0
  w[19] = std::ldexp(3.0f, -16);   // 0.75 steps: tie -> 1
  // Block 2: zeros. Block 3: g * amax / 6 = 1.0625, an E4M3 tie -> 1.0 (byte 0x38), step 1/64; the
  // amax element (6.375 steps) saturates.
  w[48] = 0.099609375f;  // 6.375 / 64
  w[49] = -1.5f / 64;    // -1.5
  w[50] = 3.5f / 64;     // 3.5: tie -> 4

  const auto q = quantize(fp4_spec(WeightFormat::nvfp4), row(w));
  EXPECT_EQ(q.tensor.item<float>(), 1.0f / 64);
  EXPECT_EQ(ints(fp4::e4m3_bytes(q.block)), (std::vector<int>{0x7E, 0x02, 0x00, 0x38}));
  const auto codes = ints(q.codes);
  EXPECT_EQ(std::vector<int>(codes.begin(), codes.begin() + 16),
            (std::vector<int>{7, 13, 3, 1, 0, 6, 2, 2, 4, 6, 4, 0, 7, 14, 1, 13}));
  EXPECT_EQ(std::vector<int>(codes.begin() + 16, codes.begin() + 20), (std::vector<int>{7, 12, 0, 2}));
  EXPECT_EQ(std::vector<int>(codes.begin() + 32, codes.begin() + 48), std::vector<int>(16, 0));
  EXPECT_EQ(std::vector<int>(codes.begin() + 48, codes.begin() + 51), (std::vector<int>{7, 11, 6}));
  // The values: (e2m1 * s) * s_t, e.g. 6 * 448 / 64 = 42 and the saturated 6 * 2^-8 / 64.
  const auto values = floats(q.value);
  EXPECT_EQ(values[0], 42.0f);
  EXPECT_EQ(values[16], std::ldexp(6.0f, -14));
  EXPECT_EQ(values[48], 6.0f / 64);
  // And the direct implementation agrees on everything.
  const auto spec = spec_nvfp4(w);
  EXPECT_EQ(codes, spec.codes);
  EXPECT_EQ(values, spec.values);
  EXPECT_EQ(ints(fp4::e4m3_bytes(q.block)), spec.scale_bytes);
}

// One row of 64: two MXFP4 blocks by hand.
TEST(Fp4Grid, Mxfp4HandComputedBlocks) {
  std::vector<float> w(64, 0.0f);
  // Block 0: amax 0.9375 = 7.5 * 2^-3: k = floor(log2 0.9375) - 2 = -3 (byte 124), so 7.5 saturates at 6.
  const std::vector<float> steps = {7.5, -7, 2.5, 0.5, 0.25, 3.5, -1.25, 5.5};
  for (size_t j = 0; j < steps.size(); ++j) w[j] = steps[j] / 8;
  // Block 1: zeros: the smallest scale, 2^-127 (byte 0, as llama.cpp writes it).
  const auto q = quantize(fp4_spec(WeightFormat::mxfp4), row(w));
  EXPECT_EQ(ints(fp4::e8m0_bytes(q.block)), (std::vector<int>{124, 0}));
  const auto codes = ints(q.codes);
  EXPECT_EQ(std::vector<int>(codes.begin(), codes.begin() + 8), (std::vector<int>{7, 15, 4, 1, 0, 6, 10, 7}));
  EXPECT_EQ(std::vector<int>(codes.begin() + 32, codes.end()), std::vector<int>(32, 0));
  EXPECT_EQ(floats(q.value)[0], 0.75f);  // 6 * 2^-3
  EXPECT_EQ(q.tensor.item<float>(), 1.0f);
  const auto spec = spec_mxfp4(w);
  EXPECT_EQ(codes, spec.codes);
  EXPECT_EQ(floats(q.value), spec.values);
  EXPECT_EQ(ints(fp4::e8m0_bytes(q.block)), spec.scale_bytes);
}

TEST(Fp4Grid, RandomWeightsMatchTheSpecBitwise) {
  for (auto format : {WeightFormat::nvfp4, WeightFormat::mxfp4}) {
    SCOPED_TRACE(weight_formats().name(format));
    const auto w = awkward_weight(8, 128, 11);
    const auto q = quantize(fp4_spec(format), w);
    const auto spec = format == WeightFormat::nvfp4 ? spec_nvfp4(floats(w)) : spec_mxfp4(floats(w));
    EXPECT_EQ(ints(q.codes), spec.codes);
    EXPECT_TRUE(bitwise_equal(q.value, torch::tensor(spec.values).reshape(w.sizes())));
    const auto bytes = format == WeightFormat::nvfp4 ? fp4::e4m3_bytes(q.block) : fp4::e8m0_bytes(q.block);
    EXPECT_EQ(ints(bytes), spec.scale_bytes);
    EXPECT_EQ(q.tensor.item<float>(), spec.tensor_scale);
    // The codes decode to the forward value, bitwise (what every export writes).
    const auto group = fp4_group_size(format);
    const auto decoded =
        fp4::dequantize(fp4::e2m1_values(q.codes).reshape({8, -1, group}), q.block.unsqueeze(-1), q.tensor);
    EXPECT_TRUE(bitwise_equal(decoded.reshape(w.sizes()), q.value));
  }
  // Row 1's tiny values give NVFP4 subnormal block scales (E4M3 exponent field 0) somewhere.
  const auto nv = quantize(fp4_spec(WeightFormat::nvfp4), awkward_weight(8, 128, 11));
  const auto bytes = ints(fp4::e4m3_bytes(nv.block[1]));
  EXPECT_TRUE(std::any_of(bytes.begin(), bytes.end(), [](int b) { return b > 0 && b < 8; }));
}

TEST(Fp4Grid, SearchIsNeverWorseThanMinMaxPerBlock) {
  for (auto format : {WeightFormat::nvfp4, WeightFormat::mxfp4}) {
    SCOPED_TRACE(weight_formats().name(format));
    torch::manual_seed(3);
    auto w = torch::randn({16, 128}) * 0.02;
    w.index_put_({torch::indexing::Slice(), 5}, 0.3);  // an outlier column: clipping pays in its blocks
    const auto group = fp4_group_size(format);
    const auto error = [&](RangeMethod range) {
      const auto q = quantize(fp4_spec(format, range), w);
      return (q.value - w).square().reshape({16, -1, group}).sum(-1);
    };
    const auto minmax = error(RangeMethod::minmax), searched = error(RangeMethod::search);
    EXPECT_TRUE((searched <= minmax).all().item<bool>());
    EXPECT_LT(searched.sum().item<double>(), minmax.sum().item<double>());
  }
}

TEST(Fp4Grid, StraightThroughGradientMaskedOnlyWhereSearchSaturates) {
  const auto w = awkward_weight(4, 64, 5);
  const auto g = torch::randn({4, 64});
  for (auto format : {WeightFormat::nvfp4, WeightFormat::mxfp4}) {
    for (auto range : {RangeMethod::minmax, RangeMethod::search}) {
      WeightQuantizer q(fp4_spec(format, range), 4, 64, "test.proj");
      auto x = w.clone().requires_grad_(true);
      (q.fake_quantize(x) * g).sum().backward();
      if (range == RangeMethod::minmax) {
        EXPECT_TRUE(torch::equal(x.grad(), g));
        continue;
      }
      const auto blocks = w.reshape({4, -1, fp4_group_size(format)});
      const auto scales = fp4::fp4_scales(blocks, format, range, clipping_grid(fp4_spec(format, range)));
      const auto saturated = fp4::saturated(blocks, scales).reshape({4, 64});
      EXPECT_TRUE(torch::equal(x.grad(), g.masked_fill(saturated, 0)));
    }
  }
}

TEST(Fp4Grid, Bf16WeightsAreQuantizedInFp32) {
  const auto w = awkward_weight(4, 64, 9);
  WeightQuantizer q(fp4_spec(WeightFormat::nvfp4), 4, 64, "test.proj");
  const auto bf = q.fake_quantize(w.to(torch::kBFloat16));
  EXPECT_EQ(bf.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(bf, q.fake_quantize(w.to(torch::kBFloat16).to(torch::kFloat)).to(torch::kBFloat16)));
}

TEST(Fp4Grid, ConfigRulesNameTheKey) {
  using nlohmann::json;
  // The format implies its grid.
  const auto nv = quant_spec_from_json({{"format", "nvfp4"}});
  EXPECT_EQ(nv.granularity, Granularity::per_group);
  EXPECT_EQ(nv.group_size, 16);
  EXPECT_EQ(quant_spec_from_json({{"format", "mxfp4"}}).group_size, 32);
  EXPECT_EQ(quant_spec_from_json(quant_spec_to_json(nv)), nv);
  EXPECT_EQ(quant_spec_to_json(QuantSpec{}).at("format"), "int");
  expect_error(
      [] {
        quant_spec_from_json({{"format", "fp8"}});
      },
      "quant.format: expected one of int, nvfp4, mxfp4, got \"fp8\"");
  expect_error([] { quant_spec_from_json({{"format", "nvfp4"}, {"bits", 3}}); }, {"quant.bits", "nvfp4", "E2M1"});
  expect_error(
      [] {
        quant_spec_from_json({{"format", "mxfp4"}, {"group_size", 128}});
      },
      {"quant.group_size", "mxfp4 fixes the group size at 32, got 128"});
  expect_error(
      [] {
        quant_spec_from_json({{"format", "nvfp4"}, {"granularity", "per_channel"}});
      },
      {"quant.granularity", "per_group"});
  expect_error(
      [] {
        quant_spec_from_json({{"format", "nvfp4"}, {"symmetric", false}});
      },
      {"quant.symmetric", "no zero point"});
  expect_error(
      [] {
        quant_spec_from_json({{"format", "mxfp4"}, {"scale_policy", "static"}});
      },
      {"quant.scale_policy", "dynamic"});
  expect_error([] { quant_spec_from_json({{"format", "nvfp4"}, {"lm_head_bits", 8}}); }, "quant.lm_head_bits");
  expect_error([] { quant_spec_from_json({{"format", "nvfp4"}, {"act_bits", 8}}); }, "quant.act_bits");
  // A layer whose width is not a whole number of blocks.
  expect_error([] { WeightQuantizer(fp4_spec(WeightFormat::mxfp4), 4, 48, "m.layers.0.mlp.down_proj"); },
               {"quant.group_size", "48", "m.layers.0.mlp.down_proj"});
}
