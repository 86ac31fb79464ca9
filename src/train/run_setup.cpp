#include "qkd/train/run_setup.h"

#include <spdlog/spdlog.h>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/checkpoint/hf_config.h"
#include "qkd/common/dtype_names.h"
#include "qkd/common/error.h"
#include "qkd/data/token_file.h"

namespace qkd::train {

torch::Device run_device(const RunConfig& config) {
  const auto& name = config.compute().device;
  if (name != "cpu" && !torch::cuda::is_available())
    fail("train.device", "\"" + name + "\" requested but CUDA is not available");
  return torch::Device(name);
}

torch::Device rank_device(const RunConfig& config, const distributed::LaunchInfo& launch) {
  auto device = run_device(config);
  if (device.is_cuda() && !device.has_index() && launch.distributed()) {
    const auto gpus = static_cast<int>(torch::cuda::device_count());
    if (launch.local_rank >= gpus)
      fail("train.device", "local rank " + std::to_string(launch.local_rank) + " has no GPU of its own (" +
                               std::to_string(gpus) + " visible)");
    device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(launch.local_rank));
  }
  return device;
}

namespace {
torch::Dtype teacher_dtype(const RunConfig& config, const torch::Device& device) {
  if (device.is_cpu() && config.teacher().dtype == torch::kFloat16) {
    spdlog::warn("teacher.dtype float16 computes in float32 on cpu (no fast fp16 matmul there)");
    return torch::kFloat32;
  }
  return config.teacher().dtype;
}
}  // namespace

model::LlamaForCausalLM load_teacher_model(const RunConfig& config, const torch::Device& device) {
  const auto dtype = teacher_dtype(config, device);
  auto teacher = checkpoint::load_llama(config.teacher().path, {dtype, device});
  teacher->eval();
  for (auto& p : teacher->parameters()) p.requires_grad_(false);
  spdlog::info("teacher {} computed in {} on {}", config.teacher().path, dtype_name(dtype), device.str());
  return teacher;
}

int64_t model_vocab_size(const RunConfig& config, int64_t tokenizer_vocab_size) {
  const auto path = config.teacher().path + "/config.json";
  const auto vocab = checkpoint::read_llama_config(path).vocab_size;
  if (tokenizer_vocab_size > vocab)
    fail(path + ": vocab_size", std::to_string(vocab) + " embedding rows, fewer than the tokenizer's " +
                                    std::to_string(tokenizer_vocab_size) + " ids");
  return vocab;
}

void check_token_sources(const data::DataConfig& data, int64_t vocab_size) {
  // Read as the stream will read it: a .u16 file declared u32 pairs two ids into one.
  for (const auto& source : data.sources)
    if (const auto format = data::resolve_source_format(source); data::is_token_file_format(format))
      data::TokenFile::open(source.path, data::token_file_width(format)).check_vocabulary(vocab_size);
}

}  // namespace qkd::train
