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

// How many micro-batches the cache holds, of how many the run draws.
struct CachedMicroBatches {
  int64_t now = 0;      // cached when this invocation ended
  int64_t total = 0;    // train.steps x train.grad_accum
  int64_t resumed = 0;  // found cached when this invocation started
};

struct CacheSize {
  int64_t tokens = 0;  // in the cached micro-batches
  int64_t bytes = 0;   // of the shard files
  int64_t shards = 0;
  double bytes_per_token() const { return tokens > 0 ? static_cast<double>(bytes) / static_cast<double>(tokens) : 0.0; }
};

struct CacheTeacherSummary {
  std::string dir;
  CachedMicroBatches micro_batches;
  CacheSize size;
  double seconds = 0.0;  // this invocation, teacher loading included
  bool interrupted = false;
};

CacheTeacherSummary cache_teacher(const RunConfig& config, const CacheTeacherOptions& options);

// The closing lines the command prints: what is cached, its size per token, how long it took, and
// what to do next.
std::string format_cache_summary(const CacheTeacherSummary& summary);

}  // namespace qkd::train
