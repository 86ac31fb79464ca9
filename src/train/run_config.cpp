#include "qkd/train/run_config.h"

#include <filesystem>
#include <fstream>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/common/error.h"
#include "qkd/common/json_fields.h"
#include "qkd/common/json_io.h"

namespace qkd::train {

namespace {

using nlohmann::json;
constexpr int64_t kMaxInt = std::numeric_limits<int64_t>::max();

ModelSection read_model_section(const json& j, const std::string& where, bool is_student) {
  FieldReader r(j, where);
  ModelSection m;
  m.path = is_student ? r.string("init", "teacher") : r.required_string("path");
  m.dtype = r.one_of("dtype", "float32", {"float32", "bfloat16", "float16"});
  r.finish();
  return m;
}

loss::KdLossOptions read_kd(const json& j) {
  FieldReader r(j, "kd");
  loss::KdLossOptions kd;
  kd.divergence = loss::parse_divergence(r.string("divergence", "forward_kl"), "kd.divergence");
  kd.kd_weight = r.number("kd_weight", 1.0, 0.0, 1e6);
  kd.ce_weight = r.number("ce_weight", 0.0, 0.0, 1e6);
  kd.temperature = r.positive("temperature", 1.0);
  kd.chunk_tokens = r.integer("chunk_tokens", 2048, 1, kMaxInt);
  r.finish();
  if (kd.kd_weight == 0.0 && kd.ce_weight == 0.0) fail("kd", "kd_weight and ce_weight are both 0: nothing to train");
  return kd;
}

OptimSection read_optim(const json& j) {
  FieldReader r(j, "optim");
  OptimSection o;
  o.lr = r.positive("lr", o.lr);
  o.beta1 = r.number("beta1", o.beta1, 0.0, 0.999999);
  o.beta2 = r.number("beta2", o.beta2, 0.0, 0.999999999);
  o.eps = r.positive("eps", o.eps);
  o.weight_decay = r.number("weight_decay", o.weight_decay, 0.0, 1.0);
  o.decay_norms_and_biases = r.boolean("decay_norms_and_biases", o.decay_norms_and_biases);
  o.schedule = r.one_of("schedule", lr_schedule_name(o.schedule), {"cosine", "constant"}) == "cosine"
                   ? LrSchedule::cosine
                   : LrSchedule::constant;
  o.warmup_steps = r.integer("warmup_steps", o.warmup_steps, 0, kMaxInt);
  o.min_lr_ratio = r.number("min_lr_ratio", o.min_lr_ratio, 0.0, 1.0);
  o.grad_clip = r.number("grad_clip", o.grad_clip, 0.0, 1e9);
  o.train_embeddings = r.boolean("train_embeddings", o.train_embeddings);
  r.finish();
  return o;
}

TrainSection read_train(const json& j) {
  FieldReader r(j, "train");
  TrainSection t;
  t.steps = r.integer("steps", t.steps, 1, kMaxInt);
  t.micro_batch = r.integer("micro_batch", t.micro_batch, 1, 1 << 20);
  t.grad_accum = r.integer("grad_accum", t.grad_accum, 1, 1 << 20);
  t.log_interval = r.integer("log_interval", t.log_interval, 1, kMaxInt);
  t.eval_interval = r.integer("eval_interval", t.eval_interval, 0, kMaxInt);
  t.device = r.string("device", t.device);
  if (t.device != "cpu" && t.device.rfind("cuda", 0) != 0)
    fail("train.device", "expected cpu, cuda or cuda:N, got \"" + t.device + "\"");
  t.precision =
      parse_precision(r.one_of("precision", precision_name(t.precision), {"fp32", "bf16", "fp16"}), "train.precision");
  t.threads = r.integer("threads", t.threads, 0, 4096);
  t.seed = static_cast<uint64_t>(r.integer("seed", 0, 0, kMaxInt));
  r.finish();
  return t;
}

EvalSection read_eval(const json& j) {
  FieldReader r(j, "eval");
  EvalSection e;
  e.ppl = r.strings("ppl", e.ppl);
  e.mc = r.strings("mc", e.mc);
  e.seq_len = r.integer("seq_len", e.seq_len, 2, 1 << 20);
  e.batch_size = r.integer("batch_size", e.batch_size, 1, 1 << 16);
  e.max_windows = r.integer("max_windows", e.max_windows, 0, kMaxInt);
  e.mc_limit = r.integer("mc_limit", e.mc_limit, 0, kMaxInt);
  e.at_start = r.boolean("at_start", e.at_start);
  e.baselines = r.boolean("baselines", e.baselines);
  r.finish();
  for (size_t i = 0; i < e.ppl.size(); ++i)
    if (!std::filesystem::exists(e.ppl[i])) fail("eval.ppl[" + std::to_string(i) + "]", "file not found: " + e.ppl[i]);
  for (size_t i = 0; i < e.mc.size(); ++i)
    if (!std::filesystem::exists(e.mc[i])) fail("eval.mc[" + std::to_string(i) + "]", "file not found: " + e.mc[i]);
  return e;
}

CheckpointSection read_checkpoint(const json& j) {
  FieldReader r(j, "checkpoint");
  CheckpointSection c;
  c.interval = r.integer("interval", c.interval, 0, kMaxInt);
  c.keep_last = r.integer("keep_last", c.keep_last, 1, 1000);
  c.resume = r.string("resume", c.resume);
  r.finish();
  return c;
}

ExportSection read_export(const json& j) {
  FieldReader r(j, "export");
  ExportSection e;
  if (r.has("hf")) fail(r.path_of("hf"), "replaced by export.formats, a list such as [\"hf\", \"gguf\"] ([] for none)");
  e.formats = exporting::parse_formats(r.strings("formats", exporting::format_names(e.formats)), r.path_of("formats"));
  e.dtype = r.one_of("dtype", e.dtype, {"float32", "bfloat16", "float16"});
  e.gguf_type = r.one_of("gguf_type", e.gguf_type, {"q4_0", "q8_0"});
  r.finish();
  return e;
}

json section(const json& j, const char* key) { return j.contains(key) ? j.at(key) : json(nullptr); }

// Evaluation settings that evaluate nothing without an eval file.
void note_unread_eval_settings(const json& eval, const RunConfig& c, std::vector<std::string>& unread) {
  if (!c.eval.ppl.empty() || !c.eval.mc.empty()) return;
  if (c.train.eval_interval > 0) unread.push_back("train.eval_interval: no eval.ppl or eval.mc file to evaluate");
  if (eval.is_object())
    for (const char* key : {"at_start", "baselines", "max_windows", "mc_limit", "seq_len", "batch_size"})
      if (eval.contains(key))
        unread.push_back(std::string("eval.") + key + ": no eval.ppl or eval.mc file to evaluate");
}

json resolved_json(const RunConfig& c) {
  return {
      {"run_dir", c.run_dir},
      {"label", c.label},
      {"teacher", {{"path", c.teacher.path}, {"dtype", c.teacher.dtype}}},
      {"student", {{"init", c.student.path}, {"dtype", c.student.dtype}}},
      {"quant", quant::quant_spec_to_json(c.quant)},
      {"data", data::data_config_to_json(c.data)},
      {"kd",
       {{"divergence", loss::divergence_name(c.kd.divergence)},
        {"kd_weight", c.kd.kd_weight},
        {"ce_weight", c.kd.ce_weight},
        {"temperature", c.kd.temperature},
        {"chunk_tokens", c.kd.chunk_tokens}}},
      {"optim",
       {{"lr", c.optim.lr},
        {"beta1", c.optim.beta1},
        {"beta2", c.optim.beta2},
        {"eps", c.optim.eps},
        {"weight_decay", c.optim.weight_decay},
        {"decay_norms_and_biases", c.optim.decay_norms_and_biases},
        {"schedule", lr_schedule_name(c.optim.schedule)},
        {"warmup_steps", c.optim.warmup_steps},
        {"min_lr_ratio", c.optim.min_lr_ratio},
        {"grad_clip", c.optim.grad_clip},
        {"train_embeddings", c.optim.train_embeddings}}},
      {"train",
       {{"steps", c.train.steps},
        {"micro_batch", c.train.micro_batch},
        {"grad_accum", c.train.grad_accum},
        {"log_interval", c.train.log_interval},
        {"eval_interval", c.train.eval_interval},
        {"device", c.train.device},
        {"precision", precision_name(c.train.precision)},
        {"threads", c.train.threads},
        {"seed", c.train.seed}}},
      {"eval",
       {{"ppl", c.eval.ppl},
        {"mc", c.eval.mc},
        {"seq_len", c.eval.seq_len},
        {"batch_size", c.eval.batch_size},
        {"max_windows", c.eval.max_windows},
        {"mc_limit", c.eval.mc_limit},
        {"at_start", c.eval.at_start},
        {"baselines", c.eval.baselines}}},
      {"freeze", monitor::to_json(c.freeze)},
      {"monitor", monitor::to_json(c.monitor)},
      {"checkpoint",
       {{"interval", c.checkpoint.interval}, {"keep_last", c.checkpoint.keep_last}, {"resume", c.checkpoint.resume}}},
      {"export",
       {{"formats", exporting::format_names(c.export_.formats)},
        {"dtype", c.export_.dtype},
        {"gguf_type", c.export_.gguf_type}}}};
}

}  // namespace

RunConfig parse_run_config(const json& j) {
  FieldReader top(j, "");
  RunConfig c;
  c.run_dir = top.required_string("run_dir");
  c.label = top.string("label", "");
  if (!top.raw("teacher")) fail("teacher", "missing (required): the teacher checkpoint");
  c.teacher = read_model_section(j.at("teacher"), "teacher", false);
  if (!std::filesystem::is_directory(c.teacher.path))
    fail("teacher.path", "checkpoint directory not found: " + c.teacher.path);
  c.student = read_model_section(section(j, "student"), "student", true);
  top.raw("student");
  c.quant = quant::quant_spec_from_json(section(j, "quant").is_null() ? json::object() : j.at("quant"), "quant");
  top.raw("quant");
  if (!top.raw("data")) fail("data", "missing (required): at least one source");
  c.data = data::data_config_from_json(j.at("data"), "data");
  c.kd = read_kd(section(j, "kd"));
  top.raw("kd");
  c.optim = read_optim(section(j, "optim"));
  top.raw("optim");
  c.train = read_train(section(j, "train"));
  top.raw("train");
  c.eval = read_eval(section(j, "eval"));
  top.raw("eval");
  c.freeze = monitor::freeze_config_from_json(section(j, "freeze"), "freeze", &c.unread_settings);
  top.raw("freeze");
  c.monitor = monitor::monitor_config_from_json(section(j, "monitor"), "monitor");
  top.raw("monitor");
  if (c.freeze.policy == monitor::FreezeMode::automatic && !c.monitor.enabled)
    fail("freeze.policy", "\"auto\" needs the monitor (monitor.enabled true)");
  note_unread_eval_settings(section(j, "eval"), c, c.unread_settings);
  c.checkpoint = read_checkpoint(section(j, "checkpoint"));
  top.raw("checkpoint");
  c.export_ = read_export(section(j, "export"));
  top.raw("export");
  top.finish();
  if (c.student.path != "teacher" && !std::filesystem::is_directory(c.student.path))
    fail("student.init", "expected \"teacher\" or a student checkpoint directory, got \"" + c.student.path + "\"");
  c.resolved = resolved_json(c);
  return c;
}

void apply_override(json& j, const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) fail("--set " + assignment, "expected key.path=value");
  const auto key = assignment.substr(0, eq);
  const auto text = assignment.substr(eq + 1);
  json value = parse_json_or_discarded(text);
  if (value.is_discarded()) {
    if (!text.empty() && (text.front() == '[' || text.front() == '{'))
      fail("--set " + key, "bad JSON value (or nested deeper than " + std::to_string(kMaxJsonDepth) + " levels)");
    value = text;  // bare words are strings
  }
  json* node = &j;
  size_t start = 0;
  while (true) {
    const auto dot = key.find('.', start);
    const auto part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (part.empty()) fail("--set " + assignment, "empty key component");
    if (!node->is_object()) fail("--set " + assignment, "'" + key.substr(0, start) + "' is not an object");
    if (dot == std::string::npos) {
      (*node)[part] = value;
      return;
    }
    node = &(*node)[part];
    if (node->is_null()) *node = json::object();
    start = dot + 1;
  }
}

RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides) {
  if (!std::filesystem::exists(path)) fail(path, "config file not found");
  json j = read_json_file(path);
  for (const auto& o : overrides) apply_override(j, o);
  try {
    return parse_run_config(j);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
}

json model_identity(const RunConfig& c) {
  return {
      {"teacher", c.resolved.at("teacher")}, {"student", c.resolved.at("student")}, {"quant", c.resolved.at("quant")}};
}

}  // namespace qkd::train
