#pragma once
// Exporting a trained (or round-to-nearest) student in the formats runtimes load. One writer per
// format (hf_export.h, compressed_tensors.h, aimet_encodings.h, gguf_writer.h), all over the integer
// codes of integer_weights.h; export_student() checks every requested format, then writes each into
// <out>/<format>/ whole or not at all.
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "qkd/common/enum_table.h"
#include "qkd/model/llama.h"
#include "qkd/quant/quant_spec.h"

namespace qkd::exporting {

enum class Format { hf, packed, encodings, gguf };

// The ggml type of the quantized projections in `gguf`. `automatic` (config name "auto") is the
// student's own: q4_0 for an integer grid of up to 4 bits, q8_0 above, mxfp4 / nvfp4 for those formats.
// f16 / f32: the projections dequantized (the student's weights as floats, f32 exactly): for
// llama-quantize to re-quantize, or to check the architecture in llama.cpp without its quantized
// matmul arithmetic.
enum class GgufType { automatic, q4_0, q8_0, mxfp4, nvfp4, f16, f32 };
const EnumTable<GgufType>& gguf_types();  // "auto" | "q4_0" | "q8_0" | "mxfp4" | "nvfp4" | "f16" | "f32"
// `type` with automatic resolved for a student quantized as `spec`.
GgufType resolved_gguf_type(GgufType type, const quant::QuantSpec& spec);

// "hf" | "packed" | "encodings" | "gguf"; throws qkd::Error naming `where` for anything else.
const EnumTable<Format>& export_formats();  // "hf" | "packed" | "encodings" | "gguf"
std::vector<std::string> format_names(const std::vector<Format>& formats);
// What a format's directory is marked as (common/output_directory.h): "export-hf", ...
std::string format_kind(Format format);
// {"hf", "gguf", "hf"} -> {hf, gguf}: duplicates removed, order kept; an empty list stays empty.
std::vector<Format> parse_formats(const std::vector<std::string>& names, const std::string& where);
// "hf,gguf" -> {hf, gguf} likewise; an empty name or list fails.
std::vector<Format> parse_format_list(const std::string& names, const std::string& where);

// What every writer reads: the student with its quantizers attached and their state loaded, its quant
// spec, and the directory holding tokenizer.model (and, when present, generation_config.json).
struct ExportSource {
  model::LlamaForCausalLMImpl& student;
  quant::QuantSpec spec;
  std::string tokenizer_dir;
};

// What every Hugging Face directory format (hf, packed, encodings) holds beside its weights:
// `config_json` as config.json, the source's generation_config.json (or one with the model's special
// ids), and its tokenizer files: tokenizer.model and/or tokenizer.json (one is required: fails naming
// it when both are missing), with tokenizer_config.json, special_tokens_map.json and chat_template.jinja
// when present.
void write_hf_companion_files(const ExportSource& source, const std::string& dir, const nlohmann::json& config_json);

struct ExportOptions {
  torch::Dtype dtype = torch::kFloat16;        // float weights of `hf` (and embeddings/norms of `packed`)
  int64_t max_shard_bytes = int64_t{5} << 30;  // `hf`: above this, sharded with model.safetensors.index.json
  GgufType gguf_type = GgufType::automatic;    // `gguf` projections
};

// Where a format lands below `out_dir`: <out_dir>/hf, <out_dir>/packed, <out_dir>/encodings,
// <out_dir>/gguf/model.gguf.
std::string format_path(const std::string& out_dir, Format format);

// Throws qkd::Error naming the tensor or setting when a format cannot hold the student; writes nothing.
void check_export(const ExportSource& source, const std::vector<Format>& formats, const ExportOptions& options = {});

// Checks every format against the student first (a shape a format cannot hold fails here, naming the
// tensor, before any file is written), then writes each. Returns the written paths in `formats` order.
std::vector<std::string> export_student(const ExportSource& source, const std::vector<Format>& formats,
                                        const std::string& out_dir, const ExportOptions& options = {});

}  // namespace qkd::exporting
