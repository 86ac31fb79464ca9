#pragma once
// The run-config sections the training area owns: the teacher, where the student starts, the step
// (train) and checkpoints. The other sections live in their areas (quant, data, kd in loss, optim,
// eval, freeze, monitor, export, dist in distributed) and are gathered by run_config.h.
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <limits>
#include <string>

#include "qkd/common/config_fields.h"
#include "qkd/common/dtype_names.h"
#include "qkd/common/precision.h"
#include "qkd/optim/optim_config.h"
#include "qkd/ptq/gptq.h"

namespace qkd::train {

struct TeacherSection {
  std::string path;                      // Hugging Face checkpoint directory
  torch::Dtype dtype = torch::kFloat32;  // the teacher computes in this dtype, outside the student's autocast
  template <class Fields>
  void fields(Fields& f) {
    f.required_text("path", path);
    f.choice("dtype", dtype, model_dtypes());
  }
  void check(const std::string& path) const;
};

// Where the student's weights start: a copy of the teacher (its quantizers round to nearest), the
// teacher quantized by GPTQ on the run's own data, or a checkpoint (a Hugging Face model directory, or
// a student saved with its quantizers, such as `qkd-train ptq` writes).
struct StudentInit {
  enum class Kind { teacher, gptq, checkpoint };
  Kind kind = Kind::teacher;
  std::string path;  // checkpoint only
  static StudentInit parse(const nlohmann::json& value, const std::string& where);
  nlohmann::json to_json() const;
  bool operator==(const StudentInit& o) const { return kind == o.kind && path == o.path; }
};

struct StudentSection {
  StudentInit init;
  torch::Dtype dtype = torch::kFloat32;  // compute copy; trainable weights keep an fp32 master in the optimizer
  // init gptq: calibration windows from the start of a fresh copy of the training stream.
  int64_t gptq_calib_batches = 128;
  int64_t gptq_calib_seq_len = 0;  // 0: data.seq_len
  double gptq_damp = 0.01;
  bool gptq_act_order = false;
  ptq::GptqLatent gptq_latent = ptq::GptqLatent::quantized;  // see qkd/ptq/gptq.h
  template <class Fields>
  void fields(Fields& f) {
    f.custom("init", init, StudentInit::parse, [](const StudentInit& i) { return i.to_json(); });
    f.choice("dtype", dtype, model_dtypes());
    f.integer("gptq_calib_batches", gptq_calib_batches, 1, 1 << 20);
    f.integer("gptq_calib_seq_len", gptq_calib_seq_len, 0, 1 << 20);
    f.number("gptq_damp", gptq_damp, 0.0, 10.0);
    f.flag("gptq_act_order", gptq_act_order);
    f.choice("gptq_latent", gptq_latent, ptq::gptq_latents());
  }
};

// How a CPU step spreads over several threads: every core computes whole row shards of each
// micro-batch with single-threaded products (`rows`, train/row_shards.h), or each product and kernel
// is split over the threads (`operators`). `rows` is faster wherever the products are small for the
// core count (docs/PERFORMANCE.md); the two differ in float rounding only.
enum class CpuParallelism { rows, operators };
const EnumTable<CpuParallelism>& cpu_parallelisms();  // "rows" | "operators"

// How a step is computed: where, in which arithmetic, and what it trades between memory and time. Its
// keys sit in the `train` section beside the step's shape.
struct ComputeSection {
  std::string device = "cpu";                 // cpu | cuda | cuda:N
  Precision precision = Precision::fp32;      // autocast of the student on CUDA; fp16 also scales the loss
  double loss_scale = 65536.0;                // fp16: the first dynamic loss scale
  int64_t loss_scale_growth_interval = 2000;  // fp16: clean steps in a row before the scale doubles
  // Each decoder layer of the student keeps only its input for backward and recomputes the rest.
  bool activation_checkpointing = false;
  // CUDA: synchronize at each phase boundary so that metrics.jsonl "phases" are exact (costs overlap).
  bool phase_timing = false;
  int64_t threads = 0;  // CPU threads, 0: all cores
  CpuParallelism cpu_parallelism = CpuParallelism::rows;
  template <class Fields>
  void fields(Fields& f) {
    f.text("device", device);
    f.choice("precision", precision, precisions());
    f.number("loss_scale", loss_scale, 1.0, 1.7e38);
    f.integer("loss_scale_growth_interval", loss_scale_growth_interval, 1, optim::OptimConfig::kMaxSteps);
    f.flag("activation_checkpointing", activation_checkpointing);
    f.flag("phase_timing", phase_timing);
    f.integer("threads", threads, 0, 4096);
    f.choice("cpu_parallelism", cpu_parallelism, cpu_parallelisms());
  }
  void check(const std::string& path) const;
};

// The `train` section: the shape of the run (steps, micro-batches, logging) and how it computes.
struct TrainSection {
  int64_t steps = 100;
  int64_t micro_batch = 8;
  int64_t grad_accum = 1;
  int64_t log_interval = 10;
  int64_t eval_interval = 0;  // 0: only at the end
  int64_t seed = 0;
  ComputeSection compute;
  template <class Fields>
  void fields(Fields& f) {
    constexpr int64_t kMaxSteps = optim::OptimConfig::kMaxSteps;
    f.integer("steps", steps, 1, kMaxSteps);
    f.integer("micro_batch", micro_batch, 1, 1 << 20);
    f.integer("grad_accum", grad_accum, 1, 1 << 20);
    f.integer("log_interval", log_interval, 1, kMaxSteps);
    f.integer("eval_interval", eval_interval, 0, kMaxSteps);
    compute.fields(f);
    f.integer("seed", seed, 0, std::numeric_limits<int64_t>::max());
  }
  void check(const std::string& path) const { compute.check(path); }
};

struct CheckpointSection {
  int64_t interval = 0;  // steps between checkpoints; 0: only at the end / on signal
  int64_t keep_last = 2;
  std::string resume = "auto";  // auto | never | <checkpoint dir>
  template <class Fields>
  void fields(Fields& f) {
    f.integer("interval", interval, 0, optim::OptimConfig::kMaxSteps);
    f.integer("keep_last", keep_last, 1, 1000);
    f.text("resume", resume);
  }
};

}  // namespace qkd::train
