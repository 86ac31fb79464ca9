#include "qkd/common/atomic_file.h"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <streambuf>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qkd/common/error.h"

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

// Unique per process and call, so concurrent writers of the same path never share a temp file.
std::string temp_path_for(const std::string& path) {
  static std::atomic<unsigned> counter{0};
  return path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

std::string parent_dir_of(const std::string& path) {
  const auto parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
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

void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& write) {
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

void write_text_atomically(const std::string& path, const std::string& text) {
  write_file_atomically(path, [&](std::ostream& out) { out.write(text.data(), static_cast<std::streamsize>(text.size())); });
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
