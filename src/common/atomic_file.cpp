#include "qkd/common/atomic_file.h"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <streambuf>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qkd/common/error.h"
#include "qkd/common/input_file.h"
#include "qkd/common/output_directory.h"

namespace qkd {
namespace {

std::string errno_text(int err) { return std::strerror(err); }

// A buffered std::streambuf over a POSIX file descriptor. std::ofstream cannot fsync and loses errno,
// and durability needs fsync on the very descriptor that was written.
class FdStreamBuf : public std::streambuf {
 public:
  explicit FdStreamBuf(int fd) : fd_(fd), buffer_(1 << 16) { setp(buffer_.data(), buffer_.data() + buffer_.size()); }
  ~FdStreamBuf() override = default;

  int error() const { return error_; }  // errno of the first failed write, 0 if none

 protected:
  int_type overflow(int_type ch) override {
    if (!flush_buffer()) return traits_type::eof();
    if (!traits_type::eq_int_type(ch, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(ch);
      pbump(1);
    }
    return traits_type::not_eof(ch);
  }

  std::streamsize xsputn(const char* data, std::streamsize count) override {
    // Large blocks (tensor data) bypass the buffer to avoid a needless copy.
    if (count >= static_cast<std::streamsize>(buffer_.size())) {
      if (!flush_buffer() || !write_all(data, static_cast<size_t>(count))) return 0;
      return count;
    }
    return std::streambuf::xsputn(data, count);
  }

  int sync() override { return flush_buffer() ? 0 : -1; }

 private:
  bool flush_buffer() {
    const size_t pending = static_cast<size_t>(pptr() - pbase());
    const bool ok = pending == 0 || write_all(pbase(), pending);
    setp(buffer_.data(), buffer_.data() + buffer_.size());
    return ok;
  }

  bool write_all(const char* data, size_t count) {
    if (error_ != 0) return false;
    while (count > 0) {
      const ssize_t n = ::write(fd_, data, count);
      if (n < 0) {
        if (errno == EINTR) continue;
        error_ = errno;
        return false;
      }
      data += n;
      count -= static_cast<size_t>(n);
    }
    return true;
  }

  int fd_;
  std::vector<char> buffer_;
  int error_ = 0;
};

// Temporaries are hidden and tagged (".<name>.qkd-tmp-<pid>[-<n>]"), so that the sweep of a dead
// writer's leftovers can never take a user's own file for one (it deleted "notes.tmp-4000001").
constexpr const char* kTempTag = ".qkd-tmp-";

std::string parent_dir_of(const std::string& path) {
  const auto parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

std::string temp_name(const std::string& path, const std::string& suffix) {
  const auto name = std::filesystem::path(path).filename().string();
  return (std::filesystem::path(parent_dir_of(path)) / ("." + name + kTempTag + std::to_string(::getpid()) + suffix))
      .string();
}

// Unique per process and call, so concurrent writers of the same path never share a temp file.
std::string temp_path_for(const std::string& path) {
  static std::atomic<unsigned> counter{0};
  return temp_name(path, "-" + std::to_string(counter++));
}

// Message of the callback's exception, prefixed with the path unless it already names it.
std::string failure_text(const std::string& path, const std::exception& e) {
  const std::string what = e.what();
  return what.rfind(path + ":", 0) == 0 ? what : path + ": " + what;
}

// Runs the callback and makes the bytes durable; returns an error message, empty on success.
std::string write_and_sync(int fd, const std::string& path, const std::function<void(std::ostream&)>& write) {
  FdStreamBuf buf(fd);
  std::ostream stream(&buf);
  try {
    write(stream);
  } catch (const std::exception& e) {
    return failure_text(path, e);
  } catch (...) {
    return path + ": write aborted by an unknown exception";
  }
  stream.flush();
  if (buf.error() != 0) return path + ": write failed: " + errno_text(buf.error());
  if (!stream) return path + ": write failed: output stream reported an error";
  if (::fsync(fd) != 0) return path + ": fsync failed: " + errno_text(errno);
  return {};
}

}  // namespace

void require_replaceable_output(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (S_ISLNK(st.st_mode)) fail(path, "output path is a symbolic link; refusing to replace it");
    if (!S_ISREG(st.st_mode)) fail(path, "output path exists and is not a regular file; refusing to replace it");
  } else if (errno != ENOENT) {
    fail(path, "cannot inspect output path: " + errno_text(errno));
  }
  const auto dir = parent_dir_of(path);
  if (!std::filesystem::is_directory(dir)) fail(path, "output directory " + dir + " does not exist");
}

void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& write) {
  // The rename would otherwise replace a device file or symlink (as root, /dev/null) with a file.
  require_replaceable_output(path);
  const std::string temp = temp_path_for(path);
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) fail(path, "cannot create temporary file '" + temp + "': " + errno_text(errno));

  std::string problem = write_and_sync(fd, path, write);
  if (::close(fd) != 0 && problem.empty()) problem = path + ": close failed: " + errno_text(errno);
  if (problem.empty() && ::rename(temp.c_str(), path.c_str()) != 0) {
    problem = path + ": cannot rename temporary file into place: " + errno_text(errno);
  }
  if (!problem.empty()) {
    ::unlink(temp.c_str());
    throw Error(problem);
  }
  sync_directory(parent_dir_of(path));
}

namespace {
// Swaps `temp` into `dir`'s place; the old directory ends up at `temp`.
void swap_into_place(const std::string& temp, const std::string& dir) {
  if (!std::filesystem::exists(dir)) {
    if (::rename(temp.c_str(), dir.c_str()) != 0)
      fail(dir, "cannot rename temporary directory into place: " + errno_text(errno));
    return;
  }
  if (::renameat2(AT_FDCWD, temp.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) == 0) return;
  // File systems without RENAME_EXCHANGE: move the old one aside first (dir is briefly absent).
  const auto aside = temp + "-old";
  if (::rename(dir.c_str(), aside.c_str()) != 0)
    fail(dir, "cannot move the previous directory aside: " + errno_text(errno));
  if (::rename(temp.c_str(), dir.c_str()) != 0)
    fail(dir, "cannot rename temporary directory into place: " + errno_text(errno));
  ::rename(aside.c_str(), temp.c_str());
}

// The pid in ".<name>.qkd-tmp-<pid>" or ".<name>.qkd-tmp-<pid>-<n>"; 0 when the name is not one of
// this program's temporaries.
pid_t temporary_owner(const std::string& name) {
  const auto at = name.rfind(kTempTag);
  if (at == std::string::npos || name.empty() || name[0] != '.') return 0;
  const auto digits = name.substr(at + std::strlen(kTempTag));
  const auto dash = digits.find('-');
  const auto pid_text = digits.substr(0, dash);
  if (pid_text.empty() || pid_text.find_first_not_of("0123456789") != std::string::npos || pid_text.size() > 9)
    return 0;
  return static_cast<pid_t>(std::stol(pid_text));
}
}  // namespace

void copy_file_atomically(const std::string& from, const std::string& to) {
  const auto bytes = read_text_file(from);
  write_file_atomically(to, [&](std::ostream& out) { out << bytes; });
}

void write_directory_atomically(const std::string& dir, const std::string& kind,
                                const std::function<void(const std::string& temp_dir)>& fill) {
  claim_output_directory(dir, kind);
  const auto parent = parent_dir_of(dir);
  const auto temp = temp_name(dir, "");
  std::error_code ignored;
  std::filesystem::remove_all(temp, ignored);
  try {
    std::filesystem::create_directories(temp);
    fill(temp);
    write_output_marker(temp, kind);
    sync_directory(temp);
    swap_into_place(temp, dir);
  } catch (...) {
    std::filesystem::remove_all(temp, ignored);
    throw;
  }
  std::filesystem::remove_all(temp, ignored);  // the previous directory, when there was one
  sync_directory(parent);
}

int remove_stale_temporaries(const std::string& dir) {
  int removed = 0;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const pid_t owner = temporary_owner(entry.path().filename().string());
    if (owner <= 0 || owner == ::getpid() || ::kill(owner, 0) == 0 || errno != ESRCH) continue;
    std::error_code ignored;
    if (std::filesystem::remove_all(entry.path(), ignored) > 0) ++removed;
  }
  return removed;
}

void remove_directory_atomically(const std::string& dir) {
  const auto doomed = temp_name(dir, "-removing");
  if (::rename(dir.c_str(), doomed.c_str()) != 0) fail(dir, "cannot move aside to remove: " + errno_text(errno));
  sync_directory(parent_dir_of(dir));
  std::error_code ignored;
  std::filesystem::remove_all(doomed, ignored);
}

void write_text_atomically(const std::string& path, const std::string& text) {
  write_file_atomically(path,
                        [&](std::ostream& out) { out.write(text.data(), static_cast<std::streamsize>(text.size())); });
}

void sync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail(dir, "cannot open directory to sync it: " + errno_text(errno));
  // Some file systems cannot fsync directories (EINVAL); the rename is then as durable as it gets.
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL) fail(dir, "cannot sync directory: " + errno_text(err));
}

}  // namespace qkd
