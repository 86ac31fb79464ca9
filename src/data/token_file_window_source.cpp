#include <algorithm>
#include <cstring>

#include "qkd/common/error.h"
#include "qkd/data/shuffle.h"
#include "qkd/data/token_file.h"
#include "qkd/data/window_source.h"

namespace qkd::data {

namespace {

class TokenFileWindowSource : public WindowSource {
 public:
  TokenFileWindowSource(const SourceConfig& source, SourceFormat format, const DataConfig& config, size_t index,
                        int64_t bos_id)
      : file_(TokenFile::open(source.path, token_file_width(format))),
        format_(format),
        seq_len_(config.seq_len),
        shuffle_(config.shuffle),
        seed_(config.seed),
        index_(index),
        bos_id_(bos_id) {
    if (file_.size() < seq_len_) {
      fail(source.path, "holds " + std::to_string(file_.size()) + " tokens, fewer than one window (seq_len " +
                            std::to_string(seq_len_) + ")");
    }
    start_epoch(0);
  }

  void next_window(int64_t* out, uint8_t* marks) override {
    if (next_ == window_count_) start_epoch(epoch_ + 1);
    const uint64_t window = shuffle_ ? order_(static_cast<uint64_t>(next_)) : static_cast<uint64_t>(next_);
    ++next_;
    ++windows_;
    const auto tokens =
        file_.slice(offset_ + static_cast<int64_t>(window) * seq_len_, seq_len_).to(torch::kInt64).contiguous();
    std::memcpy(out, tokens.data_ptr<int64_t>(), static_cast<size_t>(seq_len_) * sizeof(int64_t));
    for (int64_t i = 0; i < seq_len_; ++i) {
      const bool bos = out[i] == bos_id_;
      marks[i] = bos ? (kDocumentStart | kPromptToken) : 0;
    }
  }

  nlohmann::json cursor() const override { return {{"epoch", epoch_}, {"next", next_}, {"windows", windows_}}; }

  void restore(const nlohmann::json& cursor) override {
    start_epoch(cursor_integer(cursor, "epoch"));
    const int64_t next = cursor_integer(cursor, "next");
    if (next > window_count_) {
      fail("data cursor", "source '" + file_.path() + "': window " + std::to_string(next) + " of " +
                              std::to_string(window_count_) + " (file changed since the checkpoint?)");
    }
    next_ = next;
    windows_ = cursor_integer(cursor, "windows");
  }

  SourceStats stats() const override {
    SourceStats s;
    s.path = file_.path();
    s.format = format_;
    s.windows = windows_;
    s.epoch = epoch_;
    return s;  // memory-mapped: nothing is buffered
  }

 private:
  // Everything about an epoch follows from (seed, source index, epoch), so a cursor needs only the
  // epoch number and the position within it.
  void start_epoch(int64_t epoch) {
    epoch_ = epoch;
    next_ = 0;
    offset_ = 0;
    if (shuffle_) {
      uint64_t state = derive_seed(seed_, index_, static_cast<uint64_t>(epoch));
      // Shifting the window grid lets every token boundary appear at a window edge over epochs.
      offset_ = static_cast<int64_t>(
          random_below(state, static_cast<uint64_t>(std::min(seq_len_, file_.size() - seq_len_ + 1))));
      window_count_ = (file_.size() - offset_) / seq_len_;
      order_ = IndexPermutation(static_cast<uint64_t>(window_count_), next_random(state));
    } else {
      window_count_ = file_.size() / seq_len_;
    }
  }

  TokenFile file_;
  SourceFormat format_;
  int64_t seq_len_;
  bool shuffle_;
  uint64_t seed_;
  size_t index_;
  int64_t bos_id_;
  int64_t epoch_ = 0, next_ = 0, offset_ = 0, window_count_ = 0, windows_ = 0;
  IndexPermutation order_;
};

}  // namespace

std::unique_ptr<WindowSource> make_token_file_window_source(const SourceConfig& source, SourceFormat format,
                                                            const DataConfig& config, size_t source_index,
                                                            int64_t bos_id) {
  return std::make_unique<TokenFileWindowSource>(source, format, config, source_index, bos_id);
}

}  // namespace qkd::data
