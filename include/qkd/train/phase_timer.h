#pragma once
// Wall time of each phase of a training step, summed over its micro-batches: where a step spends its
// time (metrics.jsonl "phases", docs/PERFORMANCE.md). On CUDA the device is synchronized at each phase
// boundary only when asked (train.phase_timing), since that stalls the host's queue of kernels.
#include <torch/torch.h>

#include <array>
#include <chrono>
#include <nlohmann/json.hpp>

#include "qkd/common/enum_table.h"

namespace qkd::train {

// communication: averaging gradients and step totals over the ranks (0 in a single process).
enum class Phase { data, teacher_forward, student_forward, loss, backward, communication, gradients, monitor, optimizer };
constexpr size_t kPhaseCount = 9;

const EnumTable<Phase>& phases();  // names as metrics.jsonl "phases" keys them

class PhaseTimer {
 public:
  PhaseTimer(const torch::Device& device, bool synchronize_cuda)
      : device_(device), synchronize_(synchronize_cuda && device.is_cuda()) {}

  void reset() { seconds_.fill(0.0); }

  // Times one phase for the lifetime of the returned guard.
  class Scope {
   public:
    Scope(PhaseTimer& timer, Phase phase);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    PhaseTimer& timer_;
    Phase phase_;
    std::chrono::steady_clock::time_point start_;
  };
  Scope measure(Phase phase) { return Scope(*this, phase); }

  double seconds(Phase phase) const { return seconds_[static_cast<size_t>(phase)]; }
  nlohmann::json to_json() const;  // {"teacher_forward": s, ...}

 private:
  void synchronize() const;

  torch::Device device_;
  bool synchronize_;
  std::array<double, kPhaseCount> seconds_{};
};

}  // namespace qkd::train
