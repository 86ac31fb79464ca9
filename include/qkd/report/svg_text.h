#pragma once
// Small text helpers shared by the SVG charts and the HTML report: escaping, number formatting and
// the fixed colour palettes (one colour per run, one per projection type).
#include <string>

namespace qkd::report {

// Escapes & < > " ' so that the result is safe both as element text and inside a quoted attribute.
std::string escape_xml(const std::string& text);

// Compact human-readable number: 3-4 significant digits, exponent form for very small/large values,
// "nan"/"inf" for non-finite values.
std::string format_number(double value);

// Tick label on a log axis for value 10^k (and its 2x / 5x multiples): "1e-4", "0.01", "100", "2e5".
std::string format_log_tick(double value);

// SVG coordinate with one decimal ("12.3").
std::string coord(double value);

// Colour of the index-th run (cycles through a 10-colour palette).
std::string run_color(size_t index);

// Colour of a projection type ("q_proj" ... "down_proj"); unknown names get a neutral grey.
std::string projection_color(const std::string& projection);

}  // namespace qkd::report
