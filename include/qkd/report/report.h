#pragma once
// `qkd-train report`: one self-contained HTML file (inline CSS and SVG, no scripts, no network)
// comparing one or more run directories. Each run gets one colour used in every chart and legend.
#include <string>
#include <vector>

#include "qkd/report/run_data.h"

namespace qkd::report {

struct ReportOptions {
  std::string title = "qkd-train report";
  bool log_loss = true;   // KD loss on a log y axis
  int chart_width = 540;  // two charts side by side in a 1200 px window
};

// The whole HTML page for already loaded runs.
std::string render_report(const std::vector<RunData>& runs, const ReportOptions& options = {});

// Loads every run directory (errors name the file and line at fault) and writes the page to
// out_path atomically.
void write_report(const std::vector<std::string>& run_dirs, const std::string& out_path,
                  const ReportOptions& options = {});

}  // namespace qkd::report
