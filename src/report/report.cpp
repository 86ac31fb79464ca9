// The report page: header, legends, sections, styles; write_report loads the runs and writes it.
#include "qkd/report/report.h"

#include <ctime>
#include <sstream>

#include "qkd/common/atomic_file.h"
#include "qkd/common/error.h"
#include "qkd/report/report_sections.h"
#include "qkd/report/svg_text.h"

namespace qkd::report {

namespace {

const char* const kStyle = R"(
body { font-family: "DejaVu Sans", Arial, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ccc; }
h3 { font-size: 15px; margin: 16px 0 6px; }
.sub { color: #666; font-size: 12px; }
table.runs { border-collapse: collapse; font-size: 12px; }
table.runs th, table.runs td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; }
table.runs th { background: #f2f2f2; }
.dir { color: #777; font-size: 11px; }
.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 6px; vertical-align: -1px; border-radius: 2px; }
.legend { font-size: 12px; margin: 6px 0; } .legend span.item { margin-right: 16px; white-space: nowrap; }
.charts { display: flex; flex-wrap: wrap; gap: 14px; }
svg.chart { background: #fff; border: 1px solid #e3e3e3; }
svg.chart text { font-size: 11px; fill: #333; }
svg.chart .chart-title { font-size: 13px; font-weight: bold; }
svg.chart .grid { stroke: #ececec; } svg.chart .tick-mark { stroke: #888; }
svg.chart .frame { fill: none; stroke: #999; }
svg.chart .glyph { font-size: 9px; font-weight: bold; }
svg.chart .no-data { fill: #999; font-size: 13px; }
.note { color: #8a5a00; font-size: 12px; } ul.notes { font-size: 12px; color: #555; }
code { font-size: 11px; word-break: break-all; }
)";

std::string run_legend(const std::vector<RunData>& runs) {
  std::string out = "<div class=\"legend\">";
  for (size_t i = 0; i < runs.size(); ++i) {
    out += "<span class=\"item\"><span class=\"swatch\" style=\"background:" + run_color(i) + "\"></span>" +
           escape_xml(runs[i].label) + "</span>";
  }
  return out + "</div>";
}

// A tiny inline SVG per event kind showing its dash pattern and glyph.
std::string event_legend() {
  std::string out = "<div class=\"legend\">Event markers (hover for details): ";
  for (const char* kind : {"analysis", "freeze", "release", "spike", "nonfinite", "loss_rise", "skip"}) {
    const std::string dash = event_dash(kind);
    out += std::string(
               "<span class=\"item\"><svg width=\"30\" height=\"14\"><line x1=\"15\" x2=\"15\" y1=\"0\" y2=\"14\" "
               "stroke=\"#333\" "
               "stroke-width=\"2\"") +
           (dash.empty() ? "" : " stroke-dasharray=\"" + dash + "\"") + "/><text x=\"22\" y=\"11\" font-size=\"9\">" +
           event_glyph(kind) + "</text></svg>" + kind + "</span>";
  }
  return out + "</div>";
}

std::string generated_at() {
  const std::time_t now = std::time(nullptr);
  char buffer[32];
  std::strftime(buffer, sizeof(buffer), "%Y-%m-%d %H:%M:%S", std::localtime(&now));
  return buffer;
}

}  // namespace

std::string render_report(const std::vector<RunData>& runs, const ReportOptions& options) {
  std::ostringstream page;
  page << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" << escape_xml(options.title)
       << "</title><style>" << kStyle << "</style></head><body><h1>" << escape_xml(options.title)
       << "</h1><div class=\"sub\">" << runs.size() << " run(s), generated " << generated_at() << "</div>"
       << run_legend(runs) << event_legend() << runs_section(runs) << training_section(runs, options)
       << gradient_section(runs, options) << layer_section(runs, options) << "</body></html>\n";
  return page.str();
}

void write_report(const std::vector<std::string>& run_dirs, const std::string& out_path, const ReportOptions& options) {
  if (run_dirs.empty()) fail("report", "no run directories given (--run DIR)");
  std::vector<RunData> runs;
  for (const auto& dir : run_dirs) runs.push_back(load_run(dir));
  write_text_atomically(out_path, render_report(runs, options));
}

}  // namespace qkd::report
