#pragma once
// A heat-map grid in SVG: rows (e.g. layers) x columns (e.g. measurement steps), cell colour from a
// log or linear colour scale; cells without a positive finite value (frozen, absent) are grey.
// Event markers sit on the column axis like on the line charts.
#include <string>
#include <vector>

#include "qkd/report/svg_chart.h"

namespace qkd::report {

struct Heatmap {
  std::string id;
  std::string title;
  std::string row_label;     // e.g. "layer"
  std::string column_label;  // e.g. "step"
  std::vector<std::string> row_names;
  std::vector<double> column_x;             // numeric position of each column (step)
  std::vector<std::vector<double>> values;  // [row][column]
  bool log_color = true;
  int width = 560;
  std::vector<EventMarker> events;
};

std::string render_heatmap(const Heatmap& map);

// Colour of t in [0, 1] on a viridis-like ramp ("#rrggbb").
std::string ramp_color(double t);

}  // namespace qkd::report
