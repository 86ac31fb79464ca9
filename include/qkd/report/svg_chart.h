#pragma once
// A small generic SVG line chart: series of (x, y) points with a colour and a label, a linear or
// log y axis, tick labels, a legend and vertical event markers (with <title> tooltips).
// Non-finite points, and non-positive points on a log axis, are skipped and break the line.
#include <string>
#include <vector>

namespace qkd::report {

struct Point {
  double x = 0, y = 0;
};

struct Series {
  std::string label;
  std::string color;
  std::vector<Point> points;
  bool dashed = false;
};

// A vertical line at x; `kind` (spike, nonfinite, loss_rise, freeze, release, skip) picks the dash pattern
// and the one-letter glyph on top; `tooltip` becomes the marker's <title>.
struct EventMarker {
  double x = 0;
  std::string kind;
  std::string color;
  std::string tooltip;
};

struct LineChart {
  std::string id;  // data-chart attribute, for tests and styling
  std::string title;
  std::string x_label;
  std::string y_label;
  bool log_y = false;
  int width = 560;
  int height = 300;  // plot area plus axes; the legend adds to it
  std::vector<Series> series;
  std::vector<EventMarker> events;
  double x_min_step = 1;  // smallest x tick spacing (1: integer steps or layers; 0: any)
};

// Renders one <svg class="chart" data-chart="<id>"> element.
std::string render_line_chart(const LineChart& chart);

// Dash pattern ("" for solid) and glyph letter of an event kind, shared with the page legend.
std::string event_dash(const std::string& kind);
std::string event_glyph(const std::string& kind);

// One marker (<g class="event event-<kind>"> with a <title>, the line and the glyph) at pixel x_px
// from top to bottom; `stack` shifts the glyph right when several events share an x.
std::string render_event_marker(const EventMarker& marker, double x_px, double top, double bottom, int stack);

// For markers at these pixel positions: how many earlier markers sit at (about) the same place.
std::vector<int> event_stack_positions(const std::vector<double>& x_px);

// Opening <svg ...> tag with the chart class, data-chart id and size, and the title text.
std::string svg_open(const std::string& id, int width, int height, const std::string& title);

// Legend rows below a chart: returns the SVG and adds the height used to `height`.
struct LegendItem {
  std::string label;
  std::string color;
  bool dashed = false;
};
std::string render_legend(const std::vector<LegendItem>& items, double top, int width, double& height);

}  // namespace qkd::report
