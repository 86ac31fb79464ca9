#include "qkd/train/checkpoint_store.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>

#include "qkd/common/atomic_file.h"
#include "qkd/common/error.h"
#include "qkd/common/file_digest.h"
#include "qkd/common/json_io.h"

namespace qkd::train {

namespace fs = std::filesystem;

namespace {
const std::regex kCheckpointName("step-(\\d{8})");

std::string checkpoint_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step-%08lld", static_cast<long long>(step));
  return buf;
}

constexpr const char* kChecksums = "checksums.json";

// Every file of the checkpoint with its content digest, written last: what resume verifies.
void write_checksums(const fs::path& dir) {
  nlohmann::json sums = nlohmann::json::object();
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_regular_file() && entry.path().filename() != kChecksums &&
        entry.path().filename().string().front() != '.')
      sums[entry.path().filename().string()] = file_digest(entry.path().string());
  write_text_atomically((dir / kChecksums).string(), sums.dump(1) + "\n");
}

// A flipped byte or an edited file fails here, naming the file, instead of resuming from it. A
// checkpoint from before checksums were written is accepted with a warning.
void verify_checksums(const fs::path& dir) {
  const auto path = dir / kChecksums;
  if (!fs::exists(path)) {
    spdlog::warn("{}: no {} (written before checkpoints carried checksums): its files are not verified",
                 dir.string(), kChecksums);
    return;
  }
  const auto sums = read_json_file(path.string());
  if (!sums.is_object()) fail(path.string(), "expected a JSON object of file digests");
  for (const char* required : {"state.json", "student.safetensors", "optimizer.safetensors"})
    if (!sums.contains(required)) fail(path.string(), std::string("no digest of ") + required);
  for (const auto& [name, digest] : sums.items()) {
    const auto file = dir / name;
    if (name.find('/') != std::string::npos || !digest.is_string() || !fs::is_regular_file(file))
      fail(path.string(), printable(name, 60) + ": not a file of this checkpoint");
    if (file_digest(file.string()) != digest.get<std::string>())
      fail(file.string(), "its contents do not match " + std::string(kChecksums) + " (damaged or edited)");
  }
}

bool is_complete(const fs::path& dir) {
  return fs::exists(dir / "state.json") && fs::exists(dir / "student.safetensors") &&
         fs::exists(dir / "optimizer.safetensors");
}
}  // namespace

CheckpointStore::CheckpointStore(std::string run_dir) : root_((fs::path(run_dir) / "checkpoints").string()) {}

void CheckpointStore::remove_leftovers() const {
  // A run killed while writing (or pruning) a checkpoint leaves its temporary directory behind.
  remove_stale_temporaries(root_);
  remove_stale_temporaries(fs::path(root_).parent_path().string());
}

std::vector<std::string> CheckpointStore::list() const {
  std::vector<std::string> out;
  if (!fs::is_directory(root_)) return out;
  for (const auto& entry : fs::directory_iterator(root_)) {
    const auto name = entry.path().filename().string();
    // A symbolic link named step-N is not a checkpoint: it would pair one step's name with another's files.
    if (!entry.is_symlink() && entry.is_directory() && std::regex_match(name, kCheckpointName) &&
        is_complete(entry.path()))
      out.push_back(entry.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<std::string> CheckpointStore::newest() const {
  const auto all = list();
  if (all.empty()) return std::nullopt;
  return all.back();
}

std::string CheckpointStore::directory_for_step(int64_t step) const {
  return (fs::path(root_) / checkpoint_name(step)).string();
}

std::string CheckpointStore::save(const CheckpointData& data, int64_t keep_last) const {
  fs::create_directories(root_);
  const auto final_dir = fs::path(root_) / checkpoint_name(data.step);
  write_directory_atomically(final_dir.string(), "training-checkpoint", [&](const std::string& temp) {
    const fs::path tmp_dir(temp);
    io::write_safetensors((tmp_dir / "student.safetensors").string(), data.student);
    io::write_safetensors((tmp_dir / "optimizer.safetensors").string(), data.optimizer);
    if (!data.stable_weights.empty())
      io::write_safetensors((tmp_dir / "stable_weights.safetensors").string(), data.stable_weights);
    auto state = data.state;
    state["step"] = data.step;
    write_text_atomically((tmp_dir / "state.json").string(), state.dump(1) + "\n");
    write_checksums(tmp_dir);
  });
  auto all = list();
  while (static_cast<int64_t>(all.size()) > keep_last) {
    remove_directory_atomically(all.front());  // a kill mid-way leaves a temporary, swept later
    all.erase(all.begin());
  }
  return final_dir.string();
}

CheckpointData CheckpointStore::load(const std::string& dir) {
  if (fs::is_symlink(fs::path(dir).lexically_normal()))
    fail(dir, "is a symbolic link: a checkpoint is a directory of its own (resuming through a link would pair "
              "one step's name with another's contents)");
  if (!is_complete(dir))
    fail(dir, "not a complete checkpoint (state.json, student.safetensors, optimizer.safetensors)");
  verify_checksums(dir);
  CheckpointData data;
  const auto state_path = (fs::path(dir) / "state.json").string();
  data.state = read_json_file(state_path);
  if (!data.state.is_object() || !data.state.contains("step") || !data.state.at("step").is_number_integer())
    fail(state_path, "step: missing or not an integer");
  data.step = data.state.at("step").get<int64_t>();
  if (data.step < 0) fail(state_path, "step: expected a non-negative integer, got " + std::to_string(data.step));
  const auto name = fs::path(dir).lexically_normal().filename().string();
  std::smatch m;
  if (std::regex_match(name, m, kCheckpointName) && std::stoll(m[1].str()) != data.step)
    fail(state_path, "step: " + std::to_string(data.step) + ", but the directory is " + name);
  data.student = io::read_safetensors((fs::path(dir) / "student.safetensors").string());
  data.optimizer = io::read_safetensors((fs::path(dir) / "optimizer.safetensors").string());
  const auto stable = fs::path(dir) / "stable_weights.safetensors";
  if (fs::exists(stable)) data.stable_weights = io::read_safetensors(stable.string());
  return data;
}

}  // namespace qkd::train
