#include "qkd/quant/student.h"

#include <map>
#include <memory>
#include <regex>

#include "qkd/common/error.h"
#include "qkd/quant/activation_quantizer.h"
#include "qkd/quant/weight_quantizer.h"

namespace qkd::quant {
namespace {

using qkd::model::Linear;
using qkd::model::LlamaForCausalLMImpl;

struct Selected {
  std::string name;
  Linear linear;
  int64_t bits;
};

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "\"" : ", \"") + item + "\"";
  return out;
}

std::vector<Selected> select_modules(LlamaForCausalLMImpl& model, const QuantSpec& spec) {
  std::vector<std::regex> patterns(spec.modules.begin(), spec.modules.end());
  std::vector<Selected> selected;
  bool has_lm_head = false;
  for (auto& [name, linear] : model.named_linears()) {
    if (name == "lm_head") {
      has_lm_head = true;
      if (spec.lm_head_bits > 0) selected.push_back({name, linear, spec.lm_head_bits});
      continue;
    }
    for (const auto& re : patterns) {
      if (std::regex_search(name, re)) {
        selected.push_back({name, linear, spec.bits});
        break;
      }
    }
  }
  if (spec.lm_head_bits > 0 && !has_lm_head) {
    fail("quant.lm_head_bits", "lm_head is tied to model.embed_tokens and cannot be quantized on its own");
  }
  if (selected.empty()) fail("quant.modules", "no Linear module matches any of " + joined(spec.modules));
  return selected;
}

void check_attachable(const Selected& s, const QuantSpec& spec) {
  if (s.linear->weight_quantizer() || s.linear->input_quantizer()) fail(s.name, "already has quantizers attached");
  const int64_t in = s.linear->in_features();
  if (spec.granularity == Granularity::per_group && in % spec.group_size != 0) {
    fail("quant.group_size",
         std::to_string(spec.group_size) + " does not divide in_features " + std::to_string(in) + " of " + s.name);
  }
}

bool is_quantizer_tensor(const std::string& name) {
  return name.find(".weight_quantizer.") != std::string::npos || name.find(".input_quantizer.") != std::string::npos;
}

template <typename Quantizer, typename Fn>
void for_each_quantizer(LlamaForCausalLMImpl& model, bool weights, Fn fn) {
  for (auto& [name, linear] : model.named_linears()) {
    auto base = weights ? linear->weight_quantizer() : linear->input_quantizer();
    if (auto q = std::dynamic_pointer_cast<Quantizer>(base)) fn(name, linear, *q);
  }
}

}  // namespace

std::vector<std::string> attach_quantizers(LlamaForCausalLMImpl& model, const QuantSpec& spec) {
  validate(spec);
  auto selected = select_modules(model, spec);
  for (const auto& s : selected) check_attachable(s, spec);
  std::vector<std::string> names;
  for (auto& s : selected) {
    QuantSpec module_spec = spec;
    module_spec.bits = s.bits;
    auto wq = std::make_shared<WeightQuantizer>(module_spec, s.linear->out_features(), s.linear->in_features(), s.name);
    wq->initialize(s.linear->weight);
    s.linear->set_weight_quantizer(wq);
    // lm_head (selected through lm_head_bits) keeps a float input.
    if (spec.act_bits > 0 && s.name != "lm_head") {
      s.linear->set_input_quantizer(
          std::make_shared<ActivationQuantizer>(spec, s.name + ".input_quantizer", s.linear->weight.device()));
    }
    names.push_back(s.name);
  }
  return names;
}

std::vector<std::string> quantized_modules(LlamaForCausalLMImpl& model) {
  std::vector<std::string> names;
  for (auto& [name, linear] : model.named_linears()) {
    if (linear->weight_quantizer()) names.push_back(name);
  }
  return names;
}

qkd::io::NamedTensors quantizer_state(LlamaForCausalLMImpl& model) {
  qkd::io::NamedTensors state;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    if (is_quantizer_tensor(item.key())) state.emplace_back(item.key(), item.value().detach());
  }
  for (const auto& item : model.named_buffers(/*recurse=*/true)) {
    if (is_quantizer_tensor(item.key())) state.emplace_back(item.key(), item.value());
  }
  return state;
}

void load_quantizer_state(LlamaForCausalLMImpl& model, const qkd::io::NamedTensors& tensors) {
  std::map<std::string, torch::Tensor> saved;
  for (const auto& [name, t] : tensors) {
    if (is_quantizer_tensor(name)) saved[name] = t;
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : quantizer_state(model)) {
    auto it = saved.find(name);
    if (it == saved.end()) fail(name, "missing from the saved quantizer state");
    if (!it->second.sizes().equals(target.sizes())) {
      fail(name,
           "saved shape " + c10::str(it->second.sizes()) + " differs from the student's " + c10::str(target.sizes()));
    }
    target.copy_(it->second);
    saved.erase(it);
  }
  if (!saved.empty()) fail(saved.begin()->first, "is not a quantizer tensor of this student (different quant spec?)");
  for_each_quantizer<WeightQuantizer>(model, true, [](auto&, auto&, WeightQuantizer& q) { q.on_state_loaded(); });
  for_each_quantizer<ActivationQuantizer>(model, false,
                                          [](auto&, auto&, ActivationQuantizer& q) { q.on_state_loaded(); });
}

void rtn_quantize_weights(LlamaForCausalLMImpl& model) {
  torch::NoGradGuard no_grad;
  for_each_quantizer<WeightQuantizer>(model, true, [](auto&, Linear& linear, WeightQuantizer& q) {
    linear->weight.copy_(q.fake_quantize(linear->weight));
  });
}

std::vector<std::pair<std::string, double>> weight_quantization_errors(LlamaForCausalLMImpl& model) {
  torch::NoGradGuard no_grad;
  std::vector<std::pair<std::string, double>> errors;
  for_each_quantizer<WeightQuantizer>(model, true, [&](const std::string& name, Linear& linear, WeightQuantizer& q) {
    const auto w = linear->weight.to(torch::kFloat);
    const double norm = w.norm().item<double>();
    const double diff = (q.fake_quantize(linear->weight).to(torch::kFloat) - w).norm().item<double>();
    errors.emplace_back(name, norm > 0 ? diff / norm : 0.0);
  });
  return errors;
}

void begin_activation_calibration(LlamaForCausalLMImpl& model) {
  for_each_quantizer<ActivationQuantizer>(model, false,
                                          [](auto&, auto&, ActivationQuantizer& q) { q.begin_calibration(); });
}

void end_activation_calibration(LlamaForCausalLMImpl& model) {
  for_each_quantizer<ActivationQuantizer>(model, false,
                                          [](auto&, auto&, ActivationQuantizer& q) { q.end_calibration(); });
}

}  // namespace qkd::quant
