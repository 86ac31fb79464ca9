#include "qkd/train/run_config.h"

#include <filesystem>

#include "qkd/common/error.h"
#include "qkd/common/json_fields.h"
#include "qkd/common/json_io.h"
#include "qkd/loss/topk_kd_loss.h"

namespace qkd::train {

namespace {
using nlohmann::json;
namespace fs = std::filesystem;
}  // namespace

void TeacherSection::check(const std::string& where) const {
  if (!fs::is_directory(path)) fail(where + ".path", "checkpoint directory not found: " + path);
}

StudentInit StudentInit::parse(const json& value, const std::string& where) {
  if (!value.is_string())
    fail(where, "expected \"teacher\", \"gptq\" or a checkpoint directory, got " + json_excerpt(value));
  const auto text = value.get<std::string>();
  if (text == "teacher") return {};
  if (text == "gptq") return StudentInit{Kind::gptq, ""};
  if (!fs::is_directory(text))
    fail(where, "expected \"teacher\", \"gptq\" or a student checkpoint directory, got \"" + text + "\"");
  return StudentInit{Kind::checkpoint, text};
}

json StudentInit::to_json() const {
  switch (kind) {
    case Kind::teacher: return "teacher";
    case Kind::gptq: return "gptq";
    case Kind::checkpoint: return path;
  }
  return nullptr;
}

void ComputeSection::check(const std::string& where) const {
  if (device != "cpu" && device.rfind("cuda", 0) != 0)
    fail(where + ".device", "expected cpu, cuda or cuda:N, got \"" + device + "\"");
}

const EnumTable<CpuParallelism>& cpu_parallelisms() {
  static const EnumTable<CpuParallelism> table{{CpuParallelism::rows, "rows"},
                                               {CpuParallelism::operators, "operators"}};
  return table;
}

namespace {

json section(const json& j, const char* key) { return j.contains(key) ? j.at(key) : json(nullptr); }

// Evaluation settings that evaluate nothing without an eval file.
void note_unread_eval_settings(const json& eval, const RunConfig& c, std::vector<std::string>& unread) {
  if (c.eval().evaluates_anything()) return;
  if (c.train().eval_interval > 0) unread.push_back("train.eval_interval: no eval.ppl or eval.mc file to evaluate");
  if (eval.is_object())
    for (const char* key : {"at_start", "baselines", "max_windows", "mc_limit", "seq_len", "batch_size"})
      if (eval.contains(key))
        unread.push_back(std::string("eval.") + key + ": no eval.ppl or eval.mc file to evaluate");
}

// Settings that only mean something on a GPU, or with another setting.
void note_unread_train_settings(const json& train, const RunConfig& c, std::vector<std::string>& unread) {
  const auto& compute = c.compute();
  if (compute.precision != Precision::fp32 && compute.device == "cpu")
    unread.push_back("train.precision: autocast runs on CUDA only; on cpu the student computes in student.dtype (" +
                     dtype_name(c.student().dtype) + ")" +
                     (compute.precision == Precision::fp16 ? " and only the loss scaling applies" : ""));
  if (compute.precision != Precision::fp16 && train.is_object())
    for (const char* key : {"loss_scale", "loss_scale_growth_interval"})
      if (train.contains(key)) unread.push_back(std::string("train.") + key + ": only read with train.precision fp16");
}

constexpr const char* kGptqKeys[] = {"gptq_calib_batches", "gptq_calib_seq_len", "gptq_damp", "gptq_act_order",
                                     "gptq_latent"};

void note_unread_student_settings(const json& student, const RunConfig& c, std::vector<std::string>& unread) {
  if (c.student().init.kind == StudentInit::Kind::gptq || !student.is_object()) return;
  for (const char* key : kGptqKeys)
    if (student.contains(key)) unread.push_back(std::string("student.") + key + ": only read with student.init gptq");
}

// A dynamic quantizer recomputes min-max scales from the weights at every forward, which would replace
// the scales GPTQ chose (and with them its integer codes).
void check_student_init(const RunConfig& c) {
  if (c.student().init.kind == StudentInit::Kind::gptq && c.quant().scale_policy != quant::ScalePolicy::fixed)
    fail("student.init", "\"gptq\" needs quant.scale_policy \"static\" (the quantizer keeps GPTQ's scales)");
}

// Where a bf16/fp16 student keeps its exact weights only means something for such a student, and the
// bf16 compensation only for a bf16 one (it adds to the bf16 weights).
void check_master_weights(const json& optim, const RunConfig& c, std::vector<std::string>& unread) {
  const auto mode = c.optim().master_weights;
  const auto dtype = c.student().dtype;
  if (mode == optim::MasterWeights::bf16_compensated && dtype != torch::kBFloat16)
    fail("optim.master_weights", "\"bf16_compensated\" needs student.dtype bfloat16, got " + dtype_name(dtype));
  if (dtype != torch::kBFloat16 && dtype != torch::kFloat16 && optim.is_object() && optim.contains("master_weights"))
    unread.push_back("optim.master_weights: the student is " + dtype_name(dtype) + ", which trains without a master");
}

// Sections are read in the order of the file's documentation; each reader rejects unknown keys of
// its own section, and the top-level reader those of the file.
json resolved_json(const RunConfig& c) {
  return {{"run_dir", c.run_dir()},
          {"label", c.label()},
          {"teacher", write_section(c.teacher())},
          {"student", write_section(c.student())},
          {"quant", quant::quant_spec_to_json(c.quant())},
          {"data", data::data_config_to_json(c.data())},
          {"kd", write_section(c.kd())},
          {"optim", write_section(c.optim())},
          {"train", write_section(c.train())},
          {"eval", write_section(c.eval())},
          {"freeze", freeze::to_json(c.freeze())},
          {"monitor", monitor::to_json(c.monitor())},
          {"checkpoint", write_section(c.checkpoint())},
          {"export", write_section(c.export_config())},
          {"dist", write_section(c.distributed())}};
}

}  // namespace

RunConfig parse_run_config(const json& j) {
  FieldReader top(j, "", FieldReader::Null::refused);
  RunConfig c;
  c.run_dir_ = top.required_string("run_dir");
  c.label_ = top.string("label", "");
  if (!top.raw("teacher")) fail("teacher", "missing (required): the teacher checkpoint");
  c.teacher_ = read_section<TeacherSection>(j.at("teacher"), "teacher");
  c.student_ = read_section<StudentSection>(section(j, "student"), "student");
  top.raw("student");
  c.quant_ = quant::quant_spec_from_json(section(j, "quant").is_null() ? json::object() : j.at("quant"), "quant");
  top.raw("quant");
  check_student_init(c);
  note_unread_student_settings(section(j, "student"), c, c.unread_settings_);
  if (!top.raw("data")) fail("data", "missing (required): at least one source");
  c.data_ = data::data_config_from_json(j.at("data"), "data");
  c.kd_ = read_section<loss::KdLossOptions>(section(j, "kd"), "kd");
  c.data_.need_response_spans = c.kd_.ce_on == loss::CeTargets::responses;
  loss::check_teacher_source(c.kd_, "kd");
  if (c.kd_.teacher == loss::TeacherSource::online && !c.kd_.teacher_cache.empty())
    c.unread_settings_.push_back("kd.teacher_cache: only read with kd.teacher cache");
  top.raw("kd");
  c.optim_ = read_section<optim::OptimConfig>(section(j, "optim"), "optim");
  check_master_weights(section(j, "optim"), c, c.unread_settings_);
  top.raw("optim");
  c.train_ = read_section<TrainSection>(section(j, "train"), "train");
  top.raw("train");
  c.eval_ = read_section<eval::EvalConfig>(section(j, "eval"), "eval");
  top.raw("eval");
  c.freeze_ = freeze::freeze_config_from_json(section(j, "freeze"), "freeze", &c.unread_settings_);
  top.raw("freeze");
  c.monitor_ = monitor::monitor_config_from_json(section(j, "monitor"), "monitor");
  top.raw("monitor");
  freeze::check_monitor_for(c.freeze_, c.monitor_);
  note_unread_eval_settings(section(j, "eval"), c, c.unread_settings_);
  note_unread_train_settings(section(j, "train"), c, c.unread_settings_);
  c.checkpoint_ = read_section<CheckpointSection>(section(j, "checkpoint"), "checkpoint");
  top.raw("checkpoint");
  c.export_ = read_section<exporting::ExportConfig>(section(j, "export"), "export");
  top.raw("export");
  c.distributed_ = read_section<distributed::DistributedConfig>(section(j, "dist"), "dist");
  top.raw("dist");
  top.finish();
  c.resolved_ = resolved_json(c);
  return c;
}

void apply_override(json& j, const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) fail("--set " + printable(assignment, 120), "expected key.path=value");
  const auto key = assignment.substr(0, eq);
  const auto text = assignment.substr(eq + 1);
  json value = parse_json_or_discarded(text);
  if (value.is_discarded()) {
    if (!text.empty() && (text.front() == '[' || text.front() == '{'))
      fail("--set " + printable(key, 120), "bad JSON value (or nested deeper than " + std::to_string(kMaxJsonDepth) + " levels)");
    value = text;  // bare words are strings
  }
  json* node = &j;
  size_t start = 0;
  while (true) {
    const auto dot = key.find('.', start);
    const auto part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (part.empty()) fail("--set " + printable(assignment, 120), "empty key component");
    if (!node->is_object()) fail("--set " + printable(assignment, 120), "'" + printable(key.substr(0, start), 120) + "' is not an object");
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
  if (!fs::exists(path)) fail(path, "config file not found");
  json j = read_json_file(path);
  for (const auto& o : overrides) apply_override(j, o);
  try {
    return parse_run_config(j);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
}

json model_identity(const RunConfig& c) {
  auto student = c.resolved().at("student");
  // Only a gptq start depends on them; checkpoints from before they existed stay resumable.
  if (c.student().init.kind != StudentInit::Kind::gptq)
    for (const char* key : kGptqKeys) student.erase(key);
  return {{"teacher", c.resolved().at("teacher")}, {"student", student}, {"quant", c.resolved().at("quant")}};
}

}  // namespace qkd::train
