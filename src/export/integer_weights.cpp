#include "qkd/export/integer_weights.h"

#include "qkd/common/error.h"
#include "qkd/quant/fp4_grid.h"
#include "qkd/quant/weight_quantizer.h"

namespace qkd::exporting {

namespace {

std::shared_ptr<quant::WeightQuantizer> quantizer_of(const model::Linear& linear) {
  return std::dynamic_pointer_cast<quant::WeightQuantizer>(linear->weight_quantizer());
}

// The E2M1 codes and decoded scales of an fp4 projection.
IntegerWeight fp4_weight_of(const std::string& module, const model::Linear& linear, quant::WeightQuantizer& quantizer) {
  auto codes = quantizer.fp4_codes(linear->weight);
  IntegerWeight out;
  out.name = module + ".weight";
  out.format = quantizer.spec().format;
  out.codes = codes.codes.reshape({linear->out_features(), linear->in_features()}).cpu();
  const auto& block = codes.scales.block;
  out.scale = block.reshape({block.size(0), block.size(1)}).to(torch::kCPU, torch::kFloat).contiguous();
  out.tensor_scale = codes.scales.tensor.to(torch::kCPU, torch::kFloat);
  if (codes.scales.global.defined()) out.global_scale = codes.scales.global.to(torch::kCPU, torch::kFloat);
  out.bits = 4;
  out.symmetric = true;
  out.granularity = quant::Granularity::per_group;
  out.qmin = 0;
  out.qmax = 15;
  return out;
}

IntegerWeight integer_weight_of(const std::string& module, const model::Linear& linear) {
  auto quantizer = quantizer_of(linear);
  if (quant::is_fp4(quantizer->spec().format)) return fp4_weight_of(module, linear, *quantizer);
  const auto codes = quantizer->integer_codes(linear->weight);
  const auto& spec = quantizer->spec();
  IntegerWeight out;
  out.name = module + ".weight";
  out.codes = codes.codes.reshape({linear->out_features(), linear->in_features()}).cpu();
  const auto rows = codes.scale.size(0), blocks = codes.scale.size(1);
  out.scale = codes.scale.reshape({rows, blocks}).to(torch::kCPU, torch::kFloat).contiguous();
  if (codes.zero.defined()) out.zero = codes.zero.reshape({rows, blocks}).to(torch::kCPU, torch::kInt).contiguous();
  out.bits = spec.bits;
  out.symmetric = spec.symmetric;
  out.granularity = spec.granularity;
  out.qmin = quantizer->levels().qmin;
  out.qmax = quantizer->levels().qmax;
  return out;
}

}  // namespace

torch::Tensor IntegerWeight::dequantize() const {
  if (fp4()) {
    const auto e2m1 = quant::fp4::e2m1_values(codes).reshape({scale.size(0), scale.size(1), -1});
    return quant::fp4::dequantize(e2m1, scale.unsqueeze(-1), tensor_scale).reshape(codes.sizes());
  }
  auto levels = codes.to(torch::kFloat).reshape({scale.size(0), scale.size(1), -1});
  if (zero.defined()) levels = levels - zero.to(torch::kFloat).unsqueeze(-1);
  return (levels * scale.unsqueeze(-1)).reshape(codes.sizes());
}

IntegerWeight integer_weight(model::LlamaForCausalLMImpl& student, const std::string& name) {
  for (auto& [module, linear] : student.named_linears())
    if (module + ".weight" == name && quantizer_of(linear)) return integer_weight_of(module, linear);
  fail(name, "not a quantized projection of the student");
}

void for_each_integer_weight(model::LlamaForCausalLMImpl& student,
                             const std::function<void(const IntegerWeight&)>& visit) {
  for (auto& [module, linear] : student.named_linears())
    if (quantizer_of(linear)) visit(integer_weight_of(module, linear));
}

std::vector<std::string> integer_weight_names(model::LlamaForCausalLMImpl& student) {
  std::vector<std::string> names;
  for (auto& [module, linear] : student.named_linears())
    if (quantizer_of(linear)) names.push_back(module + ".weight");
  return names;
}

}  // namespace qkd::exporting
