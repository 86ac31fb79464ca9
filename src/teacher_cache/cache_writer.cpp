#include "qkd/teacher_cache/cache_writer.h"

#include <fmt/format.h>

#include <filesystem>

#include "qkd/common/atomic_file.h"
#include "qkd/common/error.h"
#include "qkd/common/json_io.h"
#include "qkd/io/safetensors.h"

namespace qkd::teacher_cache {

namespace fs = std::filesystem;

namespace {

bool is_empty_directory(const std::string& dir) { return fs::is_directory(dir) && fs::is_empty(dir); }

// The data cursor a shard ends at; its window count must be where the shard ends in the stream.
nlohmann::json shard_cursor(const io::SafetensorsFile& file, const Manifest& m, int64_t shard) {
  const auto it = file.metadata().find("data_cursor");
  if (it == file.metadata().end()) fail(file.path(), "metadata 'data_cursor' missing");
  const auto cursor = parse_json(it->second, file.path() + ": metadata 'data_cursor'");
  const int64_t windows = (shard * m.shard_micro_batches + m.micro_batches_in(shard)) * m.identity.micro_batch;
  if (!cursor.is_object() || !cursor.contains("windows") || cursor.at("windows") != windows)
    fail(file.path(), fmt::format("metadata 'data_cursor' is not at window {}, where the shard ends", windows));
  return cursor;
}

}  // namespace

CacheWriter::CacheWriter(std::string dir, Manifest manifest) : dir_(std::move(dir)), manifest_(std::move(manifest)) {
  manifest_.complete = false;
  manifest_.shard_bytes = 0;
  if (fs::exists(manifest_path(dir_))) {
    open_existing();
    return;
  }
  if (fs::exists(dir_) && !is_empty_directory(dir_))
    fail(dir_, "exists and is not a teacher cache (no manifest.json); choose an empty or new directory");
  fs::create_directories(dir_);
  write_manifest(dir_, manifest_);
}

// Keeps the shards a previous writer completed, in order, up to the first one missing.
void CacheWriter::open_existing() {
  const auto existing = read_manifest(dir_);
  require_same_cache(existing, manifest_, dir_);
  remove_stale_temporaries(dir_);  // a shard being written when the previous writer was killed
  for (int64_t shard = 0; shard < manifest_.shards() && fs::exists(shard_path(dir_, shard)); ++shard) {
    const auto file = open_shard(dir_, manifest_, shard);
    resume_cursor_ = shard_cursor(file, manifest_, shard);
    next_ += manifest_.micro_batches_in(shard);
    ++resumed_shards_;
  }
  written_ = next_;
  if (existing.complete && !complete())
    fail(shard_path(dir_, resumed_shards_), "missing, but manifest.json says the cache is complete");
  manifest_.complete = existing.complete;
  manifest_.shard_bytes = existing.shard_bytes;
}

void CacheWriter::add(const torch::Tensor& input_ids, const loss::TopKTargets& targets,
                      const nlohmann::json& cursor_after) {
  if (complete()) fail(dir_, "every micro-batch is cached already");
  const auto& id = manifest_.identity;
  TORCH_CHECK(input_ids.sizes() == torch::IntArrayRef({id.micro_batch, id.seq_len}), "input_ids ", input_ids.sizes());
  TORCH_CHECK(targets.ids.size(-1) == manifest_.k, "top-k targets with k ", targets.ids.size(-1));
  input_ids_.push_back(input_ids.to(torch::kCPU));
  topk_ids_.push_back(targets.ids.to(torch::kCPU));
  // float16: a log-probability l is rounded by at most |l| * 2^-11, so p = e^l keeps a relative error
  // under 0.4% for every p above 1e-7 (|l| < 16) and under 0.05% above 0.14, at half the bytes of
  // float32 (bfloat16 would be 8 times coarser); the loss renormalizes the k + 1 buckets. The residual
  // stays float32: it is one value per token and its mass can be far below float16's range.
  topk_logprobs_.push_back(targets.logprobs.to(torch::kCPU, torch::kFloat16));
  residual_logmass_.push_back(targets.residual_logmass.to(torch::kCPU, torch::kFloat32));
  cursor_after_ = cursor_after;
  ++next_;
  if (static_cast<int64_t>(input_ids_.size()) == manifest_.shard_micro_batches || complete()) write_shard();
}

void CacheWriter::write_shard() {
  const int64_t shard = (next_ - 1) / manifest_.shard_micro_batches;
  const std::map<std::string, std::string> metadata{
      {"format", "pt"},
      {"first_micro_batch", std::to_string(shard * manifest_.shard_micro_batches)},
      {"micro_batches", std::to_string(input_ids_.size())},
      {"data_cursor", cursor_after_.dump()}};
  const auto ids = manifest_.ids_dtype();
  io::write_safetensors(shard_path(dir_, shard),
                        {{"input_ids", torch::stack(input_ids_)},
                         {"topk_ids", torch::stack(topk_ids_)},
                         {"topk_logprobs", torch::stack(topk_logprobs_)},
                         {"residual_logmass", torch::stack(residual_logmass_)}},
                        metadata, {{"input_ids", ids}, {"topk_ids", ids}});
  written_ = next_;
  input_ids_.clear();
  topk_ids_.clear();
  topk_logprobs_.clear();
  residual_logmass_.clear();
}

void CacheWriter::finish() {
  if (!complete()) fail(dir_, fmt::format("finish after {} of {} micro-batches", next_, manifest_.micro_batches()));
  manifest_.complete = true;
  manifest_.shard_bytes = shard_bytes();
  write_manifest(dir_, manifest_);
  sync_directory(dir_);
}

int64_t CacheWriter::shard_bytes() const {
  int64_t bytes = 0;
  for (int64_t shard = 0; shard < manifest_.shards(); ++shard) {
    std::error_code ec;
    const auto size = fs::file_size(shard_path(dir_, shard), ec);
    if (!ec) bytes += static_cast<int64_t>(size);
  }
  return bytes;
}

}  // namespace qkd::teacher_cache
