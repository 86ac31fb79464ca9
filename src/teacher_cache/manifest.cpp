#include "qkd/teacher_cache/manifest.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "qkd/common/atomic_file.h"
#include "qkd/common/error.h"
#include "qkd/common/json_fields.h"
#include "qkd/common/json_io.h"

namespace qkd::teacher_cache {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kFormatName = "qkd-teacher-cache";
constexpr int64_t kMaxCount = int64_t{1} << 40;

std::string absolute(const std::string& path) { return fs::weakly_canonical(fs::absolute(path)).string(); }

// The settings a cache is made of, in the order a difference is reported.
std::vector<std::pair<std::string, json>> settings(const Manifest& m) {
  const auto& id = m.identity;
  return {{"format_version", kFormatVersion},
          {"teacher", id.teacher},
          {"data", id.data},
          {"micro_batch", id.micro_batch},
          {"seq_len", id.seq_len},
          {"temperature", id.temperature},
          {"grad_accum", id.grad_accum},
          {"steps", id.steps},
          {"k", m.k},
          {"vocab_size", m.vocab_size},
          {"shard_micro_batches", m.shard_micro_batches}};
}

struct Difference {
  std::string field;
  json cached, wanted;
};

std::string index_path(const std::string& prefix, size_t i) { return prefix + "[" + std::to_string(i) + "]"; }

// The first leaf where `a` and `b` differ, named as a config path ("data.sources[0].path").
std::optional<Difference> first_difference(const json& a, const json& b, const std::string& prefix) {
  if (a.is_object() && b.is_object()) {
    for (const auto& [key, value] : a.items())
      if (auto d = first_difference(value, b.contains(key) ? b.at(key) : json(), prefix + "." + key)) return d;
    for (const auto& [key, value] : b.items())
      if (!a.contains(key)) return Difference{prefix + "." + key, json(), value};
    return std::nullopt;
  }
  if (a.is_array() && b.is_array() && a.size() == b.size()) {
    for (size_t i = 0; i < a.size(); ++i)
      if (auto d = first_difference(a[i], b[i], index_path(prefix, i))) return d;
    return std::nullopt;
  }
  if (a == b) return std::nullopt;
  return Difference{prefix, a, b};
}

// The first of `fields` (names from settings()) whose value differs between the two manifests.
std::optional<Difference> first_difference_in(const Manifest& cached, const Manifest& wanted,
                                              const std::vector<std::string>& fields) {
  const auto a = settings(cached), b = settings(wanted);
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::find(fields.begin(), fields.end(), a[i].first) == fields.end()) continue;
    if (auto d = first_difference(a[i].second, b[i].second, a[i].first)) return d;
  }
  return std::nullopt;
}

std::string value_text(const json& value) { return value.is_null() ? "(absent)" : json_excerpt(value); }

json tensor_dtypes(const Manifest& m) {
  const auto ids = io::dtype_name(m.ids_dtype());
  return {{"input_ids", ids}, {"topk_ids", ids}, {"topk_logprobs", "F16"}, {"residual_logmass", "F32"}};
}

Manifest read_fields(FieldReader& r, const json& j, const std::string& file) {
  Manifest m;
  r.one_of("format", "", {kFormatName});
  const auto version = r.integer("format_version", 0, 0, kMaxCount);
  if (version != kFormatVersion)
    fail(file + ": format_version",
         fmt::format("{} is not the version this build reads ({})", version, kFormatVersion));
  auto& id = m.identity;
  for (const char* key : {"teacher", "data"})
    if (!r.raw(key) || !j.at(key).is_object()) fail(r.path_of(key), "missing or not an object");
  id.teacher = j.at("teacher");
  id.data = j.at("data");
  id.micro_batch = r.integer("micro_batch", 0, 1, kMaxCount);
  id.grad_accum = r.integer("grad_accum", 0, 1, kMaxCount);
  id.seq_len = r.integer("seq_len", 0, 1, kMaxCount);
  id.steps = r.integer("steps", 0, 1, kMaxCount);
  id.temperature = r.positive("temperature", 1.0);
  m.vocab_size = r.integer("vocab_size", 0, 1, kMaxCount);
  m.k = r.integer("k", 0, 1, m.vocab_size);
  m.shard_micro_batches = r.integer("shard_micro_batches", 0, 1, kMaxCount);
  m.complete = r.boolean("complete", false);
  m.shard_bytes = r.integer("shard_bytes", 0, 0, std::numeric_limits<int64_t>::max());
  // Derived values, written for readers of the file: they must agree with the rest.
  for (const auto& [key, value] : std::vector<std::pair<const char*, json>>{{"micro_batches", m.micro_batches()},
                                                                            {"tokens", m.tokens()},
                                                                            {"shards", m.shards()},
                                                                            {"tensors", tensor_dtypes(m)}}) {
    const auto* stored = r.raw(key);
    if (!stored || *stored != value)
      fail(r.path_of(key), "expected " + json_excerpt(value) + " from the other fields, got " +
                               (stored ? json_excerpt(*stored) : std::string("(absent)")));
  }
  r.finish();
  return m;
}

// Shard metadata written as text (safetensors metadata holds strings only).
int64_t metadata_integer(const io::SafetensorsFile& file, const char* key) {
  const auto& metadata = file.metadata();
  const auto it = metadata.find(key);
  if (it == metadata.end()) fail(file.path(), std::string("metadata '") + key + "' missing");
  try {
    size_t used = 0;
    const int64_t value = std::stoll(it->second, &used);
    if (used == it->second.size()) return value;
  } catch (const std::exception&) {
  }
  fail(file.path(), std::string("metadata '") + key + "' is not an integer: " + printable(it->second, 40));
}

void check_tensor(const io::SafetensorsFile& file, const char* name, io::DType dtype,
                  const std::vector<int64_t>& shape) {
  const auto& info = file.info(name);
  if (info.dtype != dtype || info.shape != shape)
    fail(file.path(), fmt::format("tensor '{}' is {} {}, expected {} {}", name, io::dtype_name(info.dtype),
                                  json(info.shape).dump(), io::dtype_name(dtype), json(shape).dump()));
}

}  // namespace

json teacher_identity(const std::string& path, const std::string& dtype) {
  return {{"path", absolute(path)}, {"dtype", dtype}};
}

json data_identity(const data::DataConfig& data) {
  auto absolute_paths = data;
  for (auto& source : absolute_paths.sources) source.path = absolute(source.path);
  return data::data_config_to_json(absolute_paths);
}

int64_t Manifest::micro_batches_in(int64_t shard) const {
  return std::min(shard_micro_batches, micro_batches() - shard * shard_micro_batches);
}

json Manifest::to_json() const {
  json j = json::object();
  j["format"] = kFormatName;
  for (const auto& [key, value] : settings(*this)) j[key] = value;
  j["micro_batches"] = micro_batches();
  j["tokens"] = tokens();
  j["shards"] = shards();
  j["tensors"] = tensor_dtypes(*this);
  j["complete"] = complete;
  j["shard_bytes"] = shard_bytes;
  return j;
}

Manifest Manifest::from_json(const json& j, const std::string& file) {
  try {
    FieldReader reader(j, "");
    return read_fields(reader, j, file);
  } catch (const Error& e) {
    const std::string message = e.what();
    if (message.rfind(file, 0) == 0) throw;
    throw Error(file + ": " + message);
  }
}

std::string manifest_path(const std::string& dir) { return (fs::path(dir) / "manifest.json").string(); }

std::string shard_path(const std::string& dir, int64_t shard) {
  return (fs::path(dir) / fmt::format("shard-{:05d}.safetensors", shard)).string();
}

Manifest read_manifest(const std::string& dir) {
  const auto file = manifest_path(dir);
  if (!fs::is_regular_file(file)) fail(file, "not found: not a teacher cache (cache-teacher writes it)");
  return Manifest::from_json(read_json_file(file), file);
}

void write_manifest(const std::string& dir, const Manifest& manifest) {
  write_text_atomically(manifest_path(dir), manifest.to_json().dump(2) + "\n");
}

void require_same_cache(const Manifest& existing, const Manifest& wanted, const std::string& dir) {
  std::vector<std::string> all;
  for (const auto& [key, _] : settings(existing)) all.push_back(key);
  if (const auto d = first_difference_in(existing, wanted, all))
    fail(manifest_path(dir), d->field + ": cached " + value_text(d->cached) + ", config " + value_text(d->wanted) +
                                 " (the directory caches another config: use another --out, or remove it)");
}

void require_usable_for(const Manifest& cached, const CacheIdentity& run, int64_t micro_batches, const std::string& dir,
                        const std::string& field) {
  const auto where = field + ": " + manifest_path(dir);
  Manifest wanted = cached;
  wanted.identity = run;
  if (const auto d = first_difference_in(cached, wanted, {"teacher", "data", "micro_batch", "seq_len", "temperature"}))
    fail(where, d->field + ": cached " + value_text(d->cached) + ", run " + value_text(d->wanted) +
                    " (the cache was built for another config)");
  if (!cached.complete)
    fail(where, "complete: false: cache-teacher has not finished; run it again to complete the cache");
  if (micro_batches > cached.micro_batches())
    fail(where, fmt::format("micro_batches: cached {}, the run needs {} (train.steps x train.grad_accum)",
                            cached.micro_batches(), micro_batches));
}

io::SafetensorsFile open_shard(const std::string& dir, const Manifest& m, int64_t shard) {
  auto file = io::SafetensorsFile::open(shard_path(dir, shard));
  const int64_t n = m.micro_batches_in(shard), b = m.identity.micro_batch, s = m.identity.seq_len;
  if (file.tensors().size() != 4)
    fail(file.path(), fmt::format("holds {} tensors, a shard has 4", file.tensors().size()));
  check_tensor(file, "input_ids", m.ids_dtype(), {n, b, s});
  check_tensor(file, "topk_ids", m.ids_dtype(), {n, b, s, m.k});
  check_tensor(file, "topk_logprobs", io::DType::f16, {n, b, s, m.k});
  check_tensor(file, "residual_logmass", io::DType::f32, {n, b, s});
  if (metadata_integer(file, "first_micro_batch") != shard * m.shard_micro_batches ||
      metadata_integer(file, "micro_batches") != n)
    fail(file.path(), fmt::format("metadata says micro-batches {}+{}, the manifest {}+{}",
                                  metadata_integer(file, "first_micro_batch"), metadata_integer(file, "micro_batches"),
                                  shard * m.shard_micro_batches, n));
  return file;
}

}  // namespace qkd::teacher_cache
