#pragma once
// The few lines a finished `qkd-train --config` ends with, for someone who just ran it: where the
// student and the report are, the student's perplexity beside the teacher's and round-to-nearest's,
// and the commands to try next.
#include <string>

#include "qkd/train/run_config.h"
#include "qkd/train/trainer.h"

namespace qkd::train {

struct DigestPaths {
  std::string config;  // the --config file, as given
  std::string report;  // the HTML report written for the run ("" when none was written)
};

std::string format_run_digest(const RunConfig& config, const TrainSummary& summary, const DigestPaths& paths);

}  // namespace qkd::train
