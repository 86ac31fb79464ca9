#include "qkd/teacher_cache/cache_reader.h"

#include <fmt/format.h>

#include "qkd/common/error.h"

namespace qkd::teacher_cache {

CacheReader::CacheReader(std::string dir) : dir_(std::move(dir)), manifest_(read_manifest(dir_)) {}

void CacheReader::seek(int64_t index) {
  if (index < 0 || index > manifest_.micro_batches())
    fail(manifest_path(dir_), fmt::format("micro-batch {} is outside the {} cached", index, manifest_.micro_batches()));
  next_ = index;
}

const io::SafetensorsFile& CacheReader::shard(int64_t index) {
  if (index != open_shard_) {
    file_.reset();  // unmap the previous shard first
    file_ = open_shard(dir_, manifest_, index);
    open_shard_ = index;
  }
  return *file_;
}

loss::TopKTargets CacheReader::next(const torch::Tensor& input_ids) {
  if (next_ >= manifest_.micro_batches())
    fail(manifest_path(dir_), fmt::format("all {} cached micro-batches are used up", manifest_.micro_batches()));
  const int64_t index = next_;
  const auto& file = shard(index / manifest_.shard_micro_batches);
  const int64_t row = index % manifest_.shard_micro_batches;
  const auto cached = file.rows("input_ids", row, 1)[0];
  if (!cached.sizes().equals(input_ids.sizes()) || !torch::equal(cached.to(torch::kInt64), input_ids.to(torch::kCPU)))
    fail(file.path(),
         fmt::format("micro-batch {}: the cached input_ids differ from the batch the trainer drew (a cache "
                     "of another data stream?)",
                     index));
  ++next_;
  return {file.rows("topk_ids", row, 1)[0], file.rows("topk_logprobs", row, 1)[0],
          file.rows("residual_logmass", row, 1)[0]};
}

}  // namespace qkd::teacher_cache
