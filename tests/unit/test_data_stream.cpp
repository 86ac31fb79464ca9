// DataStream over the KJV corpus: token files, mixing, determinism, resume exactness, bounded memory.
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "qkd/common/error.h"
#include "qkd/data/data_stream.h"
#include "qkd/data/shuffle.h"
#include "qkd/data/token_file.h"
#include "test_support.h"

using qkd::data::DataConfig;
using qkd::data::DataStream;
using qkd::tokenizer::Tokenizer;

namespace {

std::string kjv(const std::string& name) { return qkd::test::repo_path("assets/data/kjv/" + name); }

const Tokenizer& kjv_tokenizer() {
  static const Tokenizer tok(kjv("tokenizer.model"));
  return tok;
}

DataConfig config_for(std::vector<qkd::data::SourceConfig> sources, int64_t seq_len, uint64_t seed = 1) {
  DataConfig config;
  config.sources = std::move(sources);
  config.seq_len = seq_len;
  config.seed = seed;
  config.shuffle_buffer = 8;
  return config;
}

std::vector<torch::Tensor> batches(DataStream& stream, int count, int64_t batch_size = 4) {
  std::vector<torch::Tensor> out;
  for (int i = 0; i < count; ++i) out.push_back(stream.next_batch(batch_size));
  return out;
}

bool same_batches(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!torch::equal(a[i], b[i])) return false;
  }
  return true;
}

// Takes `before` batches, saves the cursor (through its JSON text, as a checkpoint would), builds a
// fresh stream, restores it and checks the next `after` batches equal the uninterrupted stream's.
void expect_exact_resume(const DataConfig& config, int before, int after) {
  DataStream uninterrupted(config, &kjv_tokenizer());
  batches(uninterrupted, before);
  const auto saved = nlohmann::json::parse(uninterrupted.cursor().dump());
  const auto expected = batches(uninterrupted, after);
  DataStream resumed(config, &kjv_tokenizer());
  resumed.restore(saved);
  EXPECT_TRUE(same_batches(batches(resumed, after), expected));
  EXPECT_EQ(resumed.stats().windows, uninterrupted.stats().windows);
}

}  // namespace

TEST(DataTokenFile, UnshuffledWindowsFollowTheFile) {
  auto config = config_for({{kjv("kjv-val.u16")}}, 256);
  config.shuffle = false;
  DataStream stream(config, nullptr);
  const auto file = qkd::data::TokenFile::open(kjv("kjv-val.u16"));
  ASSERT_EQ(file.size(), 47193);
  const auto batch = stream.next_batch(3);
  EXPECT_TRUE(torch::equal(batch.reshape({-1}), file.slice(0, 3 * 256)));
  batches(stream, 180 / 4 + 1, 4);  // 47193 / 256 = 184 windows per epoch: wrap around
  EXPECT_EQ(stream.stats().sources[0].epoch, 1);
}

TEST(DataTokenFile, ShuffledEpochVisitsEveryWindowOnce) {
  DataStream stream(config_for({{kjv("kjv-val.u16")}}, 512), nullptr);
  const auto file = qkd::data::TokenFile::open(kjv("kjv-val.u16"));
  // Window starts are offset + k * 512; the first token of each window identifies it with its
  // neighbours' context, so compare whole windows against the file.
  const auto batch = stream.next_batch(91);  // (47193 - offset) / 512 >= 91 windows in epoch 0
  std::set<std::vector<int64_t>> seen;
  for (int64_t r = 0; r < 91; ++r) {
    const auto row = batch[r];
    seen.insert(std::vector<int64_t>(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + 512));
  }
  EXPECT_EQ(seen.size(), 91u);  // no window twice within an epoch
  EXPECT_FALSE(torch::equal(batch[0], file.slice(0, 512)) && torch::equal(batch[1], file.slice(512, 512)));
}

TEST(DataShuffle, IndexPermutationIsABijection) {
  for (uint64_t n : {1ull, 2ull, 5ull, 184ull, 1000ull}) {
    qkd::data::IndexPermutation perm(n, 42);
    std::set<uint64_t> images;
    for (uint64_t i = 0; i < n; ++i) images.insert(perm(i));
    EXPECT_EQ(images.size(), n);
    EXPECT_LT(*images.rbegin(), n);
  }
}

TEST(DataStream, SameSeedSameBatchesOtherSeedOther) {
  const std::vector<qkd::data::SourceConfig> sources{{kjv("kjv-val.u16")}, {kjv("kjv-val.jsonl")}};
  DataStream a(config_for(sources, 64, 5), &kjv_tokenizer());
  DataStream b(config_for(sources, 64, 5), &kjv_tokenizer());
  DataStream c(config_for(sources, 64, 6), &kjv_tokenizer());
  const auto from_a = batches(a, 10);
  EXPECT_TRUE(same_batches(from_a, batches(b, 10)));
  EXPECT_FALSE(same_batches(from_a, batches(c, 10)));
}

TEST(DataStream, MixingFollowsTheWeights) {
  DataStream stream(config_for({{kjv("kjv-val.u16"), qkd::data::SourceFormat::automatic, 3.0},
                                {kjv("kjv-val.jsonl"), qkd::data::SourceFormat::automatic, 1.0}},
                               16),
                    &kjv_tokenizer());
  batches(stream, 1000, 4);
  const auto stats = stream.stats();
  EXPECT_EQ(stats.windows, 4000);
  EXPECT_EQ(stats.sources[0].windows + stats.sources[1].windows, 4000);
  const double share = static_cast<double>(stats.sources[0].windows) / 4000.0;
  EXPECT_NEAR(share, 0.75, 0.03);  // binomial sd ~0.007
}

TEST(DataResume, TokenFileContinuesExactly) {
  expect_exact_resume(config_for({{kjv("kjv-val.u16")}}, 128), 7, 60);  // crosses an epoch boundary
  auto unshuffled = config_for({{kjv("kjv-val.u16")}}, 128);
  unshuffled.shuffle = false;
  expect_exact_resume(unshuffled, 5, 10);
}

TEST(DataResume, TextSourceWithShuffleBufferContinuesExactly) {
  // Saves in the middle of a shuffle block (7 * 4 = 28 windows, blocks of 8) and mid-document.
  expect_exact_resume(config_for({{kjv("kjv-val.jsonl")}}, 96), 7, 12);
  expect_exact_resume(config_for({{kjv("kjv-val.jsonl")}}, 96), 2, 3);  // exactly at a block edge
  expect_exact_resume(config_for({{kjv("kjv-val.jsonl")}}, 96), 0, 3);  // before the first block
}

TEST(DataResume, MixedSourcesAcrossEpochsContinueExactly) {
  auto config = config_for({{kjv("kjv-val.u16"), qkd::data::SourceFormat::automatic, 1.0},
                            {kjv("kjv-val.jsonl"), qkd::data::SourceFormat::automatic, 2.0},
                            {qkd::test::repo_path("tests/fixtures/data/sharegpt.jsonl")}},
                           128);
  // The tiny sharegpt source wraps many times; kjv-val.jsonl (~50k tokens) wraps after ~400 windows.
  expect_exact_resume(config, 200, 60);
}

TEST(DataResume, CursorForAnotherConfigIsRejected) {
  DataStream a(config_for({{kjv("kjv-val.u16")}}, 128), nullptr);
  DataStream b(config_for({{kjv("kjv-val.u16")}}, 64), nullptr);
  try {
    b.restore(a.cursor());
    FAIL() << "restore accepted a cursor for seq_len 128";
  } catch (const qkd::Error& e) {
    EXPECT_EQ(std::string(e.what()), "data cursor: seq_len 128 does not match the data config's 64");
  }
}

// The train split as JSONL text, one chapter per line: kjv-train.u16 decoded chapter by chapter (each
// stored as <s> tokens </s>), so the repository ships the split once.
std::string write_train_jsonl() {
  const auto tokens = qkd::data::TokenFile::open(kjv("kjv-train.u16"));
  const auto& special = kjv_tokenizer().special();
  const auto path = qkd::test::scratch_dir("train-jsonl") + "/kjv-train.jsonl";
  std::ofstream out(path);
  std::vector<int64_t> chapter;
  int64_t chapters = 0;
  for (int64_t i = 0; i < tokens.size(); ++i) {
    const int64_t id = tokens.at(i);
    if (id == special.bos) continue;
    if (id != special.eos) {
      chapter.push_back(id);
      continue;
    }
    out << nlohmann::json{{"id", "chapter-" + std::to_string(chapters++)}, {"text", kjv_tokenizer().decode(chapter)}}.dump()
        << "\n";
    chapter.clear();
  }
  EXPECT_EQ(chapters, 1070);
  return path;
}

TEST(DataMemory, StreamingTheTrainJsonlKeepsBuffersBounded) {
  // kjv-train.jsonl is ~912k tokens; stream through all of it (plus a bit) and check that the
  // source never held more than the shuffle buffer plus one document.
  auto config = config_for({{write_train_jsonl()}}, 256);
  config.shuffle_buffer = 16;
  DataStream stream(config, &kjv_tokenizer());
  while (stream.stats().sources[0].epoch < 1) stream.next_batch(64);
  const auto s = stream.stats().sources[0];
  EXPECT_GE(s.documents, 1070 + 1);  // every chapter once, plus the construction-time peek
  EXPECT_EQ(s.malformed, 0);
  // A token covers at least one byte of its line, so one document is bounded by the longest line.
  EXPECT_LE(s.peak_buffered_tokens, 16 * 256 + s.peak_line_bytes + 2);
  EXPECT_LT(s.peak_line_bytes, 20000);
  EXPECT_LT(s.peak_buffered_tokens * 8, 3773898 / 4);  // far from holding the file
}
