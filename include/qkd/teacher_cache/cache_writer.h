#pragma once
// Fills a teacher cache directory (manifest.h) shard by shard. Every file is written atomically and a
// shard only once it is full, so an interrupted writer leaves complete shards only; a new writer on the
// same directory verifies them and continues after the last one.
#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "qkd/loss/topk_kd_loss.h"
#include "qkd/teacher_cache/manifest.h"

namespace qkd::teacher_cache {

class CacheWriter {
 public:
  // An absent or empty `dir` starts a cache described by `manifest`; a directory holding a cache must have
  // been started with the same settings (qkd::Error naming manifest.json and the first field that
  // differs), and its complete shards are verified and kept. Other content fails.
  CacheWriter(std::string dir, Manifest manifest);

  int64_t next_micro_batch() const { return next_; }          // the next one add() takes
  int64_t written_micro_batches() const { return written_; }  // in shards on disk
  int64_t resumed_shards() const { return resumed_shards_; }  // complete shards found at the start
  // The data stream's cursor after the kept shards (null when starting afresh): restore the stream from
  // it and the next batch drawn is micro-batch next_micro_batch().
  const nlohmann::json& resume_cursor() const { return resume_cursor_; }
  bool complete() const { return next_ == manifest_.micro_batches(); }

  // Micro-batch next_micro_batch(): its tokens [micro_batch, seq_len], the teacher's top-k targets for
  // them, and the data cursor after it. A full shard is written at once.
  void add(const torch::Tensor& input_ids, const loss::TopKTargets& targets, const nlohmann::json& cursor_after);
  // After the last micro-batch: marks the manifest complete, with the shards' total size.
  void finish();

  const Manifest& manifest() const { return manifest_; }
  int64_t shard_bytes() const;  // the shard files on disk now

 private:
  void open_existing();
  void write_shard();

  std::string dir_;
  Manifest manifest_;
  int64_t next_ = 0;
  int64_t written_ = 0;
  int64_t resumed_shards_ = 0;
  nlohmann::json resume_cursor_;
  nlohmann::json cursor_after_;
  std::vector<torch::Tensor> input_ids_, topk_ids_, topk_logprobs_, residual_logmass_;  // the shard in progress
};

}  // namespace qkd::teacher_cache
