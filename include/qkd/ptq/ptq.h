#pragma once
// Post-training quantization: the teacher's projections rounded to the quantizer grid (min-max or
// clipping search), activation ranges calibrated on token windows, written as a student checkpoint.
#include <string>

#include "qkd/export/export.h"
#include "qkd/quant/quant_spec.h"

namespace qkd::ptq {

struct PtqOptions {
  std::string model_dir;  // Hugging Face checkpoint to quantize
  std::string out_dir;    // student checkpoint to write
  quant::QuantSpec spec;
  std::string calib_file;  // .u16/.u32 tokens for activation calibration (needed when spec.act_bits > 0)
  int64_t calib_seq_len = 256;
  std::string dtype = "float32";  // dtype of the written weights
  // Empty: a student checkpoint at out_dir (eval --student, export --checkpoint and student.init read
  // it). Otherwise these formats at out_dir/<format>, as `qkd-train export` writes them.
  std::vector<exporting::Format> formats;
  std::string gguf_type = "q4_0";
};

struct PtqReport {
  int64_t quantized_modules = 0;
  double mean_relative_error = 0.0;  // mean ||W - q(W)|| / ||W|| over quantized modules
};

PtqReport run_ptq(const PtqOptions& options);

}  // namespace qkd::ptq
