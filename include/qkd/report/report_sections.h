#pragma once
// The sections of the report page; each returns an HTML fragment (charts are inline <svg>).
#include <string>
#include <vector>

#include "qkd/report/report.h"
#include "qkd/report/svg_chart.h"

namespace qkd::report {

// Run table (labels, key config, final numbers, events, freezes) and the per-run notes.
std::string runs_section(const std::vector<RunData>& runs);

// Step charts overlaid across runs: KD loss, learning rate, gradient norm, validation ppl and MC accuracy.
std::string training_section(const std::vector<RunData>& runs, const ReportOptions& options);

// Per-run gradient signal: total squared gradient per projection type, per-layer v/o heat maps.
std::string gradient_section(const std::vector<RunData>& runs, const ReportOptions& options);

// Per-layer state at the last measurement: activation RMS (overlaid) and quantization error (per run).
std::string layer_section(const std::vector<RunData>& runs, const ReportOptions& options);

// Event markers of one run in `color`, and of all runs each in its own run colour.
std::vector<EventMarker> run_event_markers(const RunData& run, const std::string& color);
std::vector<EventMarker> all_event_markers(const std::vector<RunData>& runs);

// "<p class="note">...</p>" with escaped text.
std::string note(const std::string& text);

// The projection types in display order.
const std::vector<std::string>& projection_names();

}  // namespace qkd::report
