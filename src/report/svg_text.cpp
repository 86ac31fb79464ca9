#include "qkd/report/svg_text.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <map>

namespace qkd::report {

std::string escape_xml(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

namespace {
std::string printf_number(const char* format, double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), format, value);
  std::string text = buffer;
  // "4.06e-06" -> "4.06e-6", "2e+05" -> "2e5"
  const size_t e = text.find('e');
  if (e == std::string::npos) return text;
  std::string exponent = text.substr(e + 1);
  const bool negative = !exponent.empty() && exponent[0] == '-';
  if (!exponent.empty() && (exponent[0] == '-' || exponent[0] == '+')) exponent.erase(0, 1);
  exponent.erase(0, std::min(exponent.find_first_not_of('0'), exponent.size() - 1));
  return text.substr(0, e + 1) + (negative ? "-" : "") + exponent;
}
}  // namespace

std::string format_number(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  if (value == 0) return "0";
  const double magnitude = std::fabs(value);
  if (magnitude >= 1e5 || magnitude < 1e-3) return printf_number("%.3g", value);
  return printf_number("%.4g", value);
}

std::string format_log_tick(double value) {
  if (!(value > 0) || !std::isfinite(value)) return format_number(value);
  if (value >= 1e-2 && value < 1e4) return printf_number("%g", value);
  const int exponent = static_cast<int>(std::floor(std::log10(value) + 1e-9));
  const double mantissa = value / std::pow(10.0, exponent);
  const long rounded = std::lround(mantissa);
  return std::to_string(rounded) + "e" + std::to_string(exponent);
}

std::string coord(double value) { return printf_number("%.1f", value); }

std::string run_color(size_t index) {
  static const std::array<const char*, 10> palette = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                                      "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"};
  return palette[index % palette.size()];
}

std::string projection_color(const std::string& projection) {
  static const std::map<std::string, std::string> colors = {
      {"q_proj", "#1f77b4"},    {"k_proj", "#17becf"},  {"v_proj", "#d62728"},   {"o_proj", "#ff7f0e"},
      {"gate_proj", "#2ca02c"}, {"up_proj", "#9467bd"}, {"down_proj", "#8c564b"}};
  const auto it = colors.find(projection);
  return it == colors.end() ? "#7f7f7f" : it->second;
}

}  // namespace qkd::report
