#pragma once
// Fake-quantizer for the weight W [out_features, in_features] of one Linear layer.
//  - dynamic: scale (and zero point) recomputed from the current weight at every forward, in the
//    weight's dtype, without gradient; straight-through gradient to W (identity for min-max, masked
//    outside the levels for a searched, i.e. clipped, range).
//  - static: scale (and zero point) fixed by initialize() and stored in fp32 as "scale"/"zero_point"
//    of shape [rows, blocks_per_row, 1] (see range_setting.h); buffers when frozen, parameters with
//    the LSQ gradient when learnable. The weight is quantized in fp32 and cast back to its dtype;
//    its gradient is masked where w / scale falls outside the levels.
//  - fp4 formats (spec.format nvfp4 / mxfp4, always dynamic): blocks of the format's size with the
//    format's scale encodings, in fp32 (fp4_grid.h); straight-through gradient (masked where a value
//    saturated, under range search). The projection is the plain composition linear(x, q(W), b).
#include <torch/torch.h>

#include <string>

#include "qkd/model/linear.h"
#include "qkd/quant/fp4_grid.h"
#include "qkd/quant/quant_spec.h"
#include "qkd/quant/quantized_linear.h"
#include "qkd/quant/range_setting.h"

namespace qkd::quant {

class WeightQuantizer : public qkd::model::TensorQuantizer {
 public:
  // `module` (the HF module name) only serves error messages. Throws qkd::Error naming
  // "quant.group_size" when group_size does not divide in_features.
  WeightQuantizer(const QuantSpec& spec, int64_t out_features, int64_t in_features, std::string module);

  torch::Tensor fake_quantize(const torch::Tensor& w) override;

  // The projection through quantized_linear: unless the scale is learned, the backward pass recomputes
  // the fake-quantized weight instead of keeping it (see quantized_linear.h).
  torch::Tensor linear(const torch::Tensor& input, const torch::Tensor& weight, const torch::Tensor& bias) override;

  // How fake_quantize(w) quantizes `w` (static: the stored parameters; dynamic: computed from w now).
  WeightQuantRecipe recipe(const torch::Tensor& w);

  // Static policy: sets scale (and zero point) from `w` by the spec's range method. Dynamic: no-op.
  void initialize(const torch::Tensor& w);

  // Called after a saved state was copied into "scale"/"zero_point" instead of initialize().
  void on_state_loaded() { initialized_ = true; }
  bool initialized() const { return initialized_; }

  // The scale and zero point `w` is quantized with, in block shape (static: the stored ones).
  QuantParams params_for(const torch::Tensor& w);

  // The integer levels fake_quantize(w) multiplies back, with the parameters it used, computed by the
  // same operations in the same dtype: fake_quantize(w) == ((codes - zero) * scale) in that dtype.
  struct IntegerCodes {
    torch::Tensor codes;  // int16, block shape [rows, blocks_per_row, block_len], in [qmin, qmax]
    torch::Tensor scale;  // [rows, blocks_per_row, 1], in the dtype the forward pass quantizes in
    torch::Tensor zero;   // integer-valued, like scale; undefined when symmetric
  };
  IntegerCodes integer_codes(const torch::Tensor& w);
  Levels levels() const { return levels_; }

  // fp4 formats: the 4-bit E2M1 codes fake_quantize(w) decodes, with its scales:
  // fake_quantize(w) == fp4::dequantize(fp4::e2m1_values(codes), block, tensor) in fp32, bitwise.
  struct Fp4Codes {
    torch::Tensor codes;  // int16 [rows, blocks, group], 0..15 (sign bit 3)
    fp4::Fp4Scales scales;
  };
  Fp4Codes fp4_codes(const torch::Tensor& w);

  // Quantizer state stays fp32 when the model changes dtype; devices are followed.
  using torch::nn::Module::to;
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;

  const QuantSpec& spec() const { return spec_; }
  const std::string& module_name() const { return module_; }

 private:
  torch::Tensor to_blocks(const torch::Tensor& w) const;
  torch::Tensor fp4_fake_quantize(const torch::Tensor& w);
  fp4::Fp4Scales fp4_scales_for(const torch::Tensor& blocks) const;
  void check_shape(const torch::Tensor& w) const;
  double lsq_grad_factor() const;

  QuantSpec spec_;
  int64_t out_features_;
  int64_t in_features_;
  std::string module_;
  Levels levels_;
  torch::Tensor scale_;       // static only
  torch::Tensor zero_point_;  // static asymmetric only
  bool initialized_ = false;
};

}  // namespace qkd::quant
