#pragma once
// Turning a LLaMA model into a KD-QAT student: fake-quantizers attached to selected projections, their
// state saved/loaded alongside the weights, PTQ materialization and per-module error reports.
//
// Module selection: each pattern of spec.modules is an ECMAScript regular expression searched
// (std::regex_search) in the Hugging Face module name, so a plain name like "q_proj" matches as a
// substring and "layers\.(0|1)\..*proj" selects layers. Only Linear modules can match; embeddings and
// norms stay float. lm_head is never matched by patterns: spec.lm_head_bits > 0 quantizes it (weights
// only) with those bits and otherwise the same settings.
#include <string>
#include <utility>
#include <vector>

#include "qkd/io/safetensors.h"
#include "qkd/model/llama.h"
#include "qkd/quant/quant_spec.h"

namespace qkd::quant {

// Attaches a weight quantizer (and, with spec.act_bits, an input quantizer) to every selected Linear;
// static scales are initialized from the current weights, so attach after loading them. Validates
// everything before attaching anything. Returns the quantized module names in model order.
// Throws qkd::Error naming the field: "quant.group_size: 48 does not divide in_features 256 of
// model.layers.0.mlp.down_proj", "quant.modules: no Linear module matches ...", "quant.lm_head_bits:
// ...tied..." and when the model already has quantizers.
std::vector<std::string> attach_quantizers(qkd::model::LlamaForCausalLMImpl& model, const QuantSpec& spec);

// Names of the modules that carry a weight quantizer.
std::vector<std::string> quantized_modules(qkd::model::LlamaForCausalLMImpl& model);

// Every quantizer parameter and buffer by its full name ("model.layers.0.self_attn.v_proj.
// weight_quantizer.scale", "...input_quantizer.range_max"), sharing storage with the model.
qkd::io::NamedTensors quantizer_state(qkd::model::LlamaForCausalLMImpl& model);

// Copies a saved state into the attached quantizers (tensors may also hold other, non-quantizer names,
// which are ignored). Throws qkd::Error("<name>: ...") for a missing, unexpected or misshapen tensor.
void load_quantizer_state(qkd::model::LlamaForCausalLMImpl& model, const qkd::io::NamedTensors& tensors);

// PTQ export: replaces each quantized weight by its fake-quantized value, in place (round to nearest
// on the quantizer's grid). The quantizers stay attached; q is idempotent on its own grid.
void rtn_quantize_weights(qkd::model::LlamaForCausalLMImpl& model);

// ||W - q(W)|| / ||W|| per quantized module (0 for an all-zero weight), in model order.
std::vector<std::pair<std::string, double>> weight_quantization_errors(qkd::model::LlamaForCausalLMImpl& model);

// Activation calibration: between begin and end, forward passes record each input quantizer's range.
// end throws qkd::Error when an input quantizer saw no batch. Both are no-ops without input quantizers.
void begin_activation_calibration(qkd::model::LlamaForCausalLMImpl& model);
void end_activation_calibration(qkd::model::LlamaForCausalLMImpl& model);

}  // namespace qkd::quant
