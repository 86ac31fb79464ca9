#include <algorithm>
#include <numeric>

#include "qkd/common/error.h"
#include "qkd/data/document_source.h"
#include "qkd/data/shuffle.h"
#include "qkd/data/window_source.h"

namespace qkd::data {

namespace {

class TextWindowSource : public WindowSource {
 public:
  TextWindowSource(const SourceConfig& source, SourceFormat format, const DataConfig& config, size_t index,
                   const qkd::tokenizer::Tokenizer& tokenizer)
      : path_(source.path),
        format_(format),
        seq_len_(config.seq_len),
        block_windows_(config.shuffle ? config.shuffle_buffer : 1),
        shuffle_(config.shuffle),
        seed_(config.seed),
        index_(index),
        documents_(open_document_source(source, format, config, tokenizer)) {
    ensure_not_empty();
  }

  void next_window(int64_t* out, uint8_t* marks) override {
    if (emitted_ == static_cast<int64_t>(order_.size())) fill_block();
    const int64_t slot = order_[emitted_++];
    std::copy_n(block_.begin() + slot * seq_len_, seq_len_, out);
    std::copy_n(block_marks_.begin() + slot * seq_len_, seq_len_, marks);
    ++windows_;
  }

  nlohmann::json cursor() const override {
    return {{"blocks_filled", blocks_filled_},
            {"emitted", emitted_},
            {"windows", windows_},
            {"block_start", blocks_filled_ > 0 ? block_start_ : packer_cursor()}};
  }

  void restore(const nlohmann::json& cursor) override {
    const int64_t blocks = cursor_integer(cursor, "blocks_filled");
    const int64_t emitted = cursor_integer(cursor, "emitted");
    if (!cursor.contains("block_start") || !cursor["block_start"].is_object()) {
      fail("data cursor", "source '" + path_ + "' has no 'block_start' object");
    }
    restore_packer(cursor["block_start"]);
    block_.clear();
    order_.clear();
    emitted_ = 0;
    blocks_filled_ = blocks;
    if (blocks > 0) {
      blocks_filled_ = blocks - 1;
      fill_block();  // re-reads the block in progress; same content and order as before the save
      if (emitted > static_cast<int64_t>(order_.size())) {
        fail("data cursor", "source '" + path_ + "': emitted " + std::to_string(emitted) + " exceeds the block");
      }
      emitted_ = emitted;
    }
    windows_ = cursor_integer(cursor, "windows");
  }

  SourceStats stats() const override {
    SourceStats s;
    s.path = path_;
    s.format = format_;
    s.windows = windows_;
    s.epoch = epoch_;
    s.documents = documents_->counters().documents;
    s.malformed = documents_->counters().malformed;
    s.buffered_tokens = buffered_tokens();
    s.peak_buffered_tokens = peak_buffered_tokens_;
    s.peak_line_bytes = documents_->counters().peak_line_bytes;
    return s;
  }

 private:
  // Fails before any compute when the file holds nothing to train on; reads one document only.
  void ensure_not_empty() {
    std::vector<int64_t> probe;
    std::vector<uint8_t> prompt;
    if (!documents_->next_document(probe, prompt)) {
      fail(path_, "no documents to train on (empty file, or every record malformed or empty)");
    }
    documents_->seek(SourcePosition{});
  }

  int64_t buffered_tokens() const { return static_cast<int64_t>(block_.size() + doc_.size()); }

  void fill_block() {
    block_start_ = packer_cursor();
    block_.resize(static_cast<size_t>(block_windows_ * seq_len_));
    block_marks_.resize(block_.size());
    for (int64_t w = 0; w < block_windows_; ++w)
      take_window(block_.data() + w * seq_len_, block_marks_.data() + w * seq_len_);
    order_.resize(static_cast<size_t>(block_windows_));
    std::iota(order_.begin(), order_.end(), 0);
    if (shuffle_) {
      uint64_t state = derive_seed(seed_, index_, static_cast<uint64_t>(blocks_filled_));
      shuffle_in_place(order_, state);
    }
    ++blocks_filled_;
    emitted_ = 0;
    peak_buffered_tokens_ = std::max(peak_buffered_tokens_, buffered_tokens());
  }

  // Packing: the current document is consumed from doc_pos_; a new one is read when it runs out.
  void take_window(int64_t* out, uint8_t* marks) {
    int64_t filled = 0;
    while (filled < seq_len_) {
      if (doc_pos_ == static_cast<int64_t>(doc_.size())) load_next_document();
      const int64_t n = std::min<int64_t>(seq_len_ - filled, static_cast<int64_t>(doc_.size()) - doc_pos_);
      std::copy_n(doc_.begin() + doc_pos_, n, out + filled);
      for (int64_t i = 0; i < n; ++i) marks[filled + i] = doc_prompt_[doc_pos_ + i] ? kPromptToken : 0;
      if (doc_pos_ == 0) marks[filled] |= kDocumentStart;
      doc_pos_ += n;
      filled += n;
    }
  }

  void load_next_document() {
    doc_start_ = documents_->position();
    if (!documents_->next_document(doc_, doc_prompt_)) {
      ++epoch_;  // end of file: the next epoch reads it again from the start
      doc_start_ = SourcePosition{};
      documents_->seek(doc_start_);
      if (!documents_->next_document(doc_, doc_prompt_)) fail(path_, "data source yields no documents any more (file changed?)");
    }
    doc_pos_ = 0;
    peak_buffered_tokens_ = std::max(peak_buffered_tokens_, buffered_tokens());
  }

  // Where the current document starts and how much of it is used: the document is re-read and
  // re-tokenized on restore rather than stored, which keeps cursors small.
  nlohmann::json packer_cursor() const {
    return {{"offset", doc_start_.offset}, {"line", doc_start_.line}, {"doc_pos", doc_pos_}, {"epoch", epoch_}};
  }

  void restore_packer(const nlohmann::json& state) {
    doc_start_ = SourcePosition{cursor_integer(state, "offset"), cursor_integer(state, "line")};
    doc_pos_ = cursor_integer(state, "doc_pos");
    epoch_ = cursor_integer(state, "epoch");
    documents_->seek(doc_start_);
    doc_.clear();
    doc_prompt_.clear();
    if (doc_pos_ == 0) return;  // the document at doc_start_ is read when first needed
    if (!documents_->next_document(doc_, doc_prompt_) || doc_pos_ > static_cast<int64_t>(doc_.size())) {
      fail("data cursor", "source '" + path_ + "' does not match the file (changed since the checkpoint?)");
    }
  }

  std::string path_;
  SourceFormat format_;
  int64_t seq_len_, block_windows_;
  bool shuffle_;
  uint64_t seed_;
  size_t index_;
  std::unique_ptr<DocumentSource> documents_;
  // packer state
  std::vector<int64_t> doc_;
  std::vector<uint8_t> doc_prompt_;  // per token of doc_: 1 where it is prompt
  int64_t doc_pos_ = 0;
  SourcePosition doc_start_;
  int64_t epoch_ = 0;
  // shuffle block state
  std::vector<int64_t> block_, order_;
  std::vector<uint8_t> block_marks_;  // TokenMark bits of block_
  int64_t emitted_ = 0, blocks_filled_ = 0, windows_ = 0;
  nlohmann::json block_start_;
  int64_t peak_buffered_tokens_ = 0;
};

}  // namespace

std::unique_ptr<WindowSource> make_text_window_source(const SourceConfig& source, SourceFormat format,
                                                      const DataConfig& config, size_t source_index,
                                                      const qkd::tokenizer::Tokenizer& tokenizer) {
  return std::make_unique<TextWindowSource>(source, format, config, source_index, tokenizer);
}

}  // namespace qkd::data
