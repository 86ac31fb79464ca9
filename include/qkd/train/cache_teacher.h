#pragma once
// `qkd-train cache-teacher`: the teacher's top-k log-probabilities for every micro-batch a run of
// `config` draws (the same stream, in the same order), stored in a teacher cache directory
// (teacher_cache/manifest.h) that `kd.teacher: cache` trains from without loading the teacher.
// SIGINT/SIGTERM stop it after the micro-batch in flight, keeping complete shards only; the same
// command continues after the last of them.
#include <string>

#include "qkd/teacher_cache/manifest.h"
#include "qkd/train/run_config.h"

namespace qkd::train {

struct CacheTeacherOptions {
  std::string out_dir;
  int64_t top_k = 32;
  int64_t shard_micro_batches = 0;  // micro-batches per shard; 0: as many as fit in about 64 MiB
};

struct CacheTeacherSummary {
  std::string dir;
  int64_t micro_batches = 0;          // cached now
  int64_t total_micro_batches = 0;    // train.steps x train.grad_accum
  int64_t resumed_micro_batches = 0;  // found cached when this invocation started
  int64_t tokens = 0;                 // in the cached micro-batches
  int64_t bytes = 0;                  // of the shard files
  int64_t shards = 0;
  double seconds = 0.0;  // this invocation, teacher loading included
  bool interrupted = false;
  double bytes_per_token() const { return tokens > 0 ? static_cast<double>(bytes) / static_cast<double>(tokens) : 0.0; }
};

CacheTeacherSummary cache_teacher(const RunConfig& config, const CacheTeacherOptions& options);

// The closing lines the command prints: what is cached, its size per token, how long it took, and
// what to do next.
std::string format_cache_summary(const CacheTeacherSummary& summary);

// What a cache for `config` is a function of (the teacher, the data section, the batch shape, the
// steps, kd.temperature).
teacher_cache::CacheIdentity teacher_cache_identity(const RunConfig& config);

}  // namespace qkd::train
