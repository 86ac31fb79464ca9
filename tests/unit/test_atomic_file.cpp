// Atomic writes: complete new content or untouched old content, and never a stray temp file.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include "qkd/common/atomic_file.h"
#include "qkd/common/error.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

TEST(AtomicFile, WritesNewFileAndReplacesExistingOne) {
  const auto dir = qkd::test::scratch_dir("atomic-write");
  const auto path = dir + "/out.txt";
  qkd::write_file_atomically(path, [](std::ostream& out) { out << "first"; });
  EXPECT_EQ(read_text(path), "first");
  qkd::write_text_atomically(path, "second, longer content");
  EXPECT_EQ(read_text(path), "second, longer content");
  EXPECT_EQ(entries(dir), std::vector<std::string>({"out.txt"}));
}

TEST(AtomicFile, LargeBinaryContentArrivesIntact) {
  const auto path = qkd::test::scratch_dir("atomic-large") + "/big.bin";
  std::string blob(3 * 65536 + 17, '\0');  // larger than the stream buffer, odd size
  for (size_t i = 0; i < blob.size(); ++i) blob[i] = static_cast<char>((i * 131) % 251);
  qkd::write_file_atomically(path, [&](std::ostream& out) {
    out.write(blob.data(), 5);  // a small write first, then one that bypasses the buffer
    out.write(blob.data() + 5, static_cast<std::streamsize>(blob.size() - 5));
  });
  EXPECT_EQ(read_text(path), blob);
}

TEST(AtomicFile, ThrowingWriterKeepsOldFileAndLeavesNoTempFile) {
  const auto dir = qkd::test::scratch_dir("atomic-throw");
  const auto path = dir + "/keep.txt";
  qkd::write_text_atomically(path, "old content");
  try {
    qkd::write_file_atomically(path, [](std::ostream& out) {
      out << std::string(200000, 'x');  // some bytes already reached the temp file
      throw std::runtime_error("disk on fire");
    });
    FAIL() << "expected qkd::Error";
  } catch (const qkd::Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find("disk on fire"), std::string::npos) << message;
  }
  EXPECT_EQ(read_text(path), "old content");
  EXPECT_EQ(entries(dir), std::vector<std::string>({"keep.txt"}));
}

TEST(AtomicFile, QkdErrorFromWriterIsNotPrefixedTwice) {
  const auto dir = qkd::test::scratch_dir("atomic-qkd");
  const auto path = dir + "/x.json";
  try {
    qkd::write_file_atomically(path, [&](std::ostream&) { qkd::fail(path, "field: bad"); });
    FAIL() << "expected qkd::Error";
  } catch (const qkd::Error& e) {
    EXPECT_EQ(std::string(e.what()), path + ": field: bad");
  }
  EXPECT_TRUE(entries(dir).empty());
}

TEST(AtomicFile, MissingDirectoryGivesErrorNamingThePath) {
  const auto path = qkd::test::scratch_dir("atomic-nodir") + "/no/such/dir/f.txt";
  try {
    qkd::write_text_atomically(path, "x");
    FAIL() << "expected qkd::Error";
  } catch (const qkd::Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  EXPECT_THROW(qkd::sync_directory(path), qkd::Error);
}

TEST(AtomicFile, RelativePathInCurrentDirectory) {
  const auto dir = qkd::test::scratch_dir("atomic-rel");
  const auto old = fs::current_path();
  fs::current_path(dir);
  EXPECT_NO_THROW(qkd::write_text_atomically("plain.txt", "here"));
  fs::current_path(old);
  EXPECT_EQ(read_text(dir + "/plain.txt"), "here");
}
