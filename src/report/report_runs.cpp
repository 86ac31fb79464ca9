// The run table at the top of the report.
#include <cmath>
#include <map>
#include <sstream>

#include "qkd/report/report_sections.h"
#include "qkd/report/svg_text.h"

namespace qkd::report {

namespace {

using nlohmann::json;

// config["a"]["b"] for "a.b", as display text; "–" when absent.
std::string config_text(const json& config, const std::string& dotted) {
  const json* node = &config;
  std::istringstream parts(dotted);
  for (std::string key; std::getline(parts, key, '.');) {
    if (!node->is_object() || !node->contains(key)) return "–";
    node = &(*node)[key];
  }
  if (node->is_string()) return node->get<std::string>();
  if (node->is_number()) return format_number(node->get<double>());
  return node->dump();
}

std::string final_ppl(const RunData& run) {
  std::map<std::string, double> last;
  for (const auto& e : run.evals) {
    for (const auto& [name, value] : e.ppl) last[name] = value;
  }
  std::string out;
  for (const auto& [name, value] : last)
    out += (out.empty() ? "" : "<br>") + escape_xml(name) + ": " + format_number(value);
  return out.empty() ? "–" : out;
}

std::string final_mc(const RunData& run) {
  std::map<std::string, McScore> last;
  for (const auto& e : run.evals) {
    for (const auto& [name, score] : e.mc) last[name] = score;
  }
  std::string out;
  for (const auto& [name, s] : last) {
    out += (out.empty() ? "" : "<br>") + escape_xml(name) + ": acc " + format_number(s.acc) + ", norm " +
           format_number(s.acc_norm) + " (n=" + std::to_string(s.n) + ")";
  }
  return out.empty() ? "–" : out;
}

std::string final_and_peak_kd(const RunData& run, bool peak) {
  double best = NAN, last = NAN;
  int64_t best_step = 0;
  for (const auto& p : run.train) {
    if (!std::isfinite(p.kd)) continue;
    last = p.kd;
    if (!(p.kd <= best)) best = p.kd, best_step = p.step;
  }
  if (!peak) return format_number(last);
  return std::isnan(best) ? "nan" : format_number(best) + " (step " + std::to_string(best_step) + ")";
}

std::string event_counts(const RunData& run) {
  if (!run.has_events) return "–";
  std::map<std::string, int> by_kind;
  for (const auto& e : run.events) ++by_kind[e.kind];
  std::string out = std::to_string(run.events.size());
  std::string detail;
  for (const auto& [kind, n] : by_kind)
    detail += (detail.empty() ? "" : ", ") + escape_xml(kind) + " " + std::to_string(n);
  return detail.empty() ? out : out + " (" + detail + ")";
}

// "model.layers.3.self_attn.v_proj" -> "v_proj"
std::string module_kind(const std::string& module) {
  const size_t dot = module.rfind('.');
  return dot == std::string::npos ? module : module.substr(dot + 1);
}

std::string freeze_summary(const RunData& run) {
  std::string out = "policy " + escape_xml(config_text(run.config, "freeze.policy"));
  for (const auto& e : run.events) {
    // auto's analysis before the first update says why its freeze at step 0 froze what it did.
    if (e.kind == "analysis") out += "<br>step " + std::to_string(e.step) + ": " + escape_xml(e.reason);
    if (e.kind != "freeze" && e.kind != "release") continue;
    std::map<std::string, int> kinds;
    for (const auto& m : e.modules) ++kinds[module_kind(m)];
    std::string detail;
    for (const auto& [kind, n] : kinds)
      detail += (detail.empty() ? "" : ", ") + escape_xml(kind) + "×" + std::to_string(n);
    out += "<br>step " + std::to_string(e.step) + ": " + (e.kind == "release" ? "released " : "") +
           std::to_string(e.modules.size()) + " modules" + (detail.empty() ? "" : " (" + detail + ")");
  }
  return out;
}

std::string quant_text(const json& config) {
  return config_text(config, "quant.bits") + "-bit " + config_text(config, "quant.granularity");
}

std::string run_row(const RunData& run, size_t index) {
  std::ostringstream row;
  row << "<tr><td><span class=\"swatch\" style=\"background:" << run_color(index) << "\"></span><b>"
      << escape_xml(run.label) << "</b><div class=\"dir\">" << escape_xml(run.dir) << "</div></td><td>"
      << escape_xml(quant_text(run.config)) << "</td><td>" << escape_xml(config_text(run.config, "optim.lr"))
      << "</td><td>" << escape_xml(config_text(run.config, "train.steps")) << "</td><td>" << final_ppl(run)
      << "</td><td>" << final_mc(run) << "</td><td>" << final_and_peak_kd(run, false) << "</td><td>"
      << final_and_peak_kd(run, true) << "</td><td>" << event_counts(run) << "</td><td>" << freeze_summary(run)
      << "</td></tr>";
  return row.str();
}

// The run's cost from summary.json, one line: steps, wall time, throughput, memory, skipped steps.
std::string summary_text(const json& summary) {
  auto number = [&](const char* key) {
    return summary.contains(key) && summary.at(key).is_number() ? summary.at(key).get<double>() : NAN;
  };
  std::string out;
  auto add = [&](const std::string& part) { out += (out.empty() ? "" : ", ") + part; };
  if (!std::isnan(number("steps_completed"))) add(format_number(number("steps_completed")) + " steps");
  if (!std::isnan(number("wall_seconds"))) add(format_number(number("wall_seconds")) + " s wall");
  if (!std::isnan(number("tokens_per_second"))) add(format_number(number("tokens_per_second")) + " tokens/s");
  if (!std::isnan(number("peak_rss_mb"))) add("peak RSS " + format_number(number("peak_rss_mb")) + " MB");
  if (number("skipped_steps") > 0) add(format_number(number("skipped_steps")) + " updates skipped");
  if (summary.value("interrupted", false)) add("interrupted");
  return out;
}

std::string run_notes(const RunData& run) {
  std::string out;
  for (const auto& text : run.notes) out += "<li>" + escape_xml(run.label) + ": " + escape_xml(text) + "</li>";
  if (run.summary.is_object()) {
    const auto text = summary_text(run.summary);
    if (!text.empty()) out += "<li>" + escape_xml(run.label) + ": " + escape_xml(text) + "</li>";
  }
  return out;
}

}  // namespace

std::string runs_section(const std::vector<RunData>& runs) {
  std::ostringstream out;
  out << "<section id=\"runs\"><h2>Runs</h2><table "
         "class=\"runs\"><thead><tr><th>run</th><th>quant</th><th>lr</th><th>steps</th>"
         "<th>final ppl</th><th>cloze / MC</th><th>final KD</th><th>peak "
         "KD</th><th>events</th><th>freeze</th></tr></thead><tbody>";
  for (size_t i = 0; i < runs.size(); ++i) out << run_row(runs[i], i);
  out << "</tbody></table>";
  std::string notes;
  for (const auto& run : runs) notes += run_notes(run);
  if (!notes.empty()) out << "<ul class=\"notes\">" << notes << "</ul>";
  out << "</section>";
  return out.str();
}

}  // namespace qkd::report
