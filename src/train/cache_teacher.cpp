#include "qkd/train/cache_teacher.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>

#include "qkd/checkpoint/hf_config.h"
#include "qkd/common/dtype_names.h"
#include "qkd/common/error.h"
#include "qkd/common/progress_line.h"
#include "qkd/common/system.h"
#include "qkd/common/torch_compat.h"
#include "qkd/loss/topk_kd_loss.h"
#include "qkd/teacher_cache/cache_writer.h"
#include "qkd/train/stop_signal.h"
#include "qkd/data/data_stream.h"
#include "qkd/tokenizer/tokenizer.h"
#include "qkd/train/run_setup.h"
#include "qkd/train/teacher.h"

namespace qkd::train {

namespace fs = std::filesystem;

namespace {

constexpr int64_t kShardTargetBytes = int64_t{64} << 20;

// Bytes one micro-batch takes in a shard (manifest.h: ids and tokens U16 or I32, F16 values, F32 residual).
int64_t micro_batch_bytes(const teacher_cache::Manifest& m) {
  const int64_t id_bytes = static_cast<int64_t>(io::dtype_size(m.ids_dtype()));
  return m.identity.micro_batch * m.identity.seq_len * (id_bytes * (m.k + 1) + 2 * m.k + 4);
}

teacher_cache::Manifest cache_manifest(const RunConfig& config, const CacheTeacherOptions& options) {
  teacher_cache::Manifest m;
  m.identity = teacher_cache_identity(config);
  m.vocab_size = checkpoint::read_llama_config((fs::path(config.teacher().path) / "config.json").string()).vocab_size;
  if (options.top_k < 1 || options.top_k > m.vocab_size)
    fail("--top-k", fmt::format("must be in 1..{} (the teacher's vocabulary), got {}", m.vocab_size, options.top_k));
  m.k = options.top_k;
  m.shard_micro_batches = options.shard_micro_batches > 0
                              ? options.shard_micro_batches
                              : std::max<int64_t>(1, kShardTargetBytes / micro_batch_bytes(m));
  return m;
}

// The run's stream exactly as the trainer draws it, with absolute source paths so that the cursors
// stored in the shards restore from any working directory.
data::DataStream open_stream(const RunConfig& config, const tokenizer::Tokenizer& tokenizer) {
  auto data = config.data();
  for (auto& source : data.sources) source.path = fs::absolute(source.path).lexically_normal().string();
  return data::DataStream(data, &tokenizer);
}

// The teacher as the trainer runs it: per document when data.document_mask is on.
torch::Tensor teacher_forward(model::LlamaForCausalLM& teacher, const data::TokenBatch& batch, bool document_mask,
                              const torch::Device& device) {
  const compat::NoAutocastScope no_autocast;
  torch::NoGradGuard no_grad;
  if (!document_mask) return teacher->forward(batch.input_ids.to(device));
  const auto layout = model::document_layout(batch.document_starts());
  return teacher->forward(batch.input_ids.to(device), nullptr, &layout);
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Teacher forward and top-k for every micro-batch not yet cached, until done or a stop request.
void fill(teacher_cache::CacheWriter& writer, const RunConfig& config, data::DataStream& stream,
          model::LlamaForCausalLM& teacher, const torch::Device& device) {
  const auto& m = writer.manifest();
  const auto start = std::chrono::steady_clock::now();
  const int64_t first = writer.next_micro_batch();
  ProgressLine progress;
  while (!writer.complete() && !stop_requested()) {
    const auto marked = stream.next_marked_batch(config.train().micro_batch);
    const auto logits = teacher_forward(teacher, marked, config.data().document_mask, device);
    const auto& batch = marked.input_ids;
    writer.add(batch, loss::teacher_topk(logits, m.k, config.kd().temperature, config.kd().chunk_tokens),
               stream.cursor());
    const int64_t done = writer.next_micro_batch();
    const double tokens = static_cast<double>((done - first) * batch.numel());
    progress.show(fmt::format("cache-teacher {} micro-batches, {:.0f} tokens/s", progress_bar(done, m.micro_batches()),
                              tokens / std::max(seconds_since(start), 1e-9)),
                  writer.complete());
  }
  progress.finish();
}

}  // namespace

CacheTeacherSummary cache_teacher(const RunConfig& config, const CacheTeacherOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  install_stop_handlers();
  set_cpu_threads(config.compute().threads, "train.threads");
  const auto device = run_device(config);
  const auto tokenizer = tokenizer::load_tokenizer_for_checkpoint(config.teacher().path);
  auto stream = open_stream(config, tokenizer);
  check_token_sources(config.data(), model_vocab_size(config, tokenizer.vocab_size()));
  teacher_cache::CacheWriter writer(options.out_dir, cache_manifest(config, options));
  CacheTeacherSummary summary;
  summary.micro_batches.resumed = writer.next_micro_batch();
  if (writer.resumed_shards() > 0)
    spdlog::info("{}: {} complete shards ({} of {} micro-batches) kept; continuing after them", options.out_dir,
                 writer.resumed_shards(), writer.next_micro_batch(), writer.manifest().micro_batches());
  if (!writer.complete()) {
    if (!writer.resume_cursor().is_null()) stream.restore(writer.resume_cursor());
    auto teacher = load_teacher_model(config, device);
    model::check_sliding_window(teacher->config(), config.data().seq_len, "data.seq_len",
                                config.teacher().path + "/config.json");
    fill(writer, config, stream, teacher, device);
  }
  summary.interrupted = !writer.complete();
  if (!summary.interrupted) writer.finish();
  const auto& m = writer.manifest();
  const int64_t cached = writer.written_micro_batches();  // a stop discards the shard in progress
  summary.dir = options.out_dir;
  summary.micro_batches.now = cached;
  summary.micro_batches.total = m.micro_batches();
  summary.size.tokens = cached * m.identity.micro_batch * m.identity.seq_len;
  summary.size.bytes = writer.shard_bytes();
  summary.size.shards = (cached + m.shard_micro_batches - 1) / m.shard_micro_batches;
  summary.seconds = seconds_since(start);
  return summary;
}

std::string format_cache_summary(const CacheTeacherSummary& s) {
  if (s.interrupted)
    return fmt::format(
        "Stopped by signal: {} of {} micro-batches cached in {} complete shards in {}\n"
        "Continue: run the same command again.\n",
        s.micro_batches.now, s.micro_batches.total, s.size.shards, s.dir);
  return fmt::format(
      "Cached {} tokens ({} micro-batches, {} shards) in {}: {} bytes, {:.1f} bytes/token, {:.1f} s{}\n"
      "Train from it: --set kd.teacher=cache --set kd.teacher_cache={}\n",
      s.size.tokens, s.micro_batches.now, s.size.shards, s.dir, s.size.bytes, s.size.bytes_per_token(), s.seconds,
      s.micro_batches.resumed > 0 ? fmt::format(" ({} micro-batches were cached before)", s.micro_batches.resumed)
                                  : "",
      s.dir);
}

}  // namespace qkd::train
