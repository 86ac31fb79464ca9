#pragma once
// compressed-tensors' fp4 checkpoints, as vllm-project/compressed-tensors writes them
// (compressors/nvfp4, compressors/mxfp4, quantization/quant_scheme.py NVFP4A16 / MXFP4A16) and vLLM
// loads them (CompressedTensorsW4A16Fp4, CompressedTensorsW4A16Mxfp4):
//  - "nvfp4-pack-quantized": weights {num_bits 4, type float, strategy tensor_group, group_size 16};
//    P.weight_packed uint8 [out, in / 2], P.weight_scale float8_e4m3fn [out, in / 16] and
//    P.weight_global_scale float32 [1], the g whose inverse vLLM and llama.cpp multiply by.
//  - "mxfp4-pack-quantized": weights {num_bits 4, type float, strategy group, group_size 32};
//    P.weight_packed uint8 [out, in / 2], P.weight_scale uint8 [out, in / 32] holding E8M0 exponents.
// pack_fp4_to_uint8 puts two consecutive codes in a byte, the first in the low nibble. Private to the
// export area: the pack-quantized writer and reader call it for fp4 students and checkpoints.
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <map>
#include <string>

#include "qkd/export/integer_weights.h"
#include "qkd/io/safetensors.h"
#include "qkd/quant/quant_spec.h"

namespace qkd::exporting::packed_fp4 {

// "nvfp4-pack-quantized" | "mxfp4-pack-quantized".
std::string format_name(quant::WeightFormat format);
bool is_fp4_format_name(const std::string& name);

// The config group's "weights" QuantizationArgs for `spec` (an fp4 format).
nlohmann::json weight_args(const quant::QuantSpec& spec);

// Appends P.weight_packed, P.weight_scale (and NVFP4's P.weight_global_scale) for one projection;
// tensors stored in a dtype LibTorch lacks (F8_E4M3, from their bytes) are named in `stored_as`.
void append_fp4(const IntegerWeight& w, const std::string& module, io::NamedTensors& out,
                std::map<std::string, io::DType>& stored_as);

// The fp4 format of a group's float "weights" (nvfp4: tensor_group of 16; mxfp4: group of 32);
// fails naming `where` for any other float scheme.
quant::WeightFormat parse_fp4_scheme(const nlohmann::json& weights, const std::string& where);

// The fp32 weight [out, in] of `module`: (e2m1(code) * block scale) * (1 / weight_global_scale) for
// NVFP4, as vLLM's Marlin kernel and llama.cpp multiply; e2m1(code) * 2^(e - 127) for MXFP4.
torch::Tensor dequantize_fp4(const std::string& module, quant::WeightFormat format,
                             const std::map<std::string, torch::Tensor>& tensors, const std::string& source);

}  // namespace qkd::exporting::packed_fp4
