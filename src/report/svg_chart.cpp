#include "qkd/report/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <sstream>

#include "qkd/report/chart_ticks.h"
#include "qkd/report/svg_text.h"

namespace qkd::report {

namespace {

constexpr double kLeft = 68, kRight = 18, kTop = 30, kBottom = 44;

// Maps data coordinates into the plot area.
struct Frame {
  double left = kLeft, top = kTop, plot_w = 0, plot_h = 0;
  AxisRange x, y;
  bool log_y = false;
  double px(double value) const { return left + (value - x.lo) / (x.hi - x.lo) * plot_w; }
  double py(double value) const {
    const double lo = log_y ? std::log10(y.lo) : y.lo, hi = log_y ? std::log10(y.hi) : y.hi;
    const double v = log_y ? std::log10(value) : value;
    return top + plot_h - (v - lo) / (hi - lo) * plot_h;
  }
};

bool usable(const Point& p, bool log_y) { return std::isfinite(p.x) && std::isfinite(p.y) && (!log_y || p.y > 0); }

struct Bounds {
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo, y_lo = x_lo, y_hi = -x_lo;
  bool has_y() const { return y_lo <= y_hi; }
};

Bounds data_bounds(const LineChart& chart) {
  Bounds b;
  for (const auto& series : chart.series) {
    for (const auto& p : series.points) {
      if (!usable(p, chart.log_y)) continue;
      b.x_lo = std::min(b.x_lo, p.x), b.x_hi = std::max(b.x_hi, p.x);
      b.y_lo = std::min(b.y_lo, p.y), b.y_hi = std::max(b.y_hi, p.y);
    }
  }
  for (const auto& e : chart.events) {
    if (std::isfinite(e.x)) b.x_lo = std::min(b.x_lo, e.x), b.x_hi = std::max(b.x_hi, e.x);
  }
  return b;
}

Frame make_frame(const LineChart& chart) {
  const Bounds b = data_bounds(chart);
  Frame f;
  f.plot_w = chart.width - kLeft - kRight;
  f.plot_h = chart.height - kTop - kBottom;
  f.log_y = chart.log_y;
  f.x = linear_axis(b.x_lo <= b.x_hi ? b.x_lo : 0, b.x_lo <= b.x_hi ? b.x_hi : 1, 6, chart.x_min_step);
  if (chart.log_y) {
    f.y = b.has_y() ? log_axis(b.y_lo, b.y_hi) : log_axis(1, 10);
  } else {
    f.y = b.has_y() ? linear_axis(b.y_lo, b.y_hi, 5) : linear_axis(0, 1, 5);
  }
  return f;
}

std::string render_axes(const Frame& f, const LineChart& chart) {
  std::ostringstream out;
  const double bottom = f.top + f.plot_h, right = f.left + f.plot_w;
  out << "<g class=\"axes\">";
  for (const auto& t : f.y.ticks) {
    const std::string y = coord(f.py(t.value));
    out << "<line class=\"grid\" x1=\"" << coord(f.left) << "\" x2=\"" << coord(right) << "\" y1=\"" << y << "\" y2=\""
        << y << "\"/><text class=\"tick y-tick\" x=\"" << coord(f.left - 6) << "\" y=\"" << y
        << "\" dy=\"0.32em\" text-anchor=\"end\">" << escape_xml(t.label) << "</text>";
  }
  for (const auto& t : f.x.ticks) {
    const std::string x = coord(f.px(t.value));
    out << "<line class=\"tick-mark\" x1=\"" << x << "\" x2=\"" << x << "\" y1=\"" << coord(bottom) << "\" y2=\""
        << coord(bottom + 5) << "\"/><text class=\"tick x-tick\" x=\"" << x << "\" y=\"" << coord(bottom + 17)
        << "\" text-anchor=\"middle\">" << escape_xml(t.label) << "</text>";
  }
  out << "<rect class=\"frame\" x=\"" << coord(f.left) << "\" y=\"" << coord(f.top) << "\" width=\"" << coord(f.plot_w)
      << "\" height=\"" << coord(f.plot_h) << "\"/>";
  out << "<text class=\"axis-label\" x=\"" << coord(f.left + f.plot_w / 2) << "\" y=\"" << coord(bottom + 36)
      << "\" text-anchor=\"middle\">" << escape_xml(chart.x_label) << "</text>";
  out << "<text class=\"axis-label\" transform=\"translate(14," << coord(f.top + f.plot_h / 2)
      << ") rotate(-90)\" text-anchor=\"middle\">" << escape_xml(chart.y_label + (chart.log_y ? " (log)" : ""))
      << "</text></g>";
  return out.str();
}

// One <path>, broken wherever a point is unusable; dots too when the series is short.
std::string render_series(const Frame& f, const Series& s) {
  std::ostringstream path, dots;
  bool pen_down = false;
  size_t usable_count = 0;
  for (const auto& p : s.points) usable_count += usable(p, f.log_y) ? 1 : 0;
  for (const auto& p : s.points) {
    if (!usable(p, f.log_y)) {
      pen_down = false;
      continue;
    }
    path << (pen_down ? " L" : " M") << coord(f.px(p.x)) << ' ' << coord(f.py(p.y));
    pen_down = true;
    if (usable_count <= 40) {
      dots << "<circle cx=\"" << coord(f.px(p.x)) << "\" cy=\"" << coord(f.py(p.y)) << "\" r=\"2.5\" fill=\"" << s.color
           << "\"/>";
    }
  }
  std::ostringstream out;
  out << "<g class=\"series\"><title>" << escape_xml(s.label) << "</title><path d=\"" << path.str()
      << "\" fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"1.6\""
      << (s.dashed ? " stroke-dasharray=\"6 3\"" : "") << "/>" << dots.str() << "</g>";
  return out.str();
}

}  // namespace

std::string render_event_marker(const EventMarker& e, double x_px, double top, double bottom, int stack) {
  const std::string x = coord(x_px);
  const std::string dash = event_dash(e.kind);
  std::ostringstream out;
  out << "<g class=\"event event-" << escape_xml(e.kind) << "\"><title>" << escape_xml(e.tooltip)
      << "</title><line x1=\"" << x << "\" x2=\"" << x << "\" y1=\"" << coord(top) << "\" y2=\"" << coord(bottom)
      << "\" stroke=\"" << e.color << "\" stroke-width=\"" << (e.kind == "freeze" ? 2 : 1.2) << "\" opacity=\"0.75\""
      << (dash.empty() ? "" : " stroke-dasharray=\"" + dash + "\"") << "/><text class=\"glyph\" x=\""
      << coord(x_px + 7.0 * stack) << "\" y=\"" << coord(top - 4) << "\" text-anchor=\"middle\" fill=\"" << e.color
      << "\">" << escape_xml(event_glyph(e.kind)) << "</text></g>";
  return out.str();
}

std::vector<int> event_stack_positions(const std::vector<double>& x_px) {
  std::map<long, int> seen;
  std::vector<int> positions;
  for (const double x : x_px) positions.push_back(seen[std::lround(x / 4.0)]++);
  return positions;
}

std::string event_dash(const std::string& kind) {
  if (kind == "freeze") return "";
  if (kind == "spike") return "4 3";
  if (kind == "nonfinite") return "1 2";
  if (kind == "loss_rise") return "8 3 2 3";
  if (kind == "release") return "6 2";
  if (kind == "analysis") return "1 4";
  return "2 4";
}

std::string event_glyph(const std::string& kind) {
  if (kind == "freeze") return "F";
  if (kind == "spike") return "S";
  if (kind == "nonfinite") return "N";
  if (kind == "loss_rise") return "L";
  if (kind == "skip") return "K";
  if (kind == "release") return "R";
  if (kind == "analysis") return "A";
  return "?";
}

std::string svg_open(const std::string& id, int width, int height, const std::string& title) {
  std::ostringstream out;
  out << "<svg class=\"chart\" data-chart=\"" << escape_xml(id) << "\" xmlns=\"http://www.w3.org/2000/svg\" width=\""
      << width << "\" height=\"" << height << "\" viewBox=\"0 0 " << width << ' ' << height
      << "\"><text class=\"chart-title\" x=\"" << width / 2 << "\" y=\"16\" text-anchor=\"middle\">"
      << escape_xml(title) << "</text>";
  return out.str();
}

std::string render_legend(const std::vector<LegendItem>& items, double top, int width, double& height) {
  std::ostringstream out;
  double x = kLeft, y = top + 12;
  for (const auto& item : items) {
    const double item_w = 30 + 6.6 * static_cast<double>(item.label.size()) + 14;
    if (x + item_w > width && x > kLeft) x = kLeft, y += 16;
    out << "<g class=\"legend-item\"><line x1=\"" << coord(x) << "\" x2=\"" << coord(x + 22) << "\" y1=\"" << coord(y)
        << "\" y2=\"" << coord(y) << "\" stroke=\"" << item.color << "\" stroke-width=\"2.5\""
        << (item.dashed ? " stroke-dasharray=\"6 3\"" : "") << "/><text x=\"" << coord(x + 27) << "\" y=\"" << coord(y)
        << "\" dy=\"0.32em\">" << escape_xml(item.label) << "</text></g>";
    x += item_w;
  }
  height += items.empty() ? 0 : y - top + 10;
  return out.str();
}

std::string render_line_chart(const LineChart& chart) {
  const Frame frame = make_frame(chart);
  std::vector<LegendItem> items;
  for (const auto& s : chart.series) items.push_back({s.label, s.color, s.dashed});
  double total_height = chart.height;
  const std::string legend = render_legend(items, chart.height - 4, chart.width, total_height);
  std::ostringstream out;
  out << svg_open(chart.id, chart.width, static_cast<int>(std::ceil(total_height)), chart.title)
      << render_axes(frame, chart);
  if (!data_bounds(chart).has_y()) {
    out << "<text class=\"no-data\" x=\"" << coord(frame.left + frame.plot_w / 2) << "\" y=\""
        << coord(frame.top + frame.plot_h / 2) << "\" text-anchor=\"middle\">no data</text>";
  }
  for (const auto& s : chart.series) out << render_series(frame, s);
  std::vector<double> x_px;
  for (const auto& e : chart.events) x_px.push_back(frame.px(e.x));
  const std::vector<int> stack = event_stack_positions(x_px);
  for (size_t i = 0; i < chart.events.size(); ++i) {
    if (std::isfinite(chart.events[i].x))
      out << render_event_marker(chart.events[i], x_px[i], frame.top, frame.top + frame.plot_h, stack[i]);
  }
  out << legend << "</svg>";
  return out.str();
}

}  // namespace qkd::report
