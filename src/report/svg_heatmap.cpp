#include "qkd/report/svg_heatmap.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include "qkd/report/svg_text.h"

namespace qkd::report {

namespace {

constexpr double kLeft = 68, kRight = 18, kTop = 30, kScaleHeight = 56;

struct Scale {
  double lo = 0, hi = 1;
  bool log = true;
  bool valid = false;
  double position(double v) const {
    const double a = log ? std::log10(lo) : lo, b = log ? std::log10(hi) : hi, x = log ? std::log10(v) : v;
    return b > a ? std::clamp((x - a) / (b - a), 0.0, 1.0) : 0.5;
  }
  double value_at(double t) const {
    return log ? std::pow(10.0, std::log10(lo) + t * (std::log10(hi) - std::log10(lo))) : lo + t * (hi - lo);
  }
};

bool has_value(double v, bool log) { return std::isfinite(v) && (!log || v > 0); }

Scale color_scale(const Heatmap& map) {
  Scale s;
  s.log = map.log_color;
  s.lo = std::numeric_limits<double>::infinity(), s.hi = -s.lo;
  for (const auto& row : map.values) {
    for (const double v : row) {
      if (has_value(v, s.log)) s.lo = std::min(s.lo, v), s.hi = std::max(s.hi, v);
    }
  }
  s.valid = s.lo <= s.hi;
  return s;
}

// Left edge of the first column at or after x (the right edge when none is).
double column_edge(const Heatmap& map, double x, double cell_w) {
  for (size_t c = 0; c < map.column_x.size(); ++c) {
    if (map.column_x[c] >= x) return kLeft + static_cast<double>(c) * cell_w;
  }
  return kLeft + static_cast<double>(map.column_x.size()) * cell_w;
}

std::string render_cells(const Heatmap& map, const Scale& scale, double cell_w, double cell_h) {
  std::ostringstream out;
  for (size_t r = 0; r < map.values.size(); ++r) {
    for (size_t c = 0; c < map.values[r].size() && c < map.column_x.size(); ++c) {
      const double v = map.values[r][c];
      const bool ok = scale.valid && has_value(v, scale.log);
      out << "<rect x=\"" << coord(kLeft + static_cast<double>(c) * cell_w) << "\" y=\""
          << coord(kTop + static_cast<double>(r) * cell_h) << "\" width=\"" << coord(cell_w + 0.3) << "\" height=\""
          << coord(cell_h + 0.3) << "\" fill=\"" << (ok ? ramp_color(scale.position(v)) : "#dddddd") << "\"><title>"
          << escape_xml(map.row_label) << ' ' << escape_xml(map.row_names[r]) << ", " << escape_xml(map.column_label)
          << ' ' << format_number(map.column_x[c]) << ": " << format_number(v) << "</title></rect>";
    }
  }
  return out.str();
}

std::string render_row_labels(const Heatmap& map, double cell_h) {
  std::ostringstream out;
  const size_t stride = std::max<size_t>(1, static_cast<size_t>(std::ceil(11.0 / std::max(cell_h, 1e-3))));
  for (size_t r = 0; r < map.row_names.size(); r += stride) {
    out << "<text class=\"tick y-tick\" x=\"" << coord(kLeft - 6) << "\" y=\""
        << coord(kTop + (static_cast<double>(r) + 0.5) * cell_h) << "\" dy=\"0.32em\" text-anchor=\"end\">"
        << escape_xml(map.row_names[r]) << "</text>";
  }
  return out.str();
}

std::string render_column_labels(const Heatmap& map, double cell_w, double bottom) {
  std::ostringstream out;
  const size_t stride = std::max<size_t>(1, static_cast<size_t>(std::ceil(48.0 / std::max(cell_w, 1e-3))));
  for (size_t c = 0; c < map.column_x.size(); c += stride) {
    out << "<text class=\"tick x-tick\" x=\"" << coord(kLeft + (static_cast<double>(c) + 0.5) * cell_w) << "\" y=\""
        << coord(bottom + 14) << "\" text-anchor=\"middle\">" << format_number(map.column_x[c]) << "</text>";
  }
  out << "<text class=\"axis-label\" x=\"" << coord(kLeft + cell_w * static_cast<double>(map.column_x.size()) / 2)
      << "\" y=\"" << coord(bottom + 30) << "\" text-anchor=\"middle\">" << escape_xml(map.column_label) << "</text>";
  return out.str();
}

std::string render_color_bar(const Scale& scale, double top) {
  std::ostringstream out;
  constexpr int kSteps = 12;
  constexpr double kStepW = 18;
  for (int i = 0; i < kSteps; ++i) {
    out << "<rect x=\"" << coord(kLeft + i * kStepW) << "\" y=\"" << coord(top) << "\" width=\"" << kStepW
        << "\" height=\"10\" fill=\"" << ramp_color((i + 0.5) / kSteps) << "\"/>";
  }
  const double right = kLeft + kSteps * kStepW;
  out << "<text class=\"tick\" x=\"" << coord(kLeft) << "\" y=\"" << coord(top + 22) << "\">"
      << (scale.valid ? format_number(scale.lo) : "") << "</text><text class=\"tick\" x=\"" << coord(right) << "\" y=\""
      << coord(top + 22) << "\" text-anchor=\"end\">" << (scale.valid ? format_number(scale.hi) : "") << "</text>"
      << "<rect x=\"" << coord(right + 16) << "\" y=\"" << coord(top)
      << "\" width=\"18\" height=\"10\" fill=\"#dddddd\"/>"
      << "<text class=\"tick\" x=\"" << coord(right + 40) << "\" y=\"" << coord(top + 9) << "\">0 / absent (frozen)"
      << (scale.log ? "; log colour scale" : "") << "</text>";
  return out.str();
}

}  // namespace

std::string ramp_color(double t) {
  static const std::array<std::array<double, 3>, 5> anchors = {
      {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}}};
  t = std::clamp(std::isfinite(t) ? t : 0.0, 0.0, 1.0) * (anchors.size() - 1);
  const size_t i = std::min<size_t>(static_cast<size_t>(t), anchors.size() - 2);
  const double f = t - static_cast<double>(i);
  char buffer[8];
  std::snprintf(buffer, sizeof(buffer), "#%02x%02x%02x",
                static_cast<int>(std::lround(anchors[i][0] + f * (anchors[i + 1][0] - anchors[i][0]))),
                static_cast<int>(std::lround(anchors[i][1] + f * (anchors[i + 1][1] - anchors[i][1]))),
                static_cast<int>(std::lround(anchors[i][2] + f * (anchors[i + 1][2] - anchors[i][2]))));
  return buffer;
}

std::string render_heatmap(const Heatmap& map) {
  const Scale scale = color_scale(map);
  const double plot_w = map.width - kLeft - kRight;
  const double cell_w = plot_w / static_cast<double>(std::max<size_t>(1, map.column_x.size()));
  const double cell_h = std::clamp(220.0 / static_cast<double>(std::max<size_t>(1, map.row_names.size())), 4.0, 18.0);
  const double plot_h = cell_h * static_cast<double>(map.row_names.size());
  const double bottom = kTop + plot_h;
  const int height = static_cast<int>(std::ceil(bottom + 36 + kScaleHeight - 20));
  std::ostringstream out;
  out << svg_open(map.id, map.width, height, map.title) << render_cells(map, scale, cell_w, cell_h)
      << render_row_labels(map, cell_h) << render_column_labels(map, cell_w, bottom);
  out << "<text class=\"axis-label\" transform=\"translate(14," << coord(kTop + plot_h / 2)
      << ") rotate(-90)\" text-anchor=\"middle\">" << escape_xml(map.row_label) << "</text>";
  std::vector<double> x_px;
  for (const auto& e : map.events) x_px.push_back(column_edge(map, e.x, cell_w));
  const std::vector<int> stack = event_stack_positions(x_px);
  for (size_t i = 0; i < map.events.size(); ++i) {
    EventMarker marker = map.events[i];
    marker.color = "#e00000";  // visible on every colour of the ramp
    out << render_event_marker(marker, x_px[i], kTop - 2, bottom + 2, stack[i]);
  }
  out << render_color_bar(scale, bottom + 40) << "</svg>";
  return out.str();
}

}  // namespace qkd::report
