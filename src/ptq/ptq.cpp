#include "qkd/ptq/ptq.h"

#include <spdlog/spdlog.h>

#include <optional>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/checkpoint/hf_config.h"
#include "qkd/checkpoint/student_checkpoint.h"
#include "qkd/common/dtype_names.h"
#include "qkd/common/error.h"
#include "qkd/common/output_directory.h"
#include "qkd/common/json_io.h"
#include "qkd/data/data_stream.h"
#include "qkd/data/token_file.h"
#include "qkd/quant/student.h"
#include "qkd/tokenizer/tokenizer.h"

namespace qkd::ptq {

const EnumTable<PtqMethod>& ptq_methods() {
  static const EnumTable<PtqMethod> table{{PtqMethod::rtn, "rtn"}, {PtqMethod::gptq, "gptq"}};
  return table;
}

PtqMethod parse_ptq_method(const std::string& text, const std::string& where) {
  if (const auto method = ptq_methods().find(text)) return *method;
  fail(where, "expected rtn or gptq, got \"" + text + "\"");
}

namespace {

constexpr int64_t kDefaultFileWindow = 256;

// Consecutive windows from the start of the token file, as many as it holds up to `count`.
torch::Tensor file_windows(const PtqOptions& o, int64_t count) {
  const auto tokens = data::TokenFile::open(o.calib_file);
  const int64_t length = o.calib_seq_len > 0 ? o.calib_seq_len : kDefaultFileWindow;
  const int64_t available = std::min(count, tokens.size() / length);
  if (available < 1)
    fail(o.calib_file, "holds " + std::to_string(tokens.size()) + " tokens, fewer than one calibration window of " +
                           std::to_string(length));
  return tokens.slice(0, available * length).reshape({available, length});
}

data::DataConfig calibration_data(const PtqOptions& o) {
  const auto json = read_json_file(o.calib_config);
  if (!json.is_object() || !json.contains("data")) fail(o.calib_config, "missing field 'data'");
  data::DataConfig config;
  try {
    config = data::data_config_from_json(json.at("data"), "data");
  } catch (const Error& e) {
    fail(o.calib_config, e.what());
  }
  if (o.calib_seq_len > 0) config.seq_len = o.calib_seq_len;
  return config;
}

// The first `count` windows of the stream the config's data section describes (what training would
// see first, shuffled and mixed the same way).
torch::Tensor stream_windows(const PtqOptions& o, int64_t count) {
  const auto config = calibration_data(o);
  std::optional<tokenizer::Tokenizer> tokenizer;
  for (const auto& source : config.sources)
    if (!tokenizer && !data::is_token_file_format(data::resolve_source_format(source)))
      tokenizer.emplace(tokenizer::load_tokenizer_for_checkpoint(o.model_dir));
  data::DataStream stream(config, tokenizer ? &*tokenizer : nullptr);
  return stream.next_batch(count);
}

torch::Tensor calibration_windows(const PtqOptions& o, int64_t count, const std::string& why) {
  if (!o.calib_config.empty() && !o.calib_file.empty())
    fail("--calib-config", "give either --calib-config or --calib-file, not both");
  if (o.calib_config.empty() && o.calib_file.empty())
    fail("--calib-config", why + " needs calibration data: --calib-config RUN_CONFIG or --calib-file TOKENS");
  const auto windows = o.calib_config.empty() ? file_windows(o, count) : stream_windows(o, count);
  // An id past the embedding would fail deep in the forward as torch's "index out of range in self".
  const int64_t vocab = checkpoint::read_llama_config(o.model_dir + "/config.json").vocab_size;
  if (windows.numel() > 0 && (windows.min().item<int64_t>() < 0 || windows.max().item<int64_t>() >= vocab))
    fail(o.calib_config.empty() ? o.calib_file : o.calib_config,
         "calibration tokens up to " + std::to_string(windows.max().item<int64_t>()) +
             ", outside the model's vocabulary [0, " + std::to_string(vocab) + ")");
  return windows;
}

// One window per forward pass, as the ranges were always calibrated.
void calibrate_activations(model::LlamaForCausalLMImpl& model, const PtqOptions& o) {
  const auto windows = calibration_windows(
      o, o.spec.act_calib_batches, "activation quantization (act_bits " + std::to_string(o.spec.act_bits) + ")");
  quant::begin_activation_calibration(model);
  torch::NoGradGuard no_grad;
  for (int64_t i = 0; i < windows.size(0); ++i) model.forward(windows.slice(0, i, i + 1));
  quant::end_activation_calibration(model);
}

void check_options(const PtqOptions& o) {
  quant::validate(o.spec);
  if (o.calib_batches < 1) fail("--calib-batches", "expected >= 1, got " + std::to_string(o.calib_batches));
  if (o.calib_seq_len < 0 || o.calib_seq_len == 1)
    fail("--calib-seq-len", "expected >= 2 (or 0: the default), got " + std::to_string(o.calib_seq_len));
  if (!(o.gptq.damp >= 0)) fail("--damp", "expected >= 0, got " + std::to_string(o.gptq.damp));
  if (o.method == PtqMethod::gptq && quant::is_fp4(o.spec.format))
    fail("--method", "gptq solves for an integer grid; quant.format " + quant::weight_formats().name(o.spec.format) +
                         " is rounded to nearest (--method rtn)");
}

// GPTQ's scales are not those min-max would find on the quantized weights: the quantizer must keep
// them, so the written spec has static scales whatever was asked.
quant::QuantSpec written_spec(const PtqOptions& o) {
  auto spec = o.spec;
  if (o.method != PtqMethod::gptq || spec.scale_policy == quant::ScalePolicy::fixed) return spec;
  spec.scale_policy = quant::ScalePolicy::fixed;
  spdlog::info(
      "gptq: the student keeps GPTQ's scales (quant.scale_policy static); train from it with "
      "--set quant.scale_policy=static");
  return spec;
}

double mean_error(const std::vector<std::pair<std::string, double>>& errors) {
  double mean = 0.0;
  for (const auto& [_, e] : errors) mean += e / static_cast<double>(errors.size());
  return mean;
}

}  // namespace

PtqReport run_ptq(const PtqOptions& o) {
  check_options(o);
  // Before minutes of quantization: the output must be free to take, and apart from what is read.
  require_apart(o.out_dir, "--out", o.model_dir, "--model");
  if (o.formats.empty()) claim_output_directory(o.out_dir, "student");
  const auto spec = written_spec(o);
  auto model = checkpoint::load_llama(o.model_dir, {torch::kFloat32, torch::kCPU});
  const auto modules = quant::attach_quantizers(*model, spec);
  std::vector<std::pair<std::string, double>> errors;
  if (o.method == PtqMethod::gptq)
    errors = gptq_quantize_student(*model, calibration_windows(o, o.calib_batches, "--method gptq"), o.gptq);
  if (spec.act_bits > 0) calibrate_activations(*model, o);
  if (o.method == PtqMethod::rtn) errors = quant::weight_quantization_errors(*model);
  PtqReport report;
  report.quantized_modules = static_cast<int64_t>(modules.size());
  report.mean_relative_error = mean_error(errors);
  const auto dtype = parse_dtype(o.dtype, "--dtype");
  if (!o.formats.empty()) {
    exporting::ExportOptions options;
    options.dtype = dtype;
    options.gguf_type = o.gguf_type;
    exporting::export_student({*model, spec, o.model_dir}, o.formats, o.out_dir, options);
  } else {
    // The written weights are the quantized ones: the checkpoint loads in transformers as the PTQ
    // model, and re-quantizing them in our forward is the identity (GPTQ's already are).
    quant::rtn_quantize_weights(*model);
    checkpoint::save_student_checkpoint(*model, spec, o.out_dir, dtype, o.model_dir);
  }
  spdlog::info("ptq ({}): {} modules quantized to {} bits, mean relative weight error {:.4f}, written to {}",
               o.method == PtqMethod::gptq ? "gptq" : "rtn", report.quantized_modules, spec.bits,
               report.mean_relative_error, o.out_dir);
  return report;
}

}  // namespace qkd::ptq
