#include "qkd/train/checkpoint_store.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>

#include "qkd/common/atomic_file.h"
#include "qkd/common/error.h"

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

CheckpointStore::CheckpointStore(std::string run_dir) : root_((fs::path(run_dir) / "checkpoints").string()) {}

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

std::string CheckpointStore::save(const CheckpointData& data, int64_t keep_last) const {
  fs::create_directories(root_);
  const auto final_dir = fs::path(root_) / checkpoint_name(data.step);
  const auto tmp_dir = fs::path(root_) / (".tmp-" + checkpoint_name(data.step) + "-" + std::to_string(::getpid()));
  fs::remove_all(tmp_dir);
  fs::create_directories(tmp_dir);
  io::write_safetensors((tmp_dir / "student.safetensors").string(), data.student);
  io::write_safetensors((tmp_dir / "optimizer.safetensors").string(), data.optimizer);
  if (!data.stable_weights.empty())
    io::write_safetensors((tmp_dir / "stable_weights.safetensors").string(), data.stable_weights);
  auto state = data.state;
  state["step"] = data.step;
  write_text_atomically((tmp_dir / "state.json").string(), state.dump(1) + "\n");
  sync_directory(tmp_dir.string());
  fs::remove_all(final_dir);
  fs::rename(tmp_dir, final_dir);
  sync_directory(root_);
  auto all = list();
  while (static_cast<int64_t>(all.size()) > keep_last) {
    fs::remove_all(all.front());
    all.erase(all.begin());
  }
  return final_dir.string();
}

CheckpointData CheckpointStore::load(const std::string& dir) {
  if (!is_complete(dir)) fail(dir, "not a complete checkpoint (state.json, student.safetensors, optimizer.safetensors)");
  CheckpointData data;
  std::ifstream in(fs::path(dir) / "state.json");
  data.state = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (data.state.is_discarded() || !data.state.contains("step"))
    fail((fs::path(dir) / "state.json").string(), "not valid checkpoint state JSON");
  data.step = data.state.at("step").get<int64_t>();
  data.student = io::read_safetensors((fs::path(dir) / "student.safetensors").string());
  data.optimizer = io::read_safetensors((fs::path(dir) / "optimizer.safetensors").string());
  const auto stable = fs::path(dir) / "stable_weights.safetensors";
  if (fs::exists(stable)) data.stable_weights = io::read_safetensors(stable.string());
  return data;
}

}  // namespace qkd::train
