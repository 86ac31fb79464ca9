#pragma once
// Post-training quantization: the teacher's projections rounded to the quantizer grid (round to
// nearest with min-max or clipping search, or GPTQ), activation ranges calibrated on token windows,
// written as a student checkpoint.
#include <string>

#include "qkd/common/enum_table.h"
#include "qkd/export/export.h"
#include "qkd/ptq/gptq.h"
#include "qkd/quant/quant_spec.h"

namespace qkd::ptq {

enum class PtqMethod { rtn, gptq };
const EnumTable<PtqMethod>& ptq_methods();  // "rtn" | "gptq"

// "rtn" or "gptq"; anything else throws qkd::Error("<where>: expected rtn or gptq, got \"...\"").
PtqMethod parse_ptq_method(const std::string& text, const std::string& where);

struct PtqOptions {
  std::string model_dir;  // Hugging Face checkpoint to quantize
  std::string out_dir;    // student checkpoint to write
  quant::QuantSpec spec;  // gptq writes it with scale_policy static (the quantizer keeps GPTQ's scales)
  PtqMethod method = PtqMethod::rtn;
  // Calibration windows (GPTQ, and activation ranges when spec.act_bits > 0), from one of:
  std::string calib_file;       // .u16/.u32 tokens: consecutive windows from its start
  std::string calib_config;     // a run config: windows of its data section's stream, from its start
  int64_t calib_batches = 128;  // GPTQ: windows (one sequence each)
  int64_t calib_seq_len = 0;    // tokens per window; 0: the data section's seq_len, or 256 for calib_file
  GptqOptions gptq;
  std::string dtype = "float32";  // dtype of the written weights
  // Empty: a student checkpoint at out_dir (eval --student, export --checkpoint and student.init read
  // it). Otherwise these formats at out_dir/<format>, as `qkd-train export` writes them.
  std::vector<exporting::Format> formats;
  exporting::GgufType gguf_type = exporting::GgufType::automatic;
};

struct PtqReport {
  int64_t quantized_modules = 0;
  double mean_relative_error = 0.0;  // mean ||W - Q|| / ||W|| over quantized modules
};

PtqReport run_ptq(const PtqOptions& options);

}  // namespace qkd::ptq
