#include <fmt/format.h>

#include <iostream>

#include "cli/commands.h"
#include "qkd/common/progress_line.h"
#include "qkd/data/corpus_tokenizer.h"
#include "qkd/tokenizer/tokenizer.h"

namespace qkd::cli {

namespace {
struct TokenizeCommandOptions {
  std::string tokenizer_dir;
  std::string format = "auto";
  data::TokenizeOptions tokenize;
};

void run_tokenize(const TokenizeCommandOptions& o) {
  auto options = o.tokenize;
  options.format = data::source_formats().parse(o.format, "--format");
  const auto tokenizer = tokenizer::load_tokenizer_for_checkpoint(o.tokenizer_dir);
  ProgressLine line;
  const auto summary = data::tokenize_corpus(
      tokenizer, options, [&line](int64_t done, int64_t total, const data::TokenizeSummary& s) {
        const int64_t percent = total > 0 ? done * 100 / total : 100;
        line.show(fmt::format("tokenize {}% of {:.1f} MB, {} records, {} tokens", progress_bar(percent, 100),
                              static_cast<double>(total) / (1 << 20), s.records, s.tokens),
                  done >= total);
      });
  line.finish();
  std::cout << fmt::format("Wrote {}: {} records, {} tokens{} in {:.1f} s ({:.0f} tokens/s){}\n", options.out,
                           summary.records, summary.tokens,
                           summary.width_bytes ? fmt::format(" as uint{}", 8 * summary.width_bytes) : "",
                           summary.seconds, static_cast<double>(summary.tokens) / std::max(summary.seconds, 1e-9),
                           summary.malformed ? fmt::format("; {} malformed records skipped", summary.malformed) : "");
}
}  // namespace

void add_tokenize_command(CLI::App& app) {
  auto o = std::make_shared<TokenizeCommandOptions>();
  auto* cmd = app.add_subcommand("tokenize", "Tokenize a corpus once into a token file (.u16/.u32) or JSONL of ids");
  cmd->add_option("--tokenizer", o->tokenizer_dir,
                  "model or tokenizer-only directory: tokenizer.json (+ tokenizer_config.json) or tokenizer.model")
      ->required();
  cmd->add_option("--input", o->tokenize.inputs, "txt, text JSONL, alpaca, sharegpt or chat {\"messages\"} files")
      ->required();
  cmd->add_option("--out", o->tokenize.out, "OUT.u16 / OUT.u32 (a token file) or OUT.jsonl ({\"ids\": [...]} per record)")
      ->required();
  cmd->add_option("--format", o->format, "format of every input: auto (default: each input's own), text_jsonl, alpaca, "
                                         "sharegpt, chat, txt");
  cmd->add_option("--text-field", o->tokenize.text_field, "text JSONL: the field holding the text (default: text)");
  cmd->add_option("--threads", o->tokenize.threads, "threads (default 0: every core)");
  cmd->add_flag("--eos", o->tokenize.append_eos, "append the EOS id after each record (a document boundary)");
  cmd->add_flag("--strict", o->tokenize.strict, "fail on a malformed record instead of skipping it");
  cmd->callback([o] { run_tokenize(*o); });
}

}  // namespace qkd::cli
