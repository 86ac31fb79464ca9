#include "qkd/data/data_stream.h"

#include "qkd/common/error.h"
#include "qkd/common/json_io.h"
#include "qkd/data/shuffle.h"

namespace qkd::data {

namespace {
constexpr int64_t kCursorVersion = 1;
constexpr uint64_t kMixingStream = 0xDA7A;  // sub-stream id of the source-choice RNG

// Fails unless cursor[key] equals `expected`, naming both values.
void require_same(const nlohmann::json& cursor, const char* key, const nlohmann::json& expected) {
  if (!cursor.contains(key)) fail("data cursor", std::string("missing '") + key + "'");
  if (cursor[key] != expected) {
    fail("data cursor", std::string(key) + " " + json_excerpt(cursor[key]) + " does not match the data config's " +
                            json_excerpt(expected));
  }
}
}  // namespace

int64_t cursor_integer(const nlohmann::json& cursor, const char* key) {
  const auto it = cursor.find(key);
  if (it == cursor.end() || !it->is_number_integer() || it->get<int64_t>() < 0) {
    fail("data cursor", std::string("missing or invalid '") + key + "'");
  }
  return it->get<int64_t>();
}

DataStream::DataStream(const DataConfig& config, const qkd::tokenizer::Tokenizer* tokenizer) : config_(config) {
  if (config_.sources.empty()) fail("data.sources", "no data sources configured");
  if (config_.seq_len <= 0) fail("data.seq_len", "must be positive");
  if (config_.shuffle_buffer <= 0) fail("data.shuffle_buffer", "must be positive");
  double total = 0;
  for (size_t i = 0; i < config_.sources.size(); ++i) {
    const auto& source = config_.sources[i];
    if (!(source.weight > 0)) fail("data.sources[" + std::to_string(i) + "].weight", "must be positive");
    const auto format = resolve_source_format(source);
    formats_.push_back(format);
    if (is_token_file_format(format)) {
      // Token files carry no document boundaries but the BOS ids they store.
      const int64_t bos_id = tokenizer ? tokenizer->special().bos : -1;
      if (config_.document_mask && bos_id < 0)
        fail("data.document_mask", "token file '" + source.path + "' needs a tokenizer to know its BOS id");
      sources_.push_back(make_token_file_window_source(source, format, config_, i, bos_id));
    } else {
      if (!tokenizer) fail(source.path, "a " + source_formats().name(format) + " source needs a tokenizer");
      sources_.push_back(make_text_window_source(source, format, config_, i, *tokenizer));
    }
    total += source.weight;
    cumulative_weights_.push_back(total);
  }
  rng_state_ = derive_seed(config_.seed, kMixingStream);
}

DataStream::~DataStream() = default;
DataStream::DataStream(DataStream&&) noexcept = default;
DataStream& DataStream::operator=(DataStream&&) noexcept = default;

size_t DataStream::choose_source() {
  const double pick = random_unit(rng_state_) * cumulative_weights_.back();
  for (size_t i = 0; i + 1 < cumulative_weights_.size(); ++i) {
    if (pick < cumulative_weights_[i]) return i;
  }
  return cumulative_weights_.size() - 1;
}

void DataStream::next_window(int64_t* ids, uint8_t* marks) {
  sources_[choose_source()]->next_window(ids, marks);
  ++windows_;
}

TokenBatch DataStream::next_marked_batch(int64_t batch_size) {
  if (batch_size <= 0) fail("batch_size", "must be positive, got " + std::to_string(batch_size));
  TokenBatch batch{torch::empty({batch_size, config_.seq_len}, torch::kInt64),
                   torch::empty({batch_size, config_.seq_len}, torch::kUInt8)};
  int64_t* ids = batch.input_ids.data_ptr<int64_t>();
  uint8_t* marks = batch.marks.data_ptr<uint8_t>();
  for (int64_t row = 0; row < batch_size; ++row) next_window(ids + row * config_.seq_len, marks + row * config_.seq_len);
  return batch;
}

torch::Tensor DataStream::next_batch(int64_t batch_size) { return next_marked_batch(batch_size).input_ids; }

nlohmann::json DataStream::cursor() const {
  nlohmann::json sources = nlohmann::json::array();
  for (size_t i = 0; i < sources_.size(); ++i) {
    sources.push_back(
        {{"path", config_.sources[i].path}, {"format", source_formats().name(formats_[i])}, {"state", sources_[i]->cursor()}});
  }
  return {{"version", kCursorVersion},
          {"seq_len", config_.seq_len},
          {"seed", config_.seed},
          {"shuffle", config_.shuffle},
          {"shuffle_buffer", config_.shuffle_buffer},
          {"rng", rng_state_},
          {"windows", windows_},
          {"sources", sources}};
}

void DataStream::restore(const nlohmann::json& cursor) {
  if (!cursor.is_object()) fail("data cursor", "expected an object, got " + json_excerpt(cursor));
  require_same(cursor, "version", kCursorVersion);
  require_same(cursor, "seq_len", config_.seq_len);
  require_same(cursor, "seed", config_.seed);
  require_same(cursor, "shuffle", config_.shuffle);
  require_same(cursor, "shuffle_buffer", config_.shuffle_buffer);
  const auto& sources = cursor.contains("sources") ? cursor["sources"] : nlohmann::json();
  if (!sources.is_array() || sources.size() != sources_.size()) {
    fail("data cursor", "has " + std::to_string(sources.is_array() ? sources.size() : 0) +
                            " sources, the data config " + std::to_string(sources_.size()));
  }
  for (size_t i = 0; i < sources_.size(); ++i) {
    require_same(sources[i], "path", config_.sources[i].path);
    require_same(sources[i], "format", source_formats().name(formats_[i]));
    if (!sources[i].contains("state")) fail("data cursor", "source '" + config_.sources[i].path + "' has no state");
  }
  if (!cursor.contains("rng") || !cursor["rng"].is_number_unsigned()) fail("data cursor", "missing or invalid 'rng'");
  for (size_t i = 0; i < sources_.size(); ++i) sources_[i]->restore(sources[i]["state"]);
  rng_state_ = cursor["rng"].get<uint64_t>();
  windows_ = cursor_integer(cursor, "windows");
}

DataStats DataStream::stats() const {
  DataStats s;
  s.windows = windows_;
  for (const auto& source : sources_) s.sources.push_back(source->stats());
  return s;
}

}  // namespace qkd::data
