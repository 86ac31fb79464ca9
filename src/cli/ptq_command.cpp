#include <fstream>

#include "cli/commands.h"
#include "qkd/common/error.h"
#include "qkd/common/json_io.h"
#include "qkd/ptq/ptq.h"

namespace qkd::cli {

namespace {
struct PtqCliOptions {
  ptq::PtqOptions ptq;
  std::string method = "rtn";
  std::string quant_json;
  nlohmann::json flags = nlohmann::json::object();  // quant fields given on the command line
};

// The quant section: a JSON file's "quant" object (or the whole object), then command-line flags on top.
quant::QuantSpec resolve_spec(const PtqCliOptions& o) {
  nlohmann::json section = nlohmann::json::object();
  if (!o.quant_json.empty()) {
    const auto j = read_json_file(o.quant_json);
    if (!j.is_object()) fail(o.quant_json, "not a JSON object");
    section = j.contains("quant") ? j.at("quant") : j;
  }
  for (const auto& [key, value] : o.flags.items()) section[key] = value;
  return quant::quant_spec_from_json(section, "quant");
}
}  // namespace

void add_ptq_command(CLI::App& app) {
  auto o = std::make_shared<PtqCliOptions>();
  auto* cmd =
      app.add_subcommand("ptq", "Post-training quantization (round to nearest or GPTQ) into a student checkpoint");
  cmd->add_option("--model", o->ptq.model_dir, "Hugging Face checkpoint directory")->required();
  cmd->add_option("--out", o->ptq.out_dir, "student checkpoint directory to write")->required();
  cmd->add_option("--quant-json", o->quant_json, "JSON file with a quant section (flags below override it)");
  cmd->add_option_function<std::string>(
      "--quant-format", [o](const std::string& v) { o->flags["format"] = v; },
      "weight grid: int (the default), nvfp4 or mxfp4 (4-bit float; fixes bits, group and scale encoding)");
  cmd->add_option_function<int64_t>(
      "--bits", [o](int64_t v) { o->flags["bits"] = v; }, "weight bits, 2..8");
  cmd->add_option_function<std::string>(
      "--granularity", [o](const std::string& v) { o->flags["granularity"] = v; },
      "per_channel, per_group or per_tensor");
  cmd->add_option_function<int64_t>(
      "--group-size", [o](int64_t v) { o->flags["group_size"] = v; }, "per_group: columns per group");
  cmd->add_flag_function(
      "--asymmetric", [o](int64_t) { o->flags["symmetric"] = false; }, "levels 0..2^b-1 with a zero point");
  cmd->add_option_function<std::string>(
      "--range", [o](const std::string& v) { o->flags["range"] = v; },
      "minmax or search (clipping ratio minimizing squared error)");
  cmd->add_option_function<int64_t>(
      "--lm-head-bits", [o](int64_t v) { o->flags["lm_head_bits"] = v; }, "quantize lm_head too (0: float)");
  cmd->add_option_function<int64_t>(
      "--act-bits", [o](int64_t v) { o->flags["act_bits"] = v; }, "input fake-quantization bits (0, 8 or 16)");
  cmd->add_option("--method", o->method, "rtn (round to nearest, the default) or gptq");
  cmd->add_option("--calib,--calib-file", o->ptq.calib_file,
                  "token file: consecutive calibration windows (GPTQ, activation ranges)");
  cmd->add_option("--calib-config", o->ptq.calib_config,
                  "run config whose data section streams the calibration windows (GPTQ, activation ranges)");
  cmd->add_option("--calib-batches", o->ptq.calib_batches, "GPTQ: calibration windows (default 128)");
  cmd->add_option("--calib-seq-len", o->ptq.calib_seq_len,
                  "tokens per calibration window (default: the config's data.seq_len, or 256 for --calib-file)");
  cmd->add_option("--damp", o->ptq.gptq.damp, "GPTQ: fraction of mean(diag H) added to its diagonal (default 0.01)");
  cmd->add_flag("--act-order", o->ptq.gptq.act_order, "GPTQ: quantize columns by descending diag H");
  cmd->add_option("--dtype", o->ptq.dtype, "dtype of the written weights");
  cmd->add_option_function<std::string>(
      "--format", [o](const std::string& v) { o->ptq.formats = exporting::parse_format_list(v, "--format"); },
      "export formats (hf, packed, encodings, gguf) into <out>/<format> instead of a student checkpoint");
  cmd->add_option_function<std::string>(
      "--gguf-type", [o](const std::string& v) { o->ptq.gguf_type = exporting::gguf_types().parse(v, "--gguf-type"); },
      "gguf projections: auto (the student's own), q4_0, q8_0, mxfp4, nvfp4, or f16 / f32 (dequantized)");
  cmd->callback([o] {
    o->ptq.method = ptq::parse_ptq_method(o->method, "--method");
    o->ptq.spec = resolve_spec(*o);
    ptq::run_ptq(o->ptq);
  });
}

}  // namespace qkd::cli
