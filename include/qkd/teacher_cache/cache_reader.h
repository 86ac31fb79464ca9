#pragma once
// Reads a complete teacher cache (manifest.h) micro-batch by micro-batch, in stream order, checking
// each cached batch of tokens against the one the trainer drew.
#include <torch/torch.h>

#include <optional>
#include <string>

#include "qkd/io/safetensors.h"
#include "qkd/loss/topk_kd_loss.h"
#include "qkd/teacher_cache/manifest.h"

namespace qkd::teacher_cache {

class CacheReader {
 public:
  explicit CacheReader(std::string dir);  // reads and validates manifest.json

  const Manifest& manifest() const { return manifest_; }
  const std::string& dir() const { return dir_; }

  // Micro-batch `index` is read next (a resumed run starts at step x grad_accum).
  void seek(int64_t index);
  int64_t position() const { return next_; }

  // The cached targets of the next micro-batch (CPU tensors viewing the shard where they can), once its
  // cached input_ids are found equal to `input_ids`, the batch the trainer drew: a cache built from
  // another data stream fails here, naming the shard and micro-batch.
  loss::TopKTargets next(const torch::Tensor& input_ids);

 private:
  const io::SafetensorsFile& shard(int64_t index);

  std::string dir_;
  Manifest manifest_;
  int64_t next_ = 0;
  int64_t open_shard_ = -1;
  std::optional<io::SafetensorsFile> file_;
};

}  // namespace qkd::teacher_cache
