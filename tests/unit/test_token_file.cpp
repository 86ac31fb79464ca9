// Memory-mapped token files: the KJV validation split, and clear errors for broken files.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>

#include "qkd/common/error.h"
#include "qkd/data/token_file.h"
#include "test_support.h"

using qkd::data::TokenFile;

namespace {

using qkd::test::expect_error;

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string kjv_val() { return qkd::test::kjv_val_tokens(); }

}  // namespace

TEST(TokenFile, ReadsKjvValidationSplit) {
  const auto file = TokenFile::open(kjv_val());
  EXPECT_EQ(file.size(), 47193);
  EXPECT_EQ(file.width(), 2);
  EXPECT_EQ(file.path(), kjv_val());
  EXPECT_EQ(file.at(0), 1);  // <s>
  const auto head = file.slice(0, 4);
  EXPECT_EQ(head.scalar_type(), torch::kInt64);
  // First ids, read independently with `od -tu2`.
  EXPECT_TRUE(torch::equal(head, torch::tensor({1, 300, 392, 2832}, torch::kInt64)));
  const auto tail = file.slice(file.size() - 3, 3);
  EXPECT_EQ(tail[2].item<int64_t>(), file.at(file.size() - 1));
  EXPECT_EQ(file.slice(100, 0).numel(), 0);
  const auto all = file.slice(0, file.size());
  EXPECT_LT(all.max().item<int64_t>(), 4096);  // the KJV tokenizer's vocabulary
  EXPECT_GE(all.min().item<int64_t>(), 0);
}

TEST(TokenFile, OutOfRangeAccessNamesTheFile) {
  const auto file = TokenFile::open(kjv_val());
  expect_error([&] { file.at(47193); }, {kjv_val(), "47193", "out of range"});
  expect_error([&] { file.at(-1); }, {kjv_val(), "out of range"});
  expect_error([&] { file.slice(47190, 4); }, {kjv_val(), "out of range"});
  expect_error([&] { file.slice(-1, 2); }, {kjv_val(), "out of range"});
  expect_error([&] { file.slice(5, std::numeric_limits<int64_t>::max()); }, {kjv_val(), "out of range"});
}

TEST(TokenFile, U32FilesHoldIdsAbove65535) {
  const auto path = qkd::test::scratch_dir("tok-u32") + "/ids.u32";
  write_bytes(path, std::string("\x01\x00\x00\x00\xa0\x86\x01\x00", 8));  // 1, 100000
  const auto file = TokenFile::open(path);
  EXPECT_EQ(file.width(), 4);
  EXPECT_EQ(file.size(), 2);
  EXPECT_TRUE(torch::equal(file.slice(0, 2), torch::tensor({1, 100000}, torch::kInt64)));
}

TEST(TokenFile, ExplicitWidthOverridesMissingExtension) {
  const auto path = qkd::test::scratch_dir("tok-bin") + "/ids.bin";
  write_bytes(path, std::string("\x02\x00\xff\xff", 4));
  expect_error([&] { TokenFile::open(path); }, {path, "extension"});
  const auto file = TokenFile::open(path, 2);
  EXPECT_EQ(file.at(1), 65535);  // unsigned, not -1
  expect_error([&] { TokenFile::open(path, 3); }, {path, "2 or 4"});
}

TEST(TokenFile, OddByteCountEmptyAndMissingFilesAreErrors) {
  const auto dir = qkd::test::scratch_dir("tok-bad");
  write_bytes(dir + "/odd.u16", "abc");
  expect_error([&] { TokenFile::open(dir + "/odd.u16"); }, {dir + "/odd.u16", "odd byte count 3"});
  write_bytes(dir + "/odd.u32", "abcdef");
  expect_error([&] { TokenFile::open(dir + "/odd.u32"); }, {dir + "/odd.u32", "odd byte count 6"});
  write_bytes(dir + "/empty.u16", "");
  expect_error([&] { TokenFile::open(dir + "/empty.u16"); }, {dir + "/empty.u16", "empty"});
  expect_error([&] { TokenFile::open(dir + "/missing.u16"); }, {dir + "/missing.u16", "No such file"});
}
