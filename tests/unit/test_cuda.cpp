// The CUDA paths against the CPU: the optimizer's modes (fp32 master, bf16 compensation, int8 moments)
// and the block-wise int8 codes, attention (scaled_dot_product_attention on CUDA with LibTorch 2.x),
// a quantized student's forward and backward, the allocator's peak, and a bf16 run through the binary
// on CUDA resumed from its checkpoint. Every test skips without a GPU; `ctest -L cuda` selects them
// (tests/CMakeLists.txt labels this file), which scripts/gpu/device_check.sh runs on the device.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "qkd/common/torch_compat.h"
#include "qkd/io/safetensors.h"
#include "qkd/loss/kd_loss.h"
#include "qkd/model/llama.h"
#include "qkd/optim/adamw.h"
#include "qkd/optim/blockwise_int8.h"
#include "qkd/quant/student.h"
#include "test_support.h"

namespace {

using qkd::optim::AdamW;
using qkd::optim::AdamWOptions;
using qkd::optim::MasterWeights;

#define SKIP_WITHOUT_CUDA() \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device"

const torch::Device kCuda(torch::kCUDA, 0);

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.detach().cpu().to(torch::kDouble) - b.detach().cpu().to(torch::kDouble)).abs().max().item<double>();
}

TEST(Cuda, BlockwiseInt8CodesEqualTheCpuCodes) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(1);
  const auto x = torch::randn({100000}) * torch::exp(torch::randn({100000}) * 3.0);
  for (const bool is_signed : {true, false}) {
    const auto values = is_signed ? x : x.abs();
    const auto cpu = qkd::optim::quantize_blockwise(values, is_signed);
    const auto gpu = qkd::optim::quantize_blockwise(values.to(kCuda), is_signed);
    EXPECT_TRUE(torch::equal(gpu.absmax.cpu(), cpu.absmax));
    EXPECT_TRUE(torch::equal(gpu.codes.cpu(), cpu.codes));
    EXPECT_TRUE(torch::equal(qkd::optim::dequantize_blockwise(gpu, is_signed).cpu(),
                             qkd::optim::dequantize_blockwise(cpu, is_signed)));
  }
}

// Each mode's update on CUDA is the CPU's: the same elementwise IEEE operations, so equal up to the
// rounding of a fused kernel here and there (one bf16 step at most on the weights).
TEST(Cuda, AdamWModesUpdateAsOnTheCpu) {
  SKIP_WITHOUT_CUDA();
  struct Mode {
    torch::Dtype moments;
    MasterWeights master;
  };
  for (const auto mode :
       {Mode{torch::kFloat32, MasterWeights::fp32}, Mode{torch::kChar, MasterWeights::bf16_compensated},
        Mode{torch::kBFloat16, MasterWeights::none}, Mode{torch::kChar, MasterWeights::fp32}}) {
    AdamWOptions options{0.9, 0.999, 1e-8, 0.01};
    options.moment_dtype = mode.moments;
    options.master_weights = mode.master;
    torch::manual_seed(2);
    const auto init = (torch::randn({256, 64}) * 0.02).to(torch::kBFloat16);
    auto cpu = init.clone().requires_grad_(true), gpu = init.to(kCuda).requires_grad_(true);
    AdamW on_cpu(options), on_gpu(options);
    on_cpu.add_parameter("w", cpu, true);
    on_gpu.add_parameter("w", gpu, true);
    for (int step = 0; step < 5; ++step) {
      const auto g = (torch::randn({256, 64}) * 0.1).to(torch::kBFloat16);
      cpu.mutable_grad() = g;
      gpu.mutable_grad() = g.to(kCuda);
      on_cpu.step(1e-4);
      on_gpu.step(1e-4);
    }
    const auto ulp = cpu.detach().abs().to(torch::kFloat32) * std::pow(2.0, -7);
    EXPECT_TRUE(((gpu.detach().cpu().to(torch::kFloat32) - cpu.detach().to(torch::kFloat32)).abs() <= ulp + 1e-30)
                    .all()
                    .item<bool>());
    const auto a = on_cpu.state(), b = on_gpu.state();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].first, b[i].first);
      EXPECT_EQ(a[i].second.scalar_type(), b[i].second.scalar_type()) << a[i].first;
      EXPECT_EQ(a[i].second.sizes(), b[i].second.sizes()) << a[i].first;
    }
  }
}

TEST(Cuda, CausalAttentionMatchesTheCpuPath) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(3);
  const auto q = torch::randn({2, 8, 64, 32}), k = torch::randn({2, 4, 64, 32}), v = torch::randn({2, 4, 64, 32});
  const auto cpu = qkd::compat::causal_attention(q, k, v);
  const auto gpu = qkd::compat::causal_attention(q.to(kCuda), k.to(kCuda), v.to(kCuda));
  EXPECT_LT(max_abs_diff(gpu, cpu), 1e-4);
  const auto gpu16 = qkd::compat::causal_attention(q.to(kCuda).to(torch::kBFloat16), k.to(kCuda).to(torch::kBFloat16),
                                                   v.to(kCuda).to(torch::kBFloat16));
  EXPECT_LT(max_abs_diff(gpu16, cpu), 3e-2);
}

// A W4 student's logits and gradients on CUDA, fp32, against the CPU.
TEST(Cuda, QuantizedStudentForwardAndBackwardMatchTheCpu) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(4);
  qkd::model::LlamaForCausalLM cpu(qkd::test::tiny_llama_config());
  qkd::model::LlamaForCausalLM gpu(qkd::test::tiny_llama_config());
  {
    torch::NoGradGuard no_grad;
    auto from = cpu->parameters(), to = gpu->parameters();
    for (size_t i = 0; i < from.size(); ++i) to[i].copy_(from[i]);
  }
  const auto spec = qkd::test::quant_spec(4, qkd::quant::Granularity::per_channel, true);
  qkd::quant::attach_quantizers(*cpu, spec);
  qkd::quant::attach_quantizers(*gpu, spec);
  gpu->to(kCuda);
  const auto ids = torch::randint(0, 100, {2, 24});
  const auto teacher = torch::randn({2, 24, 100});
  const auto loss_cpu = qkd::loss::kd_loss(teacher, cpu->forward(ids), ids, {}).loss;
  const auto logits_gpu = gpu->forward(ids.to(kCuda));
  const auto loss_gpu = qkd::loss::kd_loss(teacher.to(kCuda), logits_gpu, ids.to(kCuda), {}).loss;
  EXPECT_NEAR(loss_gpu.item<double>(), loss_cpu.item<double>(), 1e-4);
  loss_cpu.backward();
  loss_gpu.backward();
  auto a = cpu->named_parameters(), b = gpu->named_parameters();
  for (const auto& item : a) {
    const auto& grad = item.value().grad();
    if (!grad.defined()) continue;
    const auto other = b[item.key()].grad();
    ASSERT_TRUE(other.defined()) << item.key();
    EXPECT_LT(max_abs_diff(other, grad), 1e-4 + 1e-3 * grad.abs().max().item<double>()) << item.key();
  }
}

TEST(Cuda, PeakMemoryIsTheCachingAllocatorsPeak) {
  SKIP_WITHOUT_CUDA();
  {
    const auto big = torch::empty({64 << 20}, torch::TensorOptions().dtype(torch::kUInt8).device(kCuda));
    torch::cuda::synchronize();
  }
  EXPECT_GE(qkd::compat::cuda_peak_allocated_mb(kCuda), 64.0);
}

// The recipe's optimizer (bf16 compensation, int8 moments) through the binary on CUDA in bf16: 4 steps,
// and the same run resumed from its step-2 checkpoint in another directory, end on the same student
// and optimizer state: the same tensors (names, dtypes, shapes) and the same values up to what CUDA's
// nondeterministic kernels allow (qkd-train does not ask for deterministic algorithms: atomics in some
// backward kernels may change the last bits between two processes). The test prints how many tensors
// came out bitwise equal; on the CPU tests/unit/test_optimizer_savings.cpp holds resume to bitwise.
TEST(Cuda, Bf16RunWithTheRecipesOptimizerResumesToTheSameState) {
  SKIP_WITHOUT_CUDA();
  const auto dir = qkd::test::scratch_dir("cuda-resume");
  nlohmann::json config{
      {"run_dir", dir + "/straight"},
      {"teacher", {{"path", qkd::test::shipped_teacher()}, {"dtype", "bfloat16"}}},
      {"student", {{"dtype", "bfloat16"}}},
      {"quant", {{"bits", 4}}},
      {"data",
       {{"sources", {{{"path", qkd::test::repo_path("assets/data/kjv/kjv-train.u16")}}}},
        {"seq_len", 64},
        {"seed", 3}}},
      {"kd", {{"ce_weight", 0.5}}},
      {"optim", {{"lr", 1e-4}, {"master_weights", "bf16_compensated"}, {"moment_dtype", "int8"}}},
      {"train", {{"steps", 4}, {"micro_batch", 2}, {"grad_accum", 2}, {"device", "cuda"}, {"precision", "bf16"}}},
      {"eval", {{"at_start", false}, {"ppl", nlohmann::json::array()}, {"mc", nlohmann::json::array()}}},
      {"monitor", {{"enabled", false}}},
      {"checkpoint", {{"interval", 2}, {"keep_last", 4}}},
      {"export", {{"formats", nlohmann::json::array()}}}};
  std::ofstream(dir + "/straight.json") << config.dump();
  const auto straight = qkd::test::run_cli("--config " + dir + "/straight.json");
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  config["run_dir"] = dir + "/resumed";
  config["checkpoint"]["resume"] = dir + "/straight/checkpoints/step-00000002";
  std::ofstream(dir + "/resumed.json") << config.dump();
  const auto resumed = qkd::test::run_cli("--config " + dir + "/resumed.json");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  int bitwise = 0, total = 0;
  for (const auto* file : {"student", "optimizer"}) {
    const auto path = std::string("/checkpoints/step-00000004/") + file + ".safetensors";
    const auto a = qkd::io::read_safetensors(dir + "/straight" + path);
    const auto b = qkd::io::read_safetensors(dir + "/resumed" + path);
    ASSERT_EQ(a.size(), b.size()) << file;
    for (size_t i = 0; i < a.size(); ++i) {
      const auto& [name, x] = a[i];
      const auto& y = b[i].second;
      ASSERT_EQ(name, b[i].first);
      ASSERT_EQ(x.scalar_type(), y.scalar_type()) << name;
      ASSERT_EQ(x.sizes(), y.sizes()) << name;
      ++total;
      if (torch::equal(x, y)) {
        ++bitwise;
        continue;
      }
      if (x.scalar_type() == torch::kChar) {  // int8 moment codes: neighbouring codes at most, nearly all equal
        const auto step = (x.to(torch::kInt) - y.to(torch::kInt)).abs();
        EXPECT_LE(step.max().item<int>(), 2) << name;
        EXPECT_GE((step == 0).to(torch::kDouble).mean().item<double>(), 0.9) << name;
      } else if (x.is_floating_point()) {
        const auto xf = x.to(torch::kFloat32), yf = y.to(torch::kFloat32);
        EXPECT_TRUE(torch::allclose(xf, yf, /*rtol=*/5e-2, /*atol=*/1e-4))
            << file << " " << name << " max |diff| " << max_abs_diff(xf, yf);
      } else {
        EXPECT_TRUE(torch::equal(x, y)) << name;  // counters
      }
    }
  }
  std::cout << bitwise << " of " << total << " checkpoint tensors bitwise equal after the resume\n";
}

}  // namespace
