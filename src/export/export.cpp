#include "qkd/export/export.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/common/atomic_file.h"
#include "qkd/common/error.h"
#include "qkd/common/output_directory.h"
#include "qkd/export/aimet_encodings.h"
#include "qkd/export/compressed_tensors.h"
#include "qkd/export/gguf_writer.h"
#include "qkd/export/hf_export.h"
#include "qkd/export/serving.h"

namespace qkd::exporting {

namespace fs = std::filesystem;

const EnumTable<Format>& export_formats() {
  static const EnumTable<Format> table{
      {Format::hf, "hf"}, {Format::packed, "packed"}, {Format::encodings, "encodings"}, {Format::gguf, "gguf"}};
  return table;
}

const EnumTable<GgufType>& gguf_types() {
  static const EnumTable<GgufType> table{{GgufType::automatic, "auto"},
                                         {GgufType::q4_0, "q4_0"},
                                         {GgufType::q8_0, "q8_0"},
                                         {GgufType::mxfp4, "mxfp4"},
                                         {GgufType::nvfp4, "nvfp4"},
                                         {GgufType::f16, "f16"},
                                         {GgufType::f32, "f32"}};
  return table;
}

GgufType resolved_gguf_type(GgufType type, const quant::QuantSpec& spec) {
  if (type != GgufType::automatic) return type;
  switch (spec.format) {
    case quant::WeightFormat::nvfp4: return GgufType::nvfp4;
    case quant::WeightFormat::mxfp4: return GgufType::mxfp4;
    case quant::WeightFormat::integer: return spec.bits > 4 ? GgufType::q8_0 : GgufType::q4_0;
  }
  return GgufType::q4_0;
}

std::vector<std::string> format_names(const std::vector<Format>& list) {
  std::vector<std::string> names;
  for (const auto format : list) names.push_back(export_formats().name(format));
  return names;
}

std::vector<Format> parse_formats(const std::vector<std::string>& names, const std::string& where) {
  std::vector<Format> parsed;
  for (const auto& name : names) {
    const auto format = export_formats().find(name);
    if (!format) fail(where, "unknown export format \"" + name + "\" (expected hf, packed, encodings or gguf)");
    if (std::find(parsed.begin(), parsed.end(), *format) == parsed.end()) parsed.push_back(*format);
  }
  return parsed;
}

std::vector<Format> parse_format_list(const std::string& names, const std::string& where) {
  std::vector<std::string> split;
  std::stringstream in(names);
  std::string name;
  while (std::getline(in, name, ',')) {
    if (name.empty()) fail(where, "empty format name in \"" + names + "\"");
    split.push_back(name);
  }
  if (split.empty()) fail(where, "no format given");
  return parse_formats(split, where);
}

void write_hf_companion_files(const ExportSource& source, const std::string& dir, const nlohmann::json& config_json) {
  const fs::path from(source.tokenizer_dir), to(dir);
  write_text_atomically((to / "config.json").string(), config_json.dump(2) + "\n");
  if (fs::is_regular_file(from / "generation_config.json")) {
    copy_file_atomically((from / "generation_config.json").string(), (to / "generation_config.json").string());
  } else {
    const auto& c = source.student.config();
    const nlohmann::json generation = {{"bos_token_id", c.bos_token_id}, {"eos_token_id", c.eos_token_id}};
    write_text_atomically((to / "generation_config.json").string(), generation.dump(2) + "\n");
  }
  checkpoint::copy_tokenizer_files(source.tokenizer_dir, dir);
}

namespace {
std::string format_directory(const std::string& out_dir, Format format) {
  return (fs::path(out_dir) / export_formats().name(format)).string();
}
}  // namespace

std::string format_kind(Format format) { return "export-" + export_formats().name(format); }

std::string format_path(const std::string& out_dir, Format format) {
  const auto dir = format_directory(out_dir, format);
  return format == Format::gguf ? (fs::path(dir) / "model.gguf").string() : dir;
}

namespace {

void check_format(const ExportSource& source, Format format, const ExportOptions& options) {
  switch (format) {
    case Format::hf: return;  // any student: the dequantized weights are plain tensors
    case Format::packed: return check_packed(source);
    case Format::encodings: return check_encodings(source);
    case Format::gguf: return check_gguf(source, options);
  }
}

void write_format(const ExportSource& source, Format format, const std::string& path, const ExportOptions& options) {
  switch (format) {
    case Format::hf: return write_hf(source, path, options);
    case Format::packed: return write_packed(source, path, options);
    case Format::encodings: return write_encodings(source, path, options);
    case Format::gguf: {
      // The published gguf/ directory holds model.gguf alone: it is built whole beside it and swapped in,
      // so that a killed export leaves no temporary file inside it.
      const auto dir = fs::path(path).parent_path().string();
      return write_directory_atomically(dir, format_kind(Format::gguf), [&](const std::string& temp) {
        write_gguf(source, (fs::path(temp) / fs::path(path).filename()).string(), options);
      });
    }
  }
}

void log_serving_report(const std::string& format, const ServingReport& report) {
  std::string runtimes;
  for (const auto& r : report.runtimes) runtimes += (runtimes.empty() ? "" : "; ") + r;
  spdlog::info("{}: loads as written in: {}", format, runtimes);
  for (const auto& w : report.warnings) spdlog::warn("{}: {}", format, w);
}

}  // namespace

void check_export(const ExportSource& source, const std::vector<Format>& formats, const ExportOptions& options) {
  for (const auto format : formats) check_format(source, format, options);
}

std::vector<std::string> export_student(const ExportSource& source, const std::vector<Format>& formats,
                                        const std::string& out_dir, const ExportOptions& options) {
  check_export(source, formats, options);
  // Every destination is checked before the first is written: a foreign directory fails the export
  // before any format has replaced anything.
  for (const auto format : formats) claim_output_directory(format_directory(out_dir, format), format_kind(format));
  fs::create_directories(out_dir);
  remove_stale_temporaries(out_dir);  // what an export killed here left
  std::vector<std::string> written;
  for (const auto format : formats) {
    const auto path = format_path(out_dir, format);
    write_format(source, format, path, options);
    spdlog::info("exported {} to {}", export_formats().name(format), path);
    log_serving_report(export_formats().name(format), serving_report(source, format, options));
    written.push_back(path);
  }
  return written;
}

}  // namespace qkd::exporting
