#pragma once
// One projection's tensor data in a ggml block type: the student's own codes and scales when its grid
// is the type's (Q4_0 / Q8_0 for symmetric integer grids of at most 4 / 8 bits with one scale per 32
// values, MXFP4 / NVFP4 for those fp4 formats), otherwise re-quantized, with the weight error that adds.
// Private to the export area (gguf_writer.cpp).
#include <torch/torch.h>

#include <string>
#include <vector>

#include "gguf_blocks.h"
#include "gguf_format.h"
#include "qkd/export/export.h"
#include "qkd/model/llama.h"

namespace qkd::exporting::gguf {

// The row permutation llama.cpp's converter applies to q_proj / k_proj (LlamaModel.permute): Hugging
// Face's rotate-half layout of each head to ggml's interleaved (GGML_ROPE_TYPE_NORM) pairs.
torch::Tensor permute_rows(const torch::Tensor& x, int64_t heads);

// The ggml type of the projections for a resolved GgufType (never automatic).
TensorType projection_tensor_type(GgufType resolved);

// A projection's grid as far as ggml's block types care.
struct GridShape {
  quant::WeightFormat format = quant::WeightFormat::integer;
  int64_t bits = 4;
  bool symmetric = true;
  int64_t block_length = 0;  // values sharing one scale along a row (per tensor: all of them)
};
// "" when the grid is `type`'s exactly (written from its own codes), else why not
// ("asymmetric 4-bit grid", "groups of 48 (not a multiple of 32)", "nvfp4 grid", ...).
std::string grid_misfit(const GridShape& grid, TensorType type);

struct ProjectionReport {
  std::string name;
  ErrorSums sums;
  bool requantized = false;
  std::string why;
};

struct ProjectionData {
  std::string bytes;
  float tensor_scale = 1.0f;  // NVFP4: what llama.cpp multiplies the product by (the ".scale" tensor)
};

// The student's projection `hf_name` (its weight) in `type`, rows permuted over `permute_heads`
// heads (0: none); `report` says whether it was written from the student's own codes.
ProjectionData projection_data(model::LlamaForCausalLMImpl& student, const std::string& hf_name, TensorType type,
                               int64_t permute_heads, ProjectionReport& report);

// One info line when every projection kept its codes (or was written dequantized, as `type` f16 / f32),
// else one warning with the error added.
void log_projection_reports(const std::vector<ProjectionReport>& reports, TensorType type, const std::string& type_name);

}  // namespace qkd::exporting::gguf
