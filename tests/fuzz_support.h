#pragma once
// The fuzz tests' harness: seeded mutations of bytes and JSON, special files, a forked runner with a
// time limit, and the verdict on each case (exit 0, or exit 1 with one short line naming the file).
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

namespace qkd::test {

std::string read_bytes(const std::string& path);
void write_bytes(const std::string& path, const std::string& bytes);

struct Outcome {
  int exit_code = -1;  // -1: killed by a signal or the time limit
  int signal = 0;
  bool timed_out = false;
  std::string message;  // what the child printed
};

// Runs `body` in a forked child with a time limit; the child exits 0, or 1 with the error's text.
Outcome run_forked(const std::function<void()>& body, double limit_s);

// Truncation, byte flips and runs (within the first `focus` bytes, where the structure is), digits.
std::string mutate_bytes(std::string bytes, std::mt19937_64& rng, size_t focus);
// A value of the wrong type, size or depth.
nlohmann::json odd_value(std::mt19937_64& rng);
// Replaces, removes or re-types one field anywhere in the document.
void mutate_json(nlohmann::json& j, std::mt19937_64& rng);
// A JSON text damaged at the byte level, nested deep, or with one to three fields mutated.
std::string mutate_json_text(const std::string& text, std::mt19937_64& rng);
// A special file instead of a regular one: FIFO, directory, or a symlink to /dev/zero.
void make_special(const std::string& path, std::mt19937_64& rng);

struct Tally {
  int cases = 0, ok = 0, clean_errors = 0;
  std::vector<std::string> problems;
};
// A case passes when it exits 0, or 1 with a message of one line, at most 1,000 bytes, naming `file`.
void judge(Tally& tally, const Outcome& o, const std::string& label, const std::string& file);

int env_int(const char* name, int fallback);

}  // namespace qkd::test
