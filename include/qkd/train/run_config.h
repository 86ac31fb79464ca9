#pragma once
// One JSON file describes a whole run (torchtune style). It is validated up front: unknown keys,
// wrong types and out-of-range values fail with their JSON path before anything is loaded.
// Each section is a struct that lists its own fields once (common/config_fields.h); the quant and
// data sections live in their areas with their own readers.
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "qkd/common/config_fields.h"
#include "qkd/common/dtype_names.h"
#include "qkd/common/precision.h"
#include "qkd/data/data_config.h"
#include "qkd/dist/communicator.h"
#include "qkd/export/export.h"
#include "qkd/freeze/freeze_config.h"
#include "qkd/loss/kd_loss.h"
#include "qkd/monitor/monitor_config.h"
#include "qkd/ptq/gptq.h"
#include "qkd/quant/quant_spec.h"
#include "qkd/train/lr_schedule.h"

namespace qkd::train {

// The dtypes a model may be held in, for choice().
inline constexpr std::initializer_list<torch::Dtype> kFloatDtypes = {torch::kFloat32, torch::kBFloat16,
                                                                     torch::kFloat16};

struct TeacherSection {
  std::string path;                      // Hugging Face checkpoint directory
  torch::Dtype dtype = torch::kFloat32;  // the teacher computes in this dtype, outside the student's autocast
  template <class Fields>
  void fields(Fields& f) {
    f.required_text("path", path);
    f.choice("dtype", dtype, kFloatDtypes, dtype_name);
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
    f.choice("dtype", dtype, kFloatDtypes, dtype_name);
    f.integer("gptq_calib_batches", gptq_calib_batches, 1, 1 << 20);
    f.integer("gptq_calib_seq_len", gptq_calib_seq_len, 0, 1 << 20);
    f.number("gptq_damp", gptq_damp, 0.0, 10.0);
    f.flag("gptq_act_order", gptq_act_order);
    f.choice("gptq_latent", gptq_latent, {ptq::GptqLatent::quantized, ptq::GptqLatent::compensated},
             ptq::gptq_latent_name);
  }
};

struct OptimSection {
  double lr = 1e-4;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;
  bool decay_norms_and_biases = false;
  LrSchedule schedule = LrSchedule::cosine;
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.0;
  double grad_clip = 1.0;                       // global norm; 0 disables
  bool train_embeddings = true;                 // embeddings, norms and lm_head train too (false: only the projections)
  torch::Dtype moment_dtype = torch::kFloat32;  // AdamW moments; bfloat16 halves their memory
  template <class Fields>
  void fields(Fields& f) {
    f.positive("lr", lr);
    f.number("beta1", beta1, 0.0, 0.999999);
    f.number("beta2", beta2, 0.0, 0.999999999);
    f.positive("eps", eps);
    f.number("weight_decay", weight_decay, 0.0, 1.0);
    f.flag("decay_norms_and_biases", decay_norms_and_biases);
    f.choice("schedule", schedule, {LrSchedule::cosine, LrSchedule::constant}, lr_schedule_name);
    f.integer("warmup_steps", warmup_steps, 0, kMaxSteps);
    f.number("min_lr_ratio", min_lr_ratio, 0.0, 1.0);
    f.number("grad_clip", grad_clip, 0.0, 1e9);
    f.flag("train_embeddings", train_embeddings);
    f.choice("moment_dtype", moment_dtype, {torch::kFloat32, torch::kBFloat16}, dtype_name);
  }
  static constexpr int64_t kMaxSteps = int64_t{1} << 40;
};

// How a CPU step spreads over several threads: every core computes whole row shards of each
// micro-batch with single-threaded products (`rows`, train/row_shards.h), or each product and kernel
// is split over the threads (`operators`). `rows` is faster wherever the products are small for the
// core count (docs/PERFORMANCE.md); the two differ in float rounding only.
enum class CpuParallelism { rows, operators };
inline std::string cpu_parallelism_name(CpuParallelism p) { return p == CpuParallelism::rows ? "rows" : "operators"; }

struct TrainSection {
  int64_t steps = 100;
  int64_t micro_batch = 8;
  int64_t grad_accum = 1;
  int64_t log_interval = 10;
  int64_t eval_interval = 0;                  // 0: only at the end
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
  int64_t seed = 0;
  template <class Fields>
  void fields(Fields& f) {
    f.integer("steps", steps, 1, OptimSection::kMaxSteps);
    f.integer("micro_batch", micro_batch, 1, 1 << 20);
    f.integer("grad_accum", grad_accum, 1, 1 << 20);
    f.integer("log_interval", log_interval, 1, OptimSection::kMaxSteps);
    f.integer("eval_interval", eval_interval, 0, OptimSection::kMaxSteps);
    f.text("device", device);
    f.choice("precision", precision, {Precision::fp32, Precision::bf16, Precision::fp16}, precision_name);
    f.number("loss_scale", loss_scale, 1.0, 1.7e38);
    f.integer("loss_scale_growth_interval", loss_scale_growth_interval, 1, OptimSection::kMaxSteps);
    f.flag("activation_checkpointing", activation_checkpointing);
    f.flag("phase_timing", phase_timing);
    f.integer("threads", threads, 0, 4096);
    f.choice("cpu_parallelism", cpu_parallelism, {CpuParallelism::rows, CpuParallelism::operators},
             cpu_parallelism_name);
    f.integer("seed", seed, 0, std::numeric_limits<int64_t>::max());
  }
  void check(const std::string& path) const;
};

struct EvalSection {
  std::vector<std::string> ppl;  // token files or JSONL text
  std::vector<std::string> mc;   // multiple-choice JSONL
  int64_t seq_len = 256;
  int64_t batch_size = 8;
  int64_t max_windows = 0;  // 0: all
  int64_t mc_limit = 0;     // 0: all items
  bool at_start = true;     // evaluate the initial student (round-to-nearest) too
  bool baselines = true;    // fresh runs: teacher and round-to-nearest perplexity on `ppl`, for comparison
  template <class Fields>
  void fields(Fields& f) {
    f.texts("ppl", ppl);
    f.texts("mc", mc);
    f.integer("seq_len", seq_len, 2, 1 << 20);
    f.integer("batch_size", batch_size, 1, 1 << 16);
    f.integer("max_windows", max_windows, 0, std::numeric_limits<int64_t>::max());
    f.integer("mc_limit", mc_limit, 0, std::numeric_limits<int64_t>::max());
    f.flag("at_start", at_start);
    f.flag("baselines", baselines);
  }
  void check(const std::string& path) const;
};

struct CheckpointSection {
  int64_t interval = 0;  // steps between checkpoints; 0: only at the end / on signal
  int64_t keep_last = 2;
  std::string resume = "auto";  // auto | never | <checkpoint dir>
  template <class Fields>
  void fields(Fields& f) {
    f.integer("interval", interval, 0, OptimSection::kMaxSteps);
    f.integer("keep_last", keep_last, 1, 1000);
    f.text("resume", resume);
  }
};

struct ExportSection {
  // Written to <run_dir>/export/<format> when the run finishes; empty: no export.
  std::vector<exporting::Format> formats = {exporting::Format::hf};
  torch::Dtype dtype = torch::kFloat16;  // float weights of hf and packed
  std::string gguf_type = "q4_0";        // gguf projections: q4_0 or q8_0
  template <class Fields>
  void fields(Fields& f) {
    f.retired("hf", "replaced by export.formats, a list such as [\"hf\", \"gguf\"] ([] for none)");
    f.list("formats", formats, exporting::format_names, exporting::parse_formats);
    f.choice("dtype", dtype, kFloatDtypes, dtype_name);
    f.text("gguf_type", gguf_type);
  }
  void check(const std::string& path) const;
};

// Several ranks (torchrun or SLURM start them; dist/launch.h reads who is who): how they talk.
struct DistSection {
  dist::Backend backend = dist::Backend::automatic;  // auto: NCCL on CUDA, Gloo on the CPU
  int64_t timeout_s = 300;                           // any collective; a rank gone longer fails the others
  double bucket_mb = 25.0;                           // gradients per all-reduce
  // ZeRO stage 1: each rank keeps the AdamW state (moments, fp32 masters) of its share of the parameters.
  bool shard_optimizer = true;
  template <class Fields>
  void fields(Fields& f) {
    f.choice("backend", backend, {dist::Backend::automatic, dist::Backend::gloo, dist::Backend::nccl},
             dist::backend_name);
    f.integer("timeout_s", timeout_s, 1, 7 * 24 * 3600);
    f.number("bucket_mb", bucket_mb, 0.001, 1 << 20);
    f.flag("shard_optimizer", shard_optimizer);
  }
};

struct RunConfig {
  std::string run_dir;
  std::string label;  // shown by `qkd-train report` (default: the run directory's name)
  TeacherSection teacher;
  StudentSection student;
  quant::QuantSpec quant;
  data::DataConfig data;
  loss::KdLossOptions kd;
  OptimSection optim;
  TrainSection train;
  EvalSection eval;
  freeze::FreezeConfig freeze;
  monitor::MonitorConfig monitor;
  CheckpointSection checkpoint;
  ExportSection export_;
  DistSection dist;
  nlohmann::json resolved;  // the validated config with defaults filled in, as written to the run dir
  // Settings given but not read by what the rest of the config chose ("freeze.scope: only read by
  // policy auto; policy is ov"): logged as warnings when the run starts.
  std::vector<std::string> unread_settings;
};

// Reads `path`, applies `overrides` ("a.b=value", value parsed as JSON when it parses, else a string)
// and validates. Relative paths inside the file are taken relative to the current directory, as for
// every other command-line tool.
RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides = {});
RunConfig parse_run_config(const nlohmann::json& json);

// Applies one "a.b.c=value" override to `json`; errors name the override.
void apply_override(nlohmann::json& json, const std::string& assignment);

// Sections whose change makes a checkpoint incompatible (teacher, student, quant), as JSON.
nlohmann::json model_identity(const RunConfig& config);

}  // namespace qkd::train
