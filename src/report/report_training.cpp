// Step charts overlaid across runs (KD loss, learning rate, gradient norm, validation), and the
// event markers every step chart carries.
#include <functional>
#include <set>
#include <sstream>

#include "qkd/report/report_sections.h"
#include "qkd/report/svg_text.h"

namespace qkd::report {

namespace {

constexpr size_t kModulesInTooltip = 6;

std::string event_tooltip(const RunData& run, const RunEvent& e) {
  std::ostringstream text;
  text << run.label << ": step " << e.step << ' ' << e.kind;
  if (!e.series.empty())
    text << ' ' << e.series << " = " << format_number(e.value) << " (baseline " << format_number(e.baseline) << ')';
  for (size_t i = 0; i < e.modules.size() && i < kModulesInTooltip; ++i) text << (i == 0 ? ": " : ", ") << e.modules[i];
  if (e.modules.size() > kModulesInTooltip) text << " … (+" << e.modules.size() - kModulesInTooltip << " more)";
  if (!e.reason.empty()) text << " — " << e.reason;
  return text.str();
}

using TrainValue = std::function<double(const TrainPoint&)>;

LineChart overlaid_train_chart(const std::vector<RunData>& runs, const ReportOptions& options, const std::string& id,
                               const std::string& title, const std::string& y_label, bool log_y,
                               const TrainValue& value) {
  LineChart chart{id, title, "step", y_label, log_y, options.chart_width};
  for (size_t i = 0; i < runs.size(); ++i) {
    Series s{runs[i].label, run_color(i), {}};
    for (const auto& p : runs[i].train) s.points.push_back({static_cast<double>(p.step), value(p)});
    chart.series.push_back(s);
  }
  chart.events = all_event_markers(runs);
  return chart;
}

std::set<std::string> dataset_names(const std::vector<RunData>& runs, bool ppl) {
  std::set<std::string> names;
  for (const auto& run : runs) {
    for (const auto& e : run.evals) {
      if (ppl)
        for (const auto& entry : e.ppl) names.insert(entry.first);
      else
        for (const auto& entry : e.mc) names.insert(entry.first);
    }
  }
  return names;
}

std::string validation_charts(const std::vector<RunData>& runs, const ReportOptions& options) {
  std::string out;
  size_t n = 0;
  for (const auto& name : dataset_names(runs, true)) {
    LineChart chart{"ppl-" + std::to_string(n++), "Validation perplexity: " + name, "step", "perplexity", false,
                    options.chart_width};
    for (size_t i = 0; i < runs.size(); ++i) {
      Series s{runs[i].label, run_color(i), {}};
      for (const auto& e : runs[i].evals) {
        if (e.ppl.count(name)) s.points.push_back({static_cast<double>(e.step), e.ppl.at(name)});
      }
      chart.series.push_back(s);
    }
    chart.events = all_event_markers(runs);
    out += render_line_chart(chart);
  }
  n = 0;
  for (const auto& name : dataset_names(runs, false)) {
    LineChart chart{"mc-" + std::to_string(n++), "Multiple choice: " + name, "step", "accuracy", false,
                    options.chart_width};
    for (size_t i = 0; i < runs.size(); ++i) {
      Series acc{runs[i].label + " acc", run_color(i), {}}, norm{runs[i].label + " acc_norm", run_color(i), {}, true};
      for (const auto& e : runs[i].evals) {
        if (!e.mc.count(name)) continue;
        acc.points.push_back({static_cast<double>(e.step), e.mc.at(name).acc});
        norm.points.push_back({static_cast<double>(e.step), e.mc.at(name).acc_norm});
      }
      chart.series.push_back(acc);
      chart.series.push_back(norm);
    }
    chart.events = all_event_markers(runs);
    out += render_line_chart(chart);
  }
  return out.empty() ? note("No evaluation records in metrics.jsonl: validation charts omitted.") : out;
}

}  // namespace

const std::vector<std::string>& projection_names() {
  static const std::vector<std::string> names = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                 "gate_proj", "up_proj", "down_proj"};
  return names;
}

std::string note(const std::string& text) { return "<p class=\"note\">" + escape_xml(text) + "</p>"; }

std::vector<EventMarker> run_event_markers(const RunData& run, const std::string& color) {
  std::vector<EventMarker> markers;
  for (const auto& e : run.events)
    markers.push_back({static_cast<double>(e.step), e.kind, color, event_tooltip(run, e)});
  return markers;
}

std::vector<EventMarker> all_event_markers(const std::vector<RunData>& runs) {
  std::vector<EventMarker> markers;
  for (size_t i = 0; i < runs.size(); ++i) {
    const auto more = run_event_markers(runs[i], run_color(i));
    markers.insert(markers.end(), more.begin(), more.end());
  }
  return markers;
}

std::string training_section(const std::vector<RunData>& runs, const ReportOptions& options) {
  std::string out = "<section id=\"training\"><h2>Training</h2><div class=\"charts\">";
  bool any_metrics = false;
  for (const auto& run : runs) any_metrics = any_metrics || run.has_metrics;
  if (!any_metrics) return out + "</div>" + note("No run has metrics.jsonl: training charts omitted.") + "</section>";
  out += render_line_chart(overlaid_train_chart(runs, options, "kd-loss", "KD loss", "KD loss", options.log_loss,
                                                [](const TrainPoint& p) { return p.kd; }));
  out += render_line_chart(overlaid_train_chart(runs, options, "lr", "Learning rate", "lr", false,
                                                [](const TrainPoint& p) { return p.lr; }));
  out += render_line_chart(overlaid_train_chart(runs, options, "grad-norm", "Gradient norm", "grad norm", true,
                                                [](const TrainPoint& p) { return p.grad_norm; }));
  out += validation_charts(runs, options);
  return out + "</div></section>";
}

}  // namespace qkd::report
