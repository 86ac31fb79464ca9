#include "test_support.h"

#include <gtest/gtest.h>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/common/error.h"
#include "qkd/quant/student.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <chrono>
#include <sstream>
#include <thread>

#include <string>
#include <vector>

namespace qkd::test {

std::string fixture_path(const std::string& relative) {
  return (std::filesystem::path(QKD_SOURCE_DIR) / "tests" / "fixtures" / relative).string();
}

std::string shell_quote(const std::string& text) {
  std::string out = "'";
  for (const char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string repo_path(const std::string& relative) {
  return (std::filesystem::path(QKD_SOURCE_DIR) / relative).string();
}

std::string shipped_teacher() { return repo_path("assets/models/kjv-teacher-7m"); }

std::string kjv_val_tokens() { return repo_path("assets/data/kjv/kjv-val.u16"); }

namespace {
// Scratch directories are removed when the test process exits (each test runs in its own process
// under ctest), so a suite run does not leave gigabytes of checkpoints in /tmp. QKD_KEEP_TEST_DIRS=1
// keeps them for debugging.
struct ScratchRegistry {
  std::vector<std::filesystem::path> dirs;
  ~ScratchRegistry() {
    if (const char* keep = std::getenv("QKD_KEEP_TEST_DIRS"); keep && std::string(keep) == "1") return;
    std::error_code ignored;
    for (const auto& dir : dirs) std::filesystem::remove_all(dir, ignored);
  }
};
ScratchRegistry& scratch_registry() {
  static ScratchRegistry registry;
  return registry;
}
}  // namespace

std::string scratch_dir(const std::string& tag) {
  static std::atomic<int> counter{0};
  const auto dir = std::filesystem::temp_directory_path() /
                   ("qkd-test-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  scratch_registry().dirs.push_back(dir);
  return dir.string();
}

void expect_error(const std::function<void()>& action, const std::vector<std::string>& parts) {
  try {
    action();
  } catch (const qkd::Error& e) {
    const std::string message = e.what();
    ::testing::Test::RecordProperty("error", message);
    EXPECT_EQ(message.find('\n'), std::string::npos) << "message spans lines: " << message;
    for (const auto& part : parts)
      EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
    return;
  }
  ADD_FAILURE() << "no qkd::Error thrown";
}

model::LlamaConfig tiny_llama_config(bool tied_embeddings) {
  model::LlamaConfig c;
  c.vocab_size = 100;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.tie_word_embeddings = tied_embeddings;
  return c;
}

model::LlamaForCausalLM load_student(const std::string& dir, const quant::QuantSpec& spec) {
  auto model = checkpoint::load_llama(dir);
  quant::attach_quantizers(*model, spec);
  model->eval();
  return model;
}

quant::QuantSpec quant_spec(int64_t bits, quant::Granularity granularity, bool symmetric, int64_t group_size) {
  quant::QuantSpec s;
  s.bits = bits;
  s.granularity = granularity;
  s.symmetric = symmetric;
  s.group_size = group_size;
  return s;
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

CommandResult run_cli(const std::string& args, const std::string& env, int timeout_seconds) {
#ifdef QKD_BINARY
  const std::string limit = timeout_seconds > 0 ? "timeout -s KILL " + std::to_string(timeout_seconds) + " " : "";
  const std::string command =
      (env.empty() ? "" : "env " + env + " ") + limit + std::string(QKD_BINARY) + " " + args + " 2>&1";
#else
  const std::string command = "false " + args;
#endif
  CommandResult result;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return result;
  std::array<char, 4096> buffer{};
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.output.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

pid_t start_cli(const std::vector<std::string>& args, const std::string& log, const std::vector<std::string>& env) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    for (const auto& assignment : env) {
      const auto eq = assignment.find('=');
      ::setenv(assignment.substr(0, eq).c_str(), assignment.substr(eq + 1).c_str(), 1);
    }
#ifdef QKD_BINARY
    std::vector<char*> argv{const_cast<char*>(QKD_BINARY)};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(QKD_BINARY, argv.data());
#endif
    ::_exit(127);
  }
  return pid;
}

bool wait_for_exit(pid_t pid, double seconds, int& status) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < until) {
    if (::waitpid(pid, &status, WNOHANG) == pid) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t length = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) != 0)
    throw std::runtime_error("free_port: no socket");
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace qkd::test
