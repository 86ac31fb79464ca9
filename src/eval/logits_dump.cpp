#include "qkd/eval/logits_dump.h"

#include "qkd/common/error.h"
#include "qkd/io/safetensors.h"

namespace qkd::eval {

int dump_logits(model::LlamaForCausalLMImpl& model, const std::string& input_path, const std::string& output_path) {
  const auto input = io::SafetensorsFile::open(input_path);
  const auto device = model.parameters().front().device();
  io::NamedTensors outputs;
  torch::NoGradGuard no_grad;
  for (const auto& info : input.tensors()) {
    const std::string prefix = "input_ids_";
    if (info.name.rfind(prefix, 0) != 0) continue;
    const auto key = info.name.substr(prefix.size());
    const auto ids = input.tensor(info.name);
    if (ids.scalar_type() != torch::kInt64 || ids.dim() != 2)
      fail(input_path, "tensor '" + info.name + "': expected int64 [batch, seq]");
    const int64_t vocab = model.config().vocab_size;
    if (ids.numel() > 0 && (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= vocab))
      fail(input_path, "tensor '" + info.name + "': ids from " + std::to_string(ids.min().item<int64_t>()) + " to " +
                           std::to_string(ids.max().item<int64_t>()) + ", outside the model's vocabulary [0, " +
                           std::to_string(vocab) + ")");
    const auto logits = model.forward(ids.to(device)).to(torch::kCPU, torch::kFloat32);
    outputs.emplace_back("logits_" + key, logits);
  }
  if (outputs.empty()) fail(input_path, "no tensor named input_ids_K");
  io::write_safetensors(output_path, outputs);
  return static_cast<int>(outputs.size());
}

}  // namespace qkd::eval
