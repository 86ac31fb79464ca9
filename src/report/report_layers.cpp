// Per-run gradient signal (projection curves, per-layer heat maps) and per-layer state at the last
// measurement (activation RMS, quantization error).
#include <algorithm>
#include <cmath>
#include <limits>

#include "qkd/report/report_sections.h"
#include "qkd/report/svg_heatmap.h"
#include "qkd/report/svg_text.h"

namespace qkd::report {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
const char* const kPerRunMarkerColor = "#333333";

double value_or_nan(const ProjectionValues& values, const std::string& name) {
  const auto it = values.find(name);
  return it == values.end() ? kNaN : it->second;
}

// Projection names in display order: the known seven first, then any others seen.
std::vector<std::string> projections_in(const std::vector<const ProjectionValues*>& maps) {
  std::vector<std::string> names;
  for (const auto& known : projection_names()) {
    for (const auto* m : maps) {
      if (m->count(known)) {
        names.push_back(known);
        break;
      }
    }
  }
  for (const auto* m : maps) {
    for (const auto& entry : *m) {
      if (std::find(names.begin(), names.end(), entry.first) == names.end()) names.push_back(entry.first);
    }
  }
  return names;
}

std::string projection_curves(const RunData& run, size_t index, const ReportOptions& options) {
  std::vector<const ProjectionValues*> maps;
  for (const auto& s : run.signals) maps.push_back(&s.total_grad_sq);
  LineChart chart{"grad-proj-" + std::to_string(index),
                  run.label + ": total squared gradient per projection",
                  "step",
                  "grad_sq",
                  true,
                  options.chart_width};
  for (const auto& name : projections_in(maps)) {
    Series series{name, projection_color(name), {}};
    for (const auto& s : run.signals)
      series.points.push_back({static_cast<double>(s.step), value_or_nan(s.total_grad_sq, name)});
    chart.series.push_back(series);
  }
  chart.events = run_event_markers(run, kPerRunMarkerColor);
  return render_line_chart(chart);
}

int64_t layer_count(const RunData& run) {
  int64_t count = 0;
  for (const auto& s : run.signals) {
    for (const auto& l : s.layers) count = std::max(count, l.layer + 1);
  }
  return count;
}

std::string layer_heatmap(const RunData& run, size_t index, const std::string& projection,
                          const ReportOptions& options) {
  const int64_t layers = layer_count(run);
  Heatmap map{"layers-" + projection + "-" + std::to_string(index),
              run.label + ": " + projection + " grad_sq per layer", "layer", "step"};
  map.width = options.chart_width;
  for (int64_t l = 0; l < layers; ++l) map.row_names.push_back(std::to_string(l));
  map.values.assign(static_cast<size_t>(layers), {});
  for (const auto& s : run.signals) {
    map.column_x.push_back(static_cast<double>(s.step));
    for (auto& row : map.values) row.push_back(kNaN);
    for (const auto& l : s.layers) {
      if (l.layer >= 0) map.values[static_cast<size_t>(l.layer)].back() = value_or_nan(l.grad_sq, projection);
    }
  }
  map.events = run_event_markers(run, kPerRunMarkerColor);
  return render_heatmap(map);
}

// The last measurement of each layer for which `has` holds (layers may be measured at different steps).
template <typename Has>
std::vector<const LayerSignal*> last_per_layer(const RunData& run, Has has) {
  std::vector<const LayerSignal*> last(static_cast<size_t>(layer_count(run)), nullptr);
  for (const auto& s : run.signals) {
    for (const auto& l : s.layers) {
      if (l.layer >= 0 && has(l)) last[static_cast<size_t>(l.layer)] = &l;
    }
  }
  return last;
}

std::string quant_error_chart(const RunData& run, size_t index, const ReportOptions& options) {
  const auto last = last_per_layer(run, [](const LayerSignal& l) { return !l.quant_error.empty(); });
  std::vector<const ProjectionValues*> maps;
  for (const auto* l : last) {
    if (l) maps.push_back(&l->quant_error);
  }
  if (maps.empty()) return note(run.label + ": no quant_error in signal.jsonl.");
  LineChart chart{"quant-error-" + std::to_string(index),
                  run.label + ": quantization error per layer (last measurement)",
                  "layer",
                  "quant error",
                  true,
                  options.chart_width};
  for (const auto& name : projections_in(maps)) {
    Series series{name, projection_color(name), {}};
    for (size_t layer = 0; layer < last.size(); ++layer) {
      series.points.push_back(
          {static_cast<double>(layer), last[layer] ? value_or_nan(last[layer]->quant_error, name) : kNaN});
    }
    chart.series.push_back(series);
  }
  return render_line_chart(chart);
}

std::string activation_rms_chart(const std::vector<RunData>& runs, const ReportOptions& options) {
  LineChart chart{"act-rms", "Activation RMS per layer (last measurement)", "layer", "RMS", false, options.chart_width};
  for (size_t i = 0; i < runs.size(); ++i) {
    if (!runs[i].has_signal) continue;
    const auto last = last_per_layer(runs[i], [](const LayerSignal&) { return true; });
    Series attn{runs[i].label + " attn", run_color(i), {}}, mlp{runs[i].label + " mlp", run_color(i), {}, true};
    for (size_t layer = 0; layer < last.size(); ++layer) {
      attn.points.push_back({static_cast<double>(layer), last[layer] ? last[layer]->attn_rms : kNaN});
      mlp.points.push_back({static_cast<double>(layer), last[layer] ? last[layer]->mlp_rms : kNaN});
    }
    chart.series.push_back(attn);
    chart.series.push_back(mlp);
  }
  return render_line_chart(chart);
}

bool any_signal(const std::vector<RunData>& runs) {
  return std::any_of(runs.begin(), runs.end(), [](const RunData& r) { return r.has_signal; });
}

}  // namespace

std::string gradient_section(const std::vector<RunData>& runs, const ReportOptions& options) {
  std::string out = "<section id=\"gradients\"><h2>Gradient signal</h2>";
  if (!any_signal(runs)) return out + note("No run has signal.jsonl: gradient charts omitted.") + "</section>";
  for (size_t i = 0; i < runs.size(); ++i) {
    if (!runs[i].has_signal) {
      out += note(runs[i].label + ": no signal.jsonl, gradient charts omitted.");
      continue;
    }
    out += "<h3>" + escape_xml(runs[i].label) + "</h3><div class=\"charts\">" + projection_curves(runs[i], i, options) +
           layer_heatmap(runs[i], i, "v_proj", options) + layer_heatmap(runs[i], i, "o_proj", options) + "</div>";
  }
  return out + "</section>";
}

std::string layer_section(const std::vector<RunData>& runs, const ReportOptions& options) {
  std::string out = "<section id=\"layers\"><h2>Per-layer state</h2>";
  if (!any_signal(runs)) return out + note("No run has signal.jsonl: per-layer charts omitted.") + "</section>";
  out += "<div class=\"charts\">" + activation_rms_chart(runs, options);
  for (size_t i = 0; i < runs.size(); ++i) {
    if (runs[i].has_signal) out += quant_error_chart(runs[i], i, options);
  }
  return out + "</div></section>";
}

}  // namespace qkd::report
