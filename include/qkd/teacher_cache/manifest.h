#pragma once
// The offline teacher cache: a directory that `qkd-train cache-teacher` fills with the teacher's top-k
// log-probabilities for every token of a run's data stream, so that training (kd.teacher: cache)
// needs no teacher model. Layout (docs/offline-teacher.md):
//
//   manifest.json             what was cached (teacher, data section, batch shape, steps, T), k, layout
//   shard-00000.safetensors   shard_micro_batches micro-batches each, in stream order:
//     input_ids         [n, micro_batch, seq_len]     U16 (vocab <= 65536) or I32: the tokens, to verify
//     topk_ids          [n, micro_batch, seq_len, k]  U16 or I32, most likely first
//     topk_logprobs     [n, micro_batch, seq_len, k]  F16: log_softmax(teacher_logits / T), computed in fp32
//     residual_logmass  [n, micro_batch, seq_len]     F32: log of the mass of every other token
//   metadata "first_micro_batch", "micro_batches", "data_cursor" (the stream's cursor after the shard)
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "qkd/data/data_config.h"
#include "qkd/io/safetensors.h"

namespace qkd::teacher_cache {

constexpr int64_t kFormatVersion = 1;

// What the cached values are a function of.
struct CacheIdentity {
  nlohmann::json teacher;  // {"path": absolute directory, "dtype": compute dtype}
  nlohmann::json data;     // the resolved data section, source paths absolute
  int64_t micro_batch = 0;
  int64_t grad_accum = 0;
  int64_t seq_len = 0;
  int64_t steps = 0;
  double temperature = 1.0;
  int64_t micro_batches() const { return steps * grad_accum; }  // what a run of `steps` draws
};

// The identity of a teacher at `path` computing in `dtype`, and of a data section (paths made absolute,
// so that the cache and the run may be started from different directories).
nlohmann::json teacher_identity(const std::string& path, const std::string& dtype);
nlohmann::json data_identity(const data::DataConfig& data);

struct Manifest {
  CacheIdentity identity;
  int64_t k = 0;
  int64_t vocab_size = 0;
  int64_t shard_micro_batches = 0;  // per shard; the last shard may hold fewer
  bool complete = false;            // every micro-batch is in a shard
  int64_t shard_bytes = 0;          // complete caches: the shard files' total size

  int64_t micro_batches() const { return identity.micro_batches(); }
  int64_t shards() const { return (micro_batches() + shard_micro_batches - 1) / shard_micro_batches; }
  int64_t micro_batches_in(int64_t shard) const;  // shard_micro_batches, or fewer for the last
  int64_t tokens() const { return micro_batches() * identity.micro_batch * identity.seq_len; }
  io::DType ids_dtype() const { return vocab_size <= 65536 ? io::DType::u16 : io::DType::i32; }

  nlohmann::json to_json() const;
  // Validates every field; errors name `file` and the key.
  static Manifest from_json(const nlohmann::json& json, const std::string& file);
};

std::string manifest_path(const std::string& dir);
std::string shard_path(const std::string& dir, int64_t shard);  // <dir>/shard-00000.safetensors

Manifest read_manifest(const std::string& dir);                         // qkd::Error naming <dir>/manifest.json
void write_manifest(const std::string& dir, const Manifest& manifest);  // atomically

// cache-teacher into an existing cache: every setting must be the same (k and the shard size too).
// Otherwise one line naming the manifest and the first field that differs.
void require_same_cache(const Manifest& existing, const Manifest& wanted, const std::string& dir);

// A training run reading the cache: teacher, data section, micro_batch, seq_len and temperature must
// match, and the cache must be complete and hold at least `micro_batches`; k, steps and grad_accum may
// differ. Errors start with `field` (kd.teacher_cache) and name the manifest and the differing field.
void require_usable_for(const Manifest& cached, const CacheIdentity& run, int64_t micro_batches, const std::string& dir,
                        const std::string& field);

// Opens shard `shard` of the cache and checks it holds what the manifest says (tensors, dtypes, shapes,
// position in the stream); qkd::Error naming the shard file otherwise.
io::SafetensorsFile open_shard(const std::string& dir, const Manifest& manifest, int64_t shard);

}  // namespace qkd::teacher_cache
