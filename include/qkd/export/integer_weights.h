#pragma once
// The integers a quantized student's projections hold, exactly as its forward pass uses them (the
// same rounding, clipping and learned LSQ scales), or for an fp4 format its 4-bit E2M1 codes with the
// decoded block scales and the per-tensor scale. Every export format starts here, so each carries the
// same numbers.
#include <torch/torch.h>

#include <functional>
#include <string>

#include "qkd/model/llama.h"
#include "qkd/quant/quant_spec.h"

namespace qkd::exporting {

struct IntegerWeight {
  std::string name;     // Hugging Face tensor name, "model.layers.0.self_attn.q_proj.weight"
  torch::Tensor codes;  // int16 [out, in], each in [qmin, qmax] (fp4: the E2M1 code 0..15, sign in bit 3)
  torch::Tensor scale;  // float32 [rows, blocks]: per channel [out, 1], per group [out, in / group], per tensor [1, 1]
  torch::Tensor zero;   // int32 like scale (the zero point in effect); undefined when symmetric
  quant::WeightFormat format = quant::WeightFormat::integer;
  torch::Tensor tensor_scale;  // fp4: float32 [] multiplier after the block scale (NVFP4 s_t, MXFP4 1)
  torch::Tensor global_scale;  // NVFP4: float32 [] g = 1 / s_t as compressed-tensors stores it; else undefined
  int64_t bits = 4;
  bool symmetric = true;
  quant::Granularity granularity = quant::Granularity::per_channel;
  int64_t qmin = -8, qmax = 7;

  int64_t out_features() const { return codes.size(0); }
  int64_t in_features() const { return codes.size(1); }
  // Columns of one row that share a scale: in_features per channel, group_size per group, and the
  // whole tensor (out * in) per tensor.
  int64_t block_length() const { return codes.numel() / scale.numel(); }
  bool fp4() const { return quant::is_fp4(format); }
  // float32 [out, in]: (codes - zero) * scale, or for fp4 (e2m1(codes) * scale) * tensor_scale, the
  // weight the student's forward pass multiplies with (bitwise, when it quantizes in fp32).
  torch::Tensor dequantize() const;
};

// One weight: `name` must be a quantized projection of `student`. Throws qkd::Error naming it otherwise.
IntegerWeight integer_weight(model::LlamaForCausalLMImpl& student, const std::string& name);

// Calls `visit` for every quantized projection in model order, one at a time, so that a 7B export
// holds one tensor's codes at once.
void for_each_integer_weight(model::LlamaForCausalLMImpl& student,
                             const std::function<void(const IntegerWeight&)>& visit);

// Names of the quantized weights ("....weight"), in model order.
std::vector<std::string> integer_weight_names(model::LlamaForCausalLMImpl& student);

}  // namespace qkd::exporting
