#pragma once
// Training checkpoints in <run_dir>/checkpoints/step-NNNNNNNN/:
//   student.safetensors    student weights and quantizer state
//   optimizer.safetensors  AdamW moments and step count
//   state.json             step, data cursor, RNG state, freeze state, monitor state, config identity
//   stable_weights.safetensors  (auto freeze with rollback only) the weights a spike rolls back to
// A checkpoint is assembled in a hidden temporary directory, every file fsync'ed, and renamed into
// place, so a crash mid-write never leaves a directory that looks like a valid checkpoint.
#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

#include "qkd/io/safetensors.h"

namespace qkd::train {

struct CheckpointData {
  int64_t step = 0;  // number of completed optimizer steps
  io::NamedTensors student;
  io::NamedTensors optimizer;
  io::NamedTensors stable_weights;  // optional: written only when non-empty
  nlohmann::json state;             // everything else, JSON-serializable
};

class CheckpointStore {
 public:
  explicit CheckpointStore(std::string run_dir);

  // Removes what a killed writer left: temporary checkpoint directories and files of processes that no
  // longer run (only the run's writer calls it, holding the run directory's lock).
  void remove_leftovers() const;
  // Writes atomically and then deletes all but the newest `keep_last` checkpoints.
  std::string save(const CheckpointData& data, int64_t keep_last) const;
  // Where save() puts the checkpoint of `step`.
  std::string directory_for_step(int64_t step) const;
  // Newest complete checkpoint directory, if any.
  std::optional<std::string> newest() const;
  std::vector<std::string> list() const;  // complete checkpoints, oldest first
  static CheckpointData load(const std::string& dir);
  const std::string& root() const { return root_; }

 private:
  std::string root_;
};

}  // namespace qkd::train
