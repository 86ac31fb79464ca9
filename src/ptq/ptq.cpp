#include "qkd/ptq/ptq.h"
#include "qkd/common/dtype_names.h"

#include <spdlog/spdlog.h>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/checkpoint/student_checkpoint.h"
#include "qkd/common/error.h"
#include "qkd/data/token_file.h"
#include "qkd/quant/student.h"

namespace qkd::ptq {

namespace {
// Consecutive windows of the calibration file, act_calib_batches of them.
void calibrate_activations(model::LlamaForCausalLMImpl& model, const PtqOptions& o) {
  if (o.calib_file.empty())
    fail("--calib",
         "activation quantization (act_bits " + std::to_string(o.spec.act_bits) + ") needs a calibration token file");
  const auto tokens = data::TokenFile::open(o.calib_file);
  quant::begin_activation_calibration(model);
  torch::NoGradGuard no_grad;
  for (int64_t i = 0; i < o.spec.act_calib_batches; ++i) {
    const int64_t begin = i * o.calib_seq_len;
    if (begin + o.calib_seq_len > tokens.size()) break;
    model.forward(tokens.slice(begin, o.calib_seq_len).unsqueeze(0));
  }
  quant::end_activation_calibration(model);
}
}  // namespace

PtqReport run_ptq(const PtqOptions& o) {
  quant::validate(o.spec);
  auto model = checkpoint::load_llama(o.model_dir, {torch::kFloat32, torch::kCPU});
  const auto modules = quant::attach_quantizers(*model, o.spec);
  if (o.spec.act_bits > 0) calibrate_activations(*model, o);
  PtqReport report;
  report.quantized_modules = static_cast<int64_t>(modules.size());
  const auto errors = quant::weight_quantization_errors(*model);
  for (const auto& [_, e] : errors) report.mean_relative_error += e / static_cast<double>(errors.size());
  const auto dtype = parse_dtype(o.dtype, "--dtype");
  if (!o.formats.empty()) {
    exporting::ExportOptions options;
    options.dtype = dtype;
    options.gguf_type = o.gguf_type;
    exporting::export_student({*model, o.spec, o.model_dir}, o.formats, o.out_dir, options);
  } else {
    // The written weights are the rounded ones: the checkpoint loads in transformers as the PTQ model,
    // and re-quantizing them in our forward is the identity.
    quant::rtn_quantize_weights(*model);
    checkpoint::save_student_checkpoint(*model, o.spec, o.out_dir, dtype, o.model_dir);
  }
  spdlog::info("ptq: {} modules quantized to {} bits, mean relative weight error {:.4f}, written to {}",
               report.quantized_modules, o.spec.bits, report.mean_relative_error, o.out_dir);
  return report;
}

}  // namespace qkd::ptq
