#include "qkd/train/checkpoint_store.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>

#include "qkd/common/atomic_file.h"
#include "qkd/common/error.h"
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

bool is_complete(const fs::path& dir) {
  return fs::exists(dir / "state.json") && fs::exists(dir / "student.safetensors") &&
         fs::exists(dir / "optimizer.safetensors");
}
}  // namespace

CheckpointStore::CheckpointStore(std::string run_dir) : root_((fs::path(run_dir) / "checkpoints").string()) {
  // A run killed while writing a checkpoint leaves its temporary directory (tens of MB) behind.
  remove_stale_temporaries(root_);
  remove_stale_temporaries(run_dir);
}

std::vector<std::string> CheckpointStore::list() const {
  std::vector<std::string> out;
  if (!fs::is_directory(root_)) return out;
  for (const auto& entry : fs::directory_iterator(root_)) {
    const auto name = entry.path().filename().string();
    if (entry.is_directory() && std::regex_match(name, kCheckpointName) && is_complete(entry.path()))
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
  write_directory_atomically(final_dir.string(), [&](const std::string& temp) {
    const fs::path tmp_dir(temp);
    io::write_safetensors((tmp_dir / "student.safetensors").string(), data.student);
    io::write_safetensors((tmp_dir / "optimizer.safetensors").string(), data.optimizer);
    if (!data.stable_weights.empty())
      io::write_safetensors((tmp_dir / "stable_weights.safetensors").string(), data.stable_weights);
    auto state = data.state;
    state["step"] = data.step;
    write_text_atomically((tmp_dir / "state.json").string(), state.dump(1) + "\n");
  });
  auto all = list();
  while (static_cast<int64_t>(all.size()) > keep_last) {
    fs::remove_all(all.front());
    all.erase(all.begin());
  }
  return final_dir.string();
}

CheckpointData CheckpointStore::load(const std::string& dir) {
  if (!is_complete(dir))
    fail(dir, "not a complete checkpoint (state.json, student.safetensors, optimizer.safetensors)");
  CheckpointData data;
  const auto state_path = (fs::path(dir) / "state.json").string();
  data.state = read_json_file(state_path);
  if (!data.state.is_object() || !data.state.contains("step") || !data.state.at("step").is_number_integer())
    fail(state_path, "step: missing or not an integer");
  data.step = data.state.at("step").get<int64_t>();
  if (data.step < 0) fail(state_path, "step: expected a non-negative integer, got " + std::to_string(data.step));
  data.student = io::read_safetensors((fs::path(dir) / "student.safetensors").string());
  data.optimizer = io::read_safetensors((fs::path(dir) / "optimizer.safetensors").string());
  const auto stable = fs::path(dir) / "stable_weights.safetensors";
  if (fs::exists(stable)) data.stable_weights = io::read_safetensors(stable.string());
  return data;
}

}  // namespace qkd::train
