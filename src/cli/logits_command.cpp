#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/common/atomic_file.h"
#include "qkd/eval/logits_dump.h"
#include "qkd/export/compressed_tensors.h"

namespace qkd::cli {

void add_logits_command(CLI::App& app) {
  struct Options {
    std::string model, input, output;
  };
  auto opts = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("logits", "Write fp32 logits_K for every input_ids_K of a safetensors file");
  cmd->add_option("--model", opts->model, "Hugging Face checkpoint directory")->required();
  cmd->add_option("--input", opts->input, "safetensors file with int64 input_ids_K [batch, seq]")->required();
  cmd->add_option("--output", opts->output, "safetensors file to write logits_K into")->required();
  cmd->callback([opts] {
    require_replaceable_output(opts->output);
    auto model = exporting::is_packed_checkpoint(opts->model)
                     ? exporting::load_packed_checkpoint(opts->model, {torch::kFloat32, torch::kCPU})
                     : checkpoint::load_llama(opts->model, {torch::kFloat32, torch::kCPU});
    model->eval();
    const int n = eval::dump_logits(*model, opts->input, opts->output);
    spdlog::info("wrote {} logits tensors to {}", n, opts->output);
  });
}

}  // namespace qkd::cli
