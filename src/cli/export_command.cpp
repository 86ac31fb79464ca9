#include <iostream>

#include "cli/commands.h"
#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/common/dtype_names.h"
#include "qkd/common/output_directory.h"
#include "qkd/export/export.h"
#include "qkd/train/student_to_export.h"

namespace qkd::cli {

namespace {
struct ExportCliOptions {
  std::string checkpoint;
  std::string formats = "hf";
  std::string out;
  std::string dtype = "float16";
  std::string gguf_type = "auto";
};

void run(const ExportCliOptions& o) {
  const auto formats = exporting::parse_format_list(o.formats, "--format");
  exporting::ExportOptions options;
  options.dtype = parse_dtype(o.dtype, "--dtype");
  options.gguf_type = exporting::gguf_types().parse(o.gguf_type, "--gguf-type");
  require_apart(o.out, "--out", o.checkpoint, "--checkpoint");
  auto student = train::load_student_to_export(o.checkpoint);
  require_apart(o.out, "--out", student.tokenizer_dir, "the teacher directory");
  const exporting::ExportSource source{*student.model, student.spec, student.tokenizer_dir};
  for (const auto& path : exporting::export_student(source, formats, o.out, options)) std::cout << path << "\n";
}
}  // namespace

void add_export_command(CLI::App& app) {
  auto o = std::make_shared<ExportCliOptions>();
  auto* cmd = app.add_subcommand("export", "Write a trained or round-to-nearest student in the formats runtimes load");
  cmd->add_option("--checkpoint", o->checkpoint,
                  "run directory (newest checkpoint), training checkpoint or student checkpoint")
      ->required();
  cmd->add_option("--format", o->formats, "comma-separated: hf, packed, encodings, gguf (default hf)");
  cmd->add_option("--out", o->out, "directory to write <out>/<format> into")->required();
  cmd->add_option("--dtype", o->dtype, "float weights of hf and packed: float16, bfloat16 or float32");
  cmd->add_option("--gguf-type", o->gguf_type,
                  "gguf projections: auto (the student's own: q4_0 up to 4 bits, q8_0 above, mxfp4 / nvfp4), q4_0, "
                  "q8_0, mxfp4, nvfp4, or f16 / f32 (dequantized)");
  cmd->callback([o] { run(*o); });
}

}  // namespace qkd::cli
