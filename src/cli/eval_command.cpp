#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "qkd/checkpoint/hf_config.h"
#include "qkd/checkpoint/student_checkpoint.h"
#include "qkd/common/atomic_file.h"
#include "qkd/common/dtype_names.h"
#include "qkd/common/error.h"
#include "qkd/common/memory.h"
#include "qkd/common/output_directory.h"
#include "qkd/model/memory_estimate.h"
#include "qkd/common/progress_line.h"
#include "qkd/common/system.h"
#include "qkd/eval/results.h"
#include "qkd/export/compressed_tensors.h"
#include "qkd/tokenizer/tokenizer.h"
#include "qkd/train/student_to_export.h"

namespace qkd::cli {

namespace {
struct EvalOptions {
  std::string model, student, json_out, device = "cpu", dtype = "float32";
  std::vector<std::string> ppl, mc;
  int64_t seq_len = 256, batch_size = 8, max_windows = 0, mc_limit = 0, threads = 0;
  bool document_mask = false;
};

void run_eval(const EvalOptions& o) {
  if (o.ppl.empty() && o.mc.empty()) fail("eval", "nothing to evaluate: give --ppl and/or --mc files");
  if (!o.json_out.empty()) {
    require_replaceable_output(o.json_out);  // before minutes of evaluation
    for (const auto* inputs : {&o.ppl, &o.mc})
      for (const auto& input : *inputs) require_apart(o.json_out, "--json", input, "an input file");
  }
  set_cpu_threads(o.threads, "--threads");
  const torch::Device device(o.device);
  const auto dtype = parse_dtype(o.dtype, "--dtype");
  const auto tokenizer = tokenizer::load_tokenizer_for_checkpoint(o.model);
  const auto architecture = checkpoint::read_llama_config(o.model + "/config.json");
  if (device.is_cpu())
    require_memory(model::forward_bytes(architecture, {o.batch_size, o.seq_len, false, false, o.batch_size * o.seq_len, 4}),
                   "--batch-size", fmt::format("batches of {} x {} tokens (--seq-len)", o.batch_size, o.seq_len));
  if (o.seq_len > architecture.max_position_embeddings)
    spdlog::warn("--seq-len {} is beyond the model's max_position_embeddings {}: positions it never saw in training",
                 o.seq_len, architecture.max_position_embeddings);
  // Ids must fit the embedding (config.json's vocab_size), not only the tokenizer.
  eval::check_eval_inputs(o.ppl, o.mc, architecture.vocab_size);
  const auto& model_dir = o.student.empty() ? o.model : o.student;
  checkpoint::LoadedModel loaded;
  if (exporting::is_packed_checkpoint(model_dir)) {  // compressed-tensors pack-quantized: unpacked to float
    loaded.model = exporting::load_packed_checkpoint(model_dir, {dtype, device});
  } else if (!o.student.empty() && train::is_run_or_training_checkpoint(model_dir)) {  // the student as export reads it
    auto student = train::load_student_to_export(model_dir);
    loaded.model = student.model;
    loaded.model->to(device, dtype);
    loaded.quant = student.spec;
  } else {
    loaded = checkpoint::load_model_or_student(model_dir, {dtype, device});
  }
  // A plain model named as the student would be evaluated as such, float weights and all, under a name
  // that says "student": refused, so that the figure is not mistaken for a quantized one.
  if (!o.student.empty() && !loaded.quant && !exporting::is_packed_checkpoint(model_dir))
    fail("--student", o.student + " holds a plain model (no quantizers): not a student; evaluate it with --model " +
                          o.student);
  auto model = loaded.model;
  model::check_sliding_window(model->config(), o.seq_len, "--seq-len", model_dir + "/config.json");
  model->eval();
  spdlog::info("evaluating {}{}", o.student.empty() ? o.model : o.student,
               loaded.quant ? " (fake-quantized student)" : "");
  auto plan = eval::make_eval_plan(o.ppl, o.mc, o.seq_len, o.batch_size, o.max_windows, o.mc_limit, device);
  ProgressLine line(/*plain_interval_s=*/-1);  // a log gets the results, not a bar
  plan.progress = [&line](const std::string& file, int64_t done, int64_t total) {
    line.show(file + " " + progress_bar(done, total), done >= total);
  };
  torch::NoGradGuard no_grad;
  const int64_t bos = tokenizer.special().bos;
  const auto forward = [&](const torch::Tensor& ids) {
    if (!o.document_mask) return model->forward(ids);
    const auto layout = model::document_layout_from_bos(ids, bos);
    return model->forward(ids, nullptr, &layout);
  };
  const auto results = eval::evaluate_all(forward, tokenizer, plan);
  eval::require_finite(results);
  const auto json = eval::results_to_json(results);
  std::printf("%s\n", json.dump(2).c_str());
  if (!o.json_out.empty()) write_text_atomically(o.json_out, json.dump(2) + "\n");
}
}  // namespace

void add_eval_command(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  auto* cmd = app.add_subcommand("eval", "Perplexity and multiple-choice accuracy of a model or student");
  cmd->add_option("--model", o->model, "Hugging Face checkpoint directory (tokenizer; evaluated unless --student)")
      ->required();
  cmd->add_option("--student", o->student,
                  "student to evaluate instead: a ptq student checkpoint, a run directory (newest checkpoint) or a training checkpoint");
  cmd->add_option("--ppl", o->ppl, "token files (.u16/.u32) or JSONL text for perplexity");
  cmd->add_option("--mc", o->mc,
                  "multiple-choice JSONL (context/choices/label, hellaswag, piqa, arc, winogrande, boolq, openbookqa)");
  cmd->add_option("--seq-len", o->seq_len, "window length for perplexity and max length for multiple choice")
      ->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--batch-size", o->batch_size, "sequences per forward pass")->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--max-windows", o->max_windows, "evaluate at most this many perplexity windows (0: all)");
  cmd->add_option("--mc-limit", o->mc_limit, "score at most this many multiple-choice items (0: all)");
  cmd->add_option("--device", o->device, "cpu or cuda[:N]");
  cmd->add_option("--dtype", o->dtype, "compute dtype: float32, bfloat16, float16");
  cmd->add_option("--threads", o->threads, "CPU threads (0: all cores)");
  cmd->add_flag("--document-mask", o->document_mask,
                "attention and positions restart at each BOS inside a window (as data.document_mask trains)");
  cmd->add_option("--json", o->json_out, "write the results JSON here");
  cmd->callback([o] { run_eval(*o); });
}

}  // namespace qkd::cli
