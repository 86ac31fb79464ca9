// The HTML run report: loading run directories (partial last lines, malformed lines, missing files),
// the SVG chart helper (log axes, skipped points, escaping) and the rendered page.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "qkd/common/error.h"
#include "qkd/report/chart_ticks.h"
#include "qkd/report/report.h"
#include "qkd/report/svg_chart.h"
#include "qkd/report/svg_text.h"
#include "test_support.h"

using namespace qkd;
using namespace qkd::report;

namespace {

std::string fixture(const std::string& name) { return test::repo_path("tests/fixtures/report/" + name); }

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + needle.size())) ++n;
  return n;
}

// The <svg> element of the chart with data-chart="id" ("" when absent).
std::string chart_svg(const std::string& html, const std::string& id) {
  const size_t start = html.find("<svg class=\"chart\" data-chart=\"" + id + "\"");
  if (start == std::string::npos) return "";
  return html.substr(start, html.find("</svg>", start) + 6 - start);
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

const std::string& fixture_html() {
  static const std::string html = render_report({load_run(fixture("run_auto")), load_run(fixture("run_none"))});
  return html;
}

const std::vector<std::string> kStepCharts = {"kd-loss", "lr",          "grad-norm",       "ppl-0",
                                              "mc-0",    "grad-proj-0", "layers-v_proj-0", "layers-o_proj-0"};
const std::vector<std::string> kOtherCharts = {"grad-proj-1", "layers-v_proj-1", "layers-o_proj-1",
                                               "act-rms",     "quant-error-0",   "quant-error-1"};

}  // namespace

TEST(ReportLoad, ReadsFixtureRunsAndIgnoresPartialLastLines) {
  const RunData run = load_run(fixture("run_auto"));
  EXPECT_EQ(run.label, "auto <&> freeze");  // from config.json
  ASSERT_EQ(run.train.size(), 5u);          // the cut step-6 line is ignored
  EXPECT_EQ(run.train.back().step, 5);
  EXPECT_DOUBLE_EQ(run.train[2].kd, 0.9);
  ASSERT_EQ(run.evals.size(), 2u);
  EXPECT_DOUBLE_EQ(run.evals[1].ppl.at("kjv-val.u16"), 29.1);
  EXPECT_DOUBLE_EQ(run.evals[1].mc.at("kjv-cloze-val.jsonl").acc, 0.49);
  ASSERT_EQ(run.signals.size(), 3u);
  ASSERT_EQ(run.signals[0].layers.size(), 3u);
  EXPECT_EQ(run.signals[2].layers[1].grad_sq.count("v_proj"), 0u);  // frozen: absent
  ASSERT_EQ(run.events.size(), 5u);                                 // same-step events all kept
  EXPECT_EQ(run.events[2].kind, "freeze");
  EXPECT_EQ(run.events[2].modules.size(), 6u);
  EXPECT_EQ(run.events[4].kind, "release");
  EXPECT_EQ(count(::testing::PrintToString(run.notes), "partially written"), 2u);

  const RunData none = load_run(fixture("run_none"));
  EXPECT_EQ(none.label, "run_none");  // directory name
  EXPECT_TRUE(std::isnan(none.train[3].kd));
  EXPECT_FALSE(none.has_events);
  EXPECT_EQ(count(::testing::PrintToString(none.notes), "events.jsonl not found"), 1u);
}

TEST(ReportLoad, MalformedMiddleLineNamesFileAndLine) {
  const std::string message = error_of([] { load_run(fixture("bad_middle")); });
  EXPECT_NE(message.find("bad_middle/metrics.jsonl:2:"), std::string::npos) << message;
}

TEST(ReportLoad, TerminatedBadLastLineIsAnErrorButUnterminatedIsNot) {
  const std::string dir = test::scratch_dir("report-lines");
  write_file(dir + "/signal.jsonl", "{\"step\":1}\n{\"step\":2,\"lay\n");
  EXPECT_NE(error_of([&] { load_run(dir); }).find("signal.jsonl:2:"), std::string::npos);
  write_file(dir + "/signal.jsonl", "{\"step\":1}\n{\"step\":2,\"lay");
  EXPECT_EQ(load_run(dir).signals.size(), 1u);
  write_file(dir + "/signal.jsonl", "{\"step\":1}\n{\"step\":\"two\"}\n");
  EXPECT_NE(error_of([&] { load_run(dir); }).find("signal.jsonl:2: field \"step\""), std::string::npos);
}

TEST(ReportLoad, MissingOrEmptyDirectoryIsAnError) {
  EXPECT_NE(error_of([] { load_run(fixture("no_such_run")); }).find("run directory not found"), std::string::npos);
  const std::string dir = test::scratch_dir("report-empty");
  EXPECT_NE(error_of([&] { load_run(dir); }).find("no run files"), std::string::npos);
}

TEST(ReportLoad, ResumedRunSupersedesRepeatedSteps) {
  const std::string dir = test::scratch_dir("report-resume");
  std::string lines;
  for (const int step : {1, 2, 3, 2, 3, 4}) {
    lines += "{\"type\":\"train\",\"step\":" + std::to_string(step) + ",\"kd\":" + std::to_string(step) + "}\n";
  }
  write_file(dir + "/metrics.jsonl", lines);
  const RunData run = load_run(dir);
  ASSERT_EQ(run.train.size(), 4u);
  EXPECT_EQ(run.train[1].step, 2);
  EXPECT_EQ(run.train[3].step, 4);
  EXPECT_EQ(count(::testing::PrintToString(run.notes), "superseded"), 1u);
}

TEST(ReportChart, LogAxisTicksAtDecades) {
  const AxisRange axis = log_axis(2e-6, 5e-2);
  std::vector<std::string> labels;
  for (const auto& t : axis.ticks) labels.push_back(t.label);
  EXPECT_EQ(labels, (std::vector<std::string>{"1e-6", "1e-5", "1e-4", "1e-3", "0.01", "0.1"}));
  EXPECT_DOUBLE_EQ(axis.lo, 1e-6);
  EXPECT_DOUBLE_EQ(axis.hi, 0.1);
  const AxisRange narrow = log_axis(0.3, 4);
  EXPECT_EQ(narrow.ticks.front().label, "0.2");
  EXPECT_EQ(narrow.ticks.back().label, "5");
}

TEST(ReportChart, FormatsNumbersCompactly) {
  EXPECT_EQ(format_number(4.0612e-6), "4.06e-6");
  EXPECT_EQ(format_number(123456.0), "1.23e5");
  EXPECT_EQ(format_number(29.1), "29.1");
  EXPECT_EQ(format_number(0.031), "0.031");
  EXPECT_EQ(format_number(NAN), "nan");
  EXPECT_EQ(format_log_tick(5e-4), "5e-4");
}

TEST(ReportChart, LinearAxisUsesNiceSteps) {
  const AxisRange axis = linear_axis(0.13, 0.91, 5);
  EXPECT_DOUBLE_EQ(axis.lo, 0.0);
  EXPECT_NEAR(axis.hi, 1.0, 1e-12);
  EXPECT_EQ(axis.ticks.size(), 6u);
  EXPECT_EQ(linear_axis(0, 2, 6, 1).ticks.size(), 3u);  // integer axis: 0 1 2
}

TEST(ReportChart, LogScaleSkipsZerosAndNaNAndBreaksTheLine) {
  LineChart chart;
  chart.id = "t";
  chart.log_y = true;
  chart.series.push_back({"s", "#000", {{1, 1}, {2, 0}, {3, 10}, {4, NAN}, {5, 100}, {6, -1}}});
  const std::string svg = render_line_chart(chart);
  const size_t start = svg.find("<path d=\"");
  ASSERT_NE(start, std::string::npos);
  const std::string d = svg.substr(start + 9, svg.find('"', start + 9) - start - 9);
  EXPECT_EQ(count(d, "M"), 3u) << d;
  EXPECT_EQ(count(d, "L"), 0u) << d;
  EXPECT_NE(svg.find(">100</text>"), std::string::npos);
  EXPECT_EQ(svg.find("nan"), std::string::npos);
}

TEST(ReportChart, EscapesTextAndShowsEventTooltips) {
  EXPECT_EQ(escape_xml("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
  LineChart chart;
  chart.id = "e";
  chart.title = "<title & more>";
  chart.series.push_back({"x<y", "#000", {{0, 1}, {10, 2}}});
  chart.events.push_back({5, "freeze", "#f00", "froze <v_proj> & <o_proj>"});
  const std::string svg = render_line_chart(chart);
  EXPECT_NE(svg.find("&lt;title &amp; more&gt;"), std::string::npos);
  EXPECT_NE(svg.find("<title>froze &lt;v_proj&gt; &amp; &lt;o_proj&gt;</title>"), std::string::npos);
  EXPECT_EQ(svg.find("x<y"), std::string::npos);
  EXPECT_EQ(svg.find("<title & more>"), std::string::npos);
}

TEST(ReportPage, HasOneSvgPerExpectedChart) {
  const std::string& html = fixture_html();
  for (const auto& id : kStepCharts) EXPECT_EQ(count(html, "data-chart=\"" + id + "\""), 1u) << id;
  for (const auto& id : kOtherCharts) EXPECT_EQ(count(html, "data-chart=\"" + id + "\""), 1u) << id;
  EXPECT_EQ(count(html, "<svg class=\"chart\""), kStepCharts.size() + kOtherCharts.size());
}

TEST(ReportPage, TagsAreBalanced) {
  const std::string& html = fixture_html();
  EXPECT_EQ(count(html, "<svg"), count(html, "</svg>"));
  EXPECT_EQ(count(html, "<g "), count(html, "</g>"));
  EXPECT_EQ(count(html, "<title>"), count(html, "</title>"));
  EXPECT_EQ(count(html, "<table"), count(html, "</table>"));
  EXPECT_EQ(count(html, "<section"), count(html, "</section>"));
  EXPECT_EQ(html.rfind("</html>"), html.size() - 8);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(count(html, "http"), count(html, "xmlns=\"http://www.w3.org/2000/svg\""));  // no URLs but the SVG namespace
}

TEST(ReportPage, ShowsEscapedRunLabelsAndTable) {
  const std::string& html = fixture_html();
  EXPECT_NE(html.find("auto &lt;&amp;&gt; freeze"), std::string::npos);
  EXPECT_EQ(html.find("auto <&> freeze"), std::string::npos);
  EXPECT_NE(html.find("run_none"), std::string::npos);
  EXPECT_NE(html.find("kjv-val.u16: 29.1"), std::string::npos);  // final ppl
  EXPECT_NE(html.find("0.9 (step 3)"), std::string::npos);       // peak KD
  EXPECT_NE(html.find("step 3: 6 modules (o_proj×3, v_proj×3)"), std::string::npos);
  EXPECT_NE(html.find("events.jsonl not found"), std::string::npos);
  EXPECT_NE(html.find("step 5: released 2 modules (o_proj×1, v_proj×1)"), std::string::npos);
  EXPECT_NE(html.find("5 steps, 12.5 s wall, 2100 tokens/s, peak RSS 812 MB, 1 updates skipped"), std::string::npos)
      << "summary.json line";
}

TEST(ReportPage, FreezeEventIsMarkedOnEveryStepChart) {
  const std::string& html = fixture_html();
  for (const auto& id : kStepCharts) {
    const std::string svg = chart_svg(html, id);
    EXPECT_NE(svg.find("class=\"event event-freeze\""), std::string::npos) << id;
    EXPECT_NE(svg.find("step 3 freeze: model.layers.0.self_attn.v_proj"), std::string::npos) << id;
  }
  EXPECT_EQ(chart_svg(html, "grad-proj-1").find("class=\"event"), std::string::npos);  // run_none has no events
}

// auto's analysis before the first update: its reason (what it measured, what it froze) is in the runs
// table beside the freeze it caused, and its marker on the step charts.
TEST(ReportPage, ShowsTheAnalysisBeforeTheFirstUpdate) {
  const auto dir = test::scratch_dir("report-analysis");
  write_file(dir + "/metrics.jsonl",
             "{\"type\":\"train\",\"step\":1,\"loss\":1,\"kd\":0.5,\"ce\":2,\"lr\":0.001}\n"
             "{\"type\":\"train\",\"step\":2,\"loss\":0.9,\"kd\":0.4,\"ce\":2,\"lr\":0.001}\n");
  write_file(dir + "/events.jsonl",
             "{\"step\":0,\"kind\":\"analysis\",\"reason\":\"v_proj 8.2x, o_proj 3.1x the median\","
             "\"modules\":[\"model.layers.0.self_attn.v_proj\"]}\n"
             "{\"step\":0,\"kind\":\"freeze\",\"reason\":\"auto: analysis\","
             "\"modules\":[\"model.layers.0.self_attn.v_proj\"]}\n");
  const auto html = render_report({load_run(dir)});
  EXPECT_NE(html.find("step 0: v_proj 8.2x, o_proj 3.1x the median<br>step 0: 1 modules (v_proj×1)"),
            std::string::npos);
  EXPECT_NE(chart_svg(html, "kd-loss").find("class=\"event event-analysis\""), std::string::npos);
}

TEST(ReportPage, GradientChartsUseLogTicks) {
  const std::string svg = chart_svg(fixture_html(), "grad-proj-0");
  EXPECT_NE(svg.find("grad_sq (log)"), std::string::npos);
  EXPECT_NE(svg.find(">1e-3</text>"), std::string::npos) << svg.substr(0, 3000);
  EXPECT_NE(svg.find(">0.01</text>"), std::string::npos);
}

TEST(ReportPage, WriteReportWritesTheFile) {
  const std::string out = test::scratch_dir("report-out") + "/report.html";
  write_report({fixture("run_auto"), fixture("run_none")}, out);
  std::ifstream in(out);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str().rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(text.str().find("data-chart=\"kd-loss\""), std::string::npos);
  EXPECT_NE(error_of([&] { write_report({fixture("bad_middle")}, out); }).find("metrics.jsonl:2"), std::string::npos);
}
