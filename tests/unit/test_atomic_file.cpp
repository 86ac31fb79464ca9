// Atomic writes: complete new content or untouched old content, and never a stray temp file.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include <unistd.h>

#include "qkd/common/atomic_file.h"
#include "qkd/common/output_directory.h"
#include "qkd/common/error.h"
#include "qkd/train/metrics_log.h"
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

namespace {

TEST(AtomicDirectory, FailedFillLeavesThePreviousDirectoryAndNoTemporary) {
  const auto root = qkd::test::scratch_dir("atomic-dir");
  const auto dir = root + "/student";
  qkd::write_directory_atomically(dir, "test-output", [](const std::string& temp) { std::ofstream(temp + "/a.txt") << "old"; });
  EXPECT_THROW(qkd::write_directory_atomically(dir, "test-output",
                                               [](const std::string& temp) {
                                                 std::ofstream(temp + "/a.txt") << "new";
                                                 throw qkd::Error("killed half way");
                                               }),
               qkd::Error);
  EXPECT_EQ(read_text(dir + "/a.txt"), "old");
  EXPECT_EQ(entries(root), std::vector<std::string>{"student"});
  qkd::write_directory_atomically(dir, "test-output", [](const std::string& temp) { std::ofstream(temp + "/b.txt") << "new"; });
  EXPECT_EQ(entries(dir), (std::vector<std::string>{".qkd-train-output.json", "b.txt"}));  // replaced whole, not merged
  EXPECT_EQ(entries(root), std::vector<std::string>{"student"});
}

// An output directory is created fresh, or replaced when it is this program's own output of the same
// kind: never a file, a device, a symbolic link, a directory of other files or another kind's output.
TEST(AtomicDirectory, OnlyOwnOutputsOfTheSameKindAreReplaced) {
  const auto root = qkd::test::scratch_dir("claim");
  const auto fill = [](const std::string& temp) { std::ofstream(temp + "/model.safetensors") << "weights"; };
  std::ofstream(root + "/file") << "a user's file";
  fs::create_directories(root + "/foreign");
  std::ofstream(root + "/foreign/notes.txt") << "keep";
  fs::create_directories(root + "/empty");
  fs::create_symlink(root + "/empty", root + "/link");
  qkd::write_directory_atomically(root + "/other-kind", "export-hf", fill);
  for (const auto& [name, part] : std::vector<std::pair<std::string, std::string>>{
           {"file", "not a directory"}, {"foreign", "did not write"}, {"link", "symbolic link"},
           {"other-kind", "export-hf"}})
    qkd::test::expect_error([&] { qkd::write_directory_atomically(root + "/" + name, "student", fill); },
                            {root + "/" + name, part});
  EXPECT_EQ(read_text(root + "/file"), "a user's file");
  EXPECT_EQ(read_text(root + "/foreign/notes.txt"), "keep");
  qkd::test::expect_error([] { qkd::write_directory_atomically("/dev/full", "student", [](const std::string&) {}); },
                          {"/dev/full", "not a directory"});
  qkd::write_directory_atomically(root + "/empty", "student", fill);  // an empty directory is free to take
  qkd::write_directory_atomically(root + "/empty", "student", fill);  // and then its own output
  EXPECT_TRUE(fs::exists(root + "/empty/model.safetensors"));
  qkd::test::expect_error([&] { qkd::require_apart(root + "/empty", "--out", root + "/empty", "--model"); },
                          {"--out", "replace what the command reads"});
  qkd::test::expect_error([&] { qkd::require_apart(root, "--out", root + "/empty", "--model"); }, "--out");
  qkd::require_apart(root + "/empty/sub", "--out", root + "/empty", "--model");  // inside an input: nothing replaced
}

TEST(AtomicDirectory, StaleTemporariesOfDeadProcessesAreRemovedAndLiveOnesKept) {
  const auto root = qkd::test::scratch_dir("stale");
  // Above Linux's largest pid_max (2^22): no live process can own it.
  fs::create_directories(root + "/.step-00000004.qkd-tmp-4194305");
  std::ofstream(root + "/.config.json.qkd-tmp-4194305-0") << "x";
  fs::create_directories(root + "/.student.qkd-tmp-" + std::to_string(::getpid()));
  fs::create_directories(root + "/step-00000002");
  // A user's own files whose names merely look like temporaries of a dead process stay.
  std::ofstream(root + "/notes.tmp-4000001") << "mine";
  std::ofstream(root + "/notes.qkd-tmp-4000001") << "mine too";
  EXPECT_EQ(qkd::remove_stale_temporaries(root), 2);
  EXPECT_EQ(entries(root), (std::vector<std::string>{".student.qkd-tmp-" + std::to_string(::getpid()),
                                                     "notes.qkd-tmp-4000001", "notes.tmp-4000001", "step-00000002"}));
}

TEST(AtomicFile, DeviceFilesAndSymlinksAreNeverReplaced) {
  const auto root = qkd::test::scratch_dir("no-replace");
  std::ofstream(root + "/real") << "keep";
  fs::create_symlink(root + "/real", root + "/link");
  EXPECT_THROW(qkd::write_text_atomically(root + "/link", "new"), qkd::Error);
  EXPECT_TRUE(fs::is_symlink(root + "/link"));
  EXPECT_EQ(read_text(root + "/real"), "keep");
  EXPECT_THROW(qkd::require_replaceable_output("/dev/null"), qkd::Error);
  fs::create_directories(root + "/dir");
  EXPECT_THROW(qkd::write_text_atomically(root + "/dir", "new"), qkd::Error);
}

// /dev/full fails every write with ENOSPC: the writer must say so, not drop the record.
TEST(JsonlWriter, FullDiskEndsTheRunWithAnErrorNamingTheFile) {
  qkd::train::JsonlWriter writer("/dev/full", 0);
  try {
    writer.write({{"step", 1}, {"loss", 0.5}});
    FAIL() << "a failed write passed silently";
  } catch (const qkd::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/dev/full"), std::string::npos) << e.what();
  }
}

}  // namespace
