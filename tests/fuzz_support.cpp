#include "fuzz_support.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <c10/util/Exception.h>
#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <limits>

#include "qkd/common/error.h"

namespace qkd::test {

namespace fs = std::filesystem;
using nlohmann::json;

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

Outcome run_forked(const std::function<void()>& body, double limit_s) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) return {};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipe_fds[0]);
    int code = 0;
    std::string text;
    try {
      torch::set_num_threads(1);
      body();
    } catch (const qkd::Error& e) {
      code = 1, text = e.what();
    } catch (const c10::Error& e) {
      code = 1, text = e.what_without_backtrace();
    } catch (const std::exception& e) {
      code = 1, text = e.what();
    }
    if (::write(pipe_fds[1], text.data(), text.size()) < 0) code = 2;
    ::_exit(code);
  }
  ::close(pipe_fds[1]);
  Outcome out;
  const auto start = std::chrono::steady_clock::now();
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > limit_s) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      out.timed_out = true;
      break;
    }
    ::usleep(1000);
  }
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0) out.message.append(buffer, static_cast<size_t>(n));
  ::close(pipe_fds[0]);
  if (WIFEXITED(status) && !out.timed_out) out.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status) && !out.timed_out) out.signal = WTERMSIG(status);
  return out;
}

std::string mutate_bytes(std::string bytes, std::mt19937_64& rng, size_t focus) {
  switch (rng() % 4) {
    case 0:  // truncation
      return bytes.substr(0, rng() % (bytes.size() + 1));
    case 1: {  // byte flips, mostly where the structure is
      const int flips = 1 + static_cast<int>(rng() % 8);
      for (int i = 0; i < flips && !bytes.empty(); ++i)
        bytes[rng() % std::min(bytes.size(), focus)] ^= static_cast<char>(1 + rng() % 255);
      return bytes;
    }
    case 2: {  // a run of one byte value
      if (bytes.empty()) return bytes;
      const size_t at = rng() % std::min(bytes.size(), focus);
      const size_t len = 1 + rng() % 16;
      for (size_t i = at; i < std::min(bytes.size(), at + len); ++i) bytes[i] = static_cast<char>(rng() % 256);
      return bytes;
    }
    default: {  // digits inserted into the header: huge numbers
      const size_t at = rng() % std::min(bytes.size() + 1, focus);
      return bytes.insert(at, std::string(1 + rng() % 20, static_cast<char>('0' + rng() % 10)));
    }
  }
}

nlohmann::json odd_value(std::mt19937_64& rng) {
  switch (rng() % 10) {
    case 0: return nullptr;
    case 1: return -1;
    case 2: return 0;
    case 3: return std::numeric_limits<int64_t>::max();
    case 4: return -1e308;
    case 5: return "text\x01\x1b[31m";
    case 6: return json::array({1, "a", nullptr});
    case 7: return json::object({{"x", 1}});
    case 8: return true;
    default: {
      json deep = 1;
      for (int i = 0; i < 40; ++i) deep = json::array({deep});
      return deep;
    }
  }
}

void mutate_json(nlohmann::json& j, std::mt19937_64& rng) {
  json* node = &j;
  for (int depth = 0; depth < 4 && (node->is_object() || node->is_array()) && !node->empty(); ++depth) {
    auto it = node->begin();
    std::advance(it, static_cast<long>(rng() % node->size()));
    if (rng() % 3 == 0 || !(it->is_object() || it->is_array())) {
      if (rng() % 5 == 0 && node->is_object())
        node->erase(it.key());
      else
        *it = odd_value(rng);
      return;
    }
    node = &*it;
  }
  *node = odd_value(rng);
}

std::string mutate_json_text(const std::string& text, std::mt19937_64& rng) {
  if (rng() % 4 == 0) return mutate_bytes(text, rng, text.size());
  if (rng() % 8 == 0) return std::string(1000 + rng() % 100000, '[');  // nesting
  json j = json::parse(text);
  const int edits = 1 + static_cast<int>(rng() % 3);
  for (int i = 0; i < edits; ++i) mutate_json(j, rng);
  return j.dump();
}

void make_special(const std::string& path, std::mt19937_64& rng) {
  fs::remove_all(path);
  switch (rng() % 3) {
    case 0: ::mkfifo(path.c_str(), 0600); break;
    case 1: fs::create_directories(path); break;
    default: fs::create_symlink("/dev/zero", path);
  }
}

void judge(Tally& tally, const Outcome& o, const std::string& label, const std::string& file) {
  ++tally.cases;
  std::string problem;
  if (o.timed_out)
    problem = "hang";
  else if (o.signal != 0)
    problem = "signal " + std::to_string(o.signal);
  else if (o.exit_code == 0)
    ++tally.ok;
  else if (o.exit_code != 1)
    problem = "exit " + std::to_string(o.exit_code);
  else if (o.message.find('\n') != std::string::npos)
    problem = "multi-line message: " + o.message.substr(0, 300);
  else if (o.message.size() > 1000)
    problem = "message of " + std::to_string(o.message.size()) + " bytes";
  else if (o.message.find(file) == std::string::npos)
    problem = "message names no file: " + o.message;
  else
    ++tally.clean_errors;
  if (!problem.empty()) tally.problems.push_back(label + ": " + problem);
}

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : fallback;
}

}  // namespace qkd::test
