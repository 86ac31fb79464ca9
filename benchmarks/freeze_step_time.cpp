// Step time with frozen projections, measured so that machine drift cancels: one process, one fixed
// batch, and every iteration times one step of each freeze setting back to back (in a rotating
// order). A step is what a training step computes before the optimizer: teacher forward, fake-
// quantized student forward, KD loss, backward. Frozen projections have requires_grad off, exactly as
// the trainer's freeze does, so their weight-gradient matmuls are skipped.
// Prints one JSON object with every timed step (whole step and its backward pass alone);
// scripts/bench_freeze.py computes the statistics and writes docs/freeze-benchmark.md.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <iostream>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/common/blas_kernels.h"
#include "qkd/common/system.h"
#include "qkd/data/token_file.h"
#include "qkd/freeze/freeze_controller.h"
#include "qkd/loss/kd_loss.h"
#include "qkd/quant/student.h"

namespace {

const std::vector<std::pair<std::string, std::vector<std::string>>> kSettings = {
    {"none", {}},
    {"ov", {"self_attn.o_proj", "self_attn.v_proj"}},
    {"qkv", {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}},
    {"attention", {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"}},
    {"all",
     {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
      "mlp.down_proj"}},
};

// Freezes what `freeze.policy: modules` with these patterns freezes in training, releases the rest.
void apply_setting(qkd::model::LlamaForCausalLMImpl& student, const std::vector<std::string>& modules,
                   const std::vector<std::string>& patterns) {
  qkd::freeze::FreezeConfig config;
  config.policy = patterns.empty() ? qkd::freeze::FreezeMode::none : qkd::freeze::FreezeMode::modules;
  config.modules = patterns;
  const auto frozen = qkd::freeze::FreezePolicy(config, modules).initial();
  for (const auto& m : modules) {
    if (std::find(frozen.begin(), frozen.end(), m) != frozen.end())
      qkd::freeze::set_module_trainable(student, m, false);
    else
      qkd::freeze::set_module_trainable(student, m, true);
  }
}

struct StepTimes {
  double step = 0.0, backward = 0.0;
};

StepTimes time_step(qkd::model::LlamaForCausalLMImpl& teacher, qkd::model::LlamaForCausalLMImpl& student,
                    const torch::Tensor& batch) {
  using clock = std::chrono::steady_clock;
  for (auto& p : student.parameters()) p.mutable_grad() = torch::Tensor();
  const auto start = clock::now();
  torch::Tensor teacher_logits;
  {
    torch::NoGradGuard no_grad;
    teacher_logits = teacher.forward(batch);
  }
  const auto loss = qkd::loss::kd_loss(teacher_logits, student.forward(batch), batch, {}).loss;
  const auto backward_start = clock::now();
  loss.backward();
  const auto end = clock::now();
  return {std::chrono::duration<double>(end - start).count(),
          std::chrono::duration<double>(end - backward_start).count()};
}

}  // namespace

int main(int argc, char** argv) {
  qkd::ensure_fast_blas_kernels(argv);
  CLI::App app{"Step time of KD-QAT with frozen projections"};
  std::string model_dir = "assets/models/kjv-teacher-7m", data = "assets/data/kjv/kjv-train.u16";
  int64_t micro_batch = 8, seq_len = 256, iterations = 12, warmup = 2, threads = 0;
  app.add_option("--model", model_dir);
  app.add_option("--data", data);
  app.add_option("--micro-batch", micro_batch);
  app.add_option("--seq-len", seq_len);
  app.add_option("--iterations", iterations, "timed steps per setting");
  app.add_option("--warmup", warmup, "untimed rounds first");
  app.add_option("--threads", threads);
  CLI11_PARSE(app, argc, argv);
  try {
    qkd::set_cpu_threads(threads);
    auto teacher = qkd::checkpoint::load_llama(model_dir);
    teacher->eval();
    auto student = qkd::checkpoint::load_llama(model_dir);
    const auto modules = qkd::quant::attach_quantizers(*student, qkd::quant::QuantSpec{});  // W4 per channel
    student->train();
    const auto tokens =
        qkd::data::TokenFile::open(data).slice(0, micro_batch * seq_len).reshape({micro_batch, seq_len});

    nlohmann::json timed = nlohmann::json::object();
    for (int64_t round = 0; round < warmup + iterations; ++round) {
      for (size_t k = 0; k < kSettings.size(); ++k) {
        const auto& [name, patterns] = kSettings[(k + static_cast<size_t>(round)) % kSettings.size()];
        apply_setting(*student, modules, patterns);
        const auto t = time_step(*teacher, *student, tokens);
        if (round < warmup) continue;
        timed[name]["step_s"].push_back(t.step);
        timed[name]["backward_s"].push_back(t.backward);
      }
    }
    nlohmann::json out = {{"micro_batch", micro_batch},
                          {"seq_len", seq_len},
                          {"iterations", iterations},
                          {"settings", nlohmann::json::array()}};
    for (const auto& [name, patterns] : kSettings) {
      apply_setting(*student, modules, patterns);
      out["settings"].push_back({{"name", name},
                                 {"frozen", patterns},
                                 {"trainable_params", qkd::freeze::trainable_parameter_count(*student)},
                                 {"step_s", timed[name]["step_s"]},
                                 {"backward_s", timed[name]["backward_s"]}});
    }
    std::cout << out.dump(1) << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "qkd-bench-freeze: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
