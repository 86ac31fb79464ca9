#pragma once
// GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
// Transformers"), as the reference implementation computes it, on this project's quantizer grids.
//
// One layer: W [out, in] and H = 2 X Xᵀ / n over its n calibration inputs. Columns are quantized left
// to right; the rounding error of each is spread over the columns not yet quantized by the inverse
// Hessian (the optimal brain surgeon update), within blocks of `block_size` columns and lazily between
// blocks. Conventions, and where they differ from the reference:
//  - damping H += damp * mean(diag H) * I; dead inputs (diag H == 0) get H[d, d] = 1 and W[:, d] = 0.
//  - per channel and per tensor: scales from the whole original W before any update (the reference).
//  - per group without act_order: the scale of a group is set when its first column is reached, from
//    the group's current weights including every update so far (the reference reads the block-local
//    updates only when the group starts at a block boundary; here the block size is shrunk to a
//    multiple of the group size so that it always does).
//  - act_order: columns in order of descending diag H. With groups, the reference's static_groups:
//    every group's scale is set up front from W (after dead inputs are zeroed), so groups stay
//    contiguous input columns, the layout the student's quantizer and every export format store.
//  - scales come from the spec's range method (min-max, or the clipping search) computed exactly as
//    quant::WeightQuantizer computes static scales (fp32), and each column is rounded by
//    quant::fake_quant_value in fp32, so that the static quantizer holding these scales maps Q to
//    itself bitwise. The error feedback runs in fp64.
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "qkd/common/enum_table.h"
#include "qkd/model/llama.h"
#include "qkd/quant/quant_spec.h"

namespace qkd::ptq {

// What a student's latent weights become (its forward computes the GPTQ model either way):
//  - quantized: Q itself, so the checkpoint also loads as a plain model of the PTQ weights;
//  - compensated: the value each weight had when GPTQ rounded it (the weight plus the error feedback of
//    the columns before it), pulled just inside its block's levels. Rounding it gives Q again, but for
//    training the latent weights keep their place inside the rounding bins, as the teacher's weights
//    do under round to nearest, instead of all sitting at bin centres half a step from any change.
enum class GptqLatent { quantized, compensated };
const EnumTable<GptqLatent>& gptq_latents();  // "quantized" | "compensated"

struct GptqOptions {
  double damp = 0.01;                         // fraction of mean(diag H) added to the diagonal (percdamp)
  int64_t block_size = 128;                   // columns per lazy batch update; changes speed, not the result
  bool act_order = false;                     // quantize columns by descending diag H
  GptqLatent latent = GptqLatent::quantized;  // gptq_quantize_student only
};

struct GptqLayerResult {
  torch::Tensor q;        // [out, in] fp32: every row of every block on the grid of `scale`/`zero`
  torch::Tensor scale;    // fp32 [rows, blocks_per_row, 1], the layout of quant::WeightQuantizer's state
  torch::Tensor zero;     // like scale, integer-valued; undefined when symmetric
  torch::Tensor rounded;  // [out, in] fp32: the value each weight had when it was rounded to q
};

// `rounded` clamped to [(qmin - zero + 0.01) * scale, (qmax - zero - 0.01) * scale] per block: it
// fake-quantizes to `q` bitwise, and the straight-through estimator passes gradient to all of it.
torch::Tensor gptq_compensated_latent(const GptqLayerResult& result, const quant::QuantSpec& spec);

// The solver of one layer: a pure function of W [out, in], H [in, in] and the grid of `spec` (bits,
// granularity, group_size, symmetric, range). Throws qkd::Error ("gptq: ...") for mismatched shapes
// and for an H that is not positive definite after damping.
GptqLayerResult gptq_quantize_weight(const torch::Tensor& w, const torch::Tensor& h, const quant::QuantSpec& spec,
                                     const GptqOptions& options = {});

// 2 X Xᵀ / n for inputs x [..., in] (every leading index one sample), fp32.
torch::Tensor gptq_hessian(const torch::Tensor& x);

// Sequential GPTQ of a student whose weight quantizers use static scales (quant.scale_policy static)
// and whose weights are still the float teacher's: decoder layer after decoder layer, the inputs of
// each projection are collected from `windows` [N, L] (token ids) run through the layers before it,
// already quantized; every quantized weight becomes its GPTQ quantization (or, options.latent
// compensated, the value that rounds to it) and its quantizer's scale (and zero point) GPTQ's, so the
// student's forward computes exactly the GPTQ model. lm_head, when
// quantized, goes last on the final-normed hidden states. Runs on the CPU in fp32; returns
// ||W - Q|| / ||W|| per quantized module in model order.
std::vector<std::pair<std::string, double>> gptq_quantize_student(model::LlamaForCausalLMImpl& student,
                                                                  const torch::Tensor& windows,
                                                                  const GptqOptions& options = {});

}  // namespace qkd::ptq
