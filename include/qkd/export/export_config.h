#pragma once
// The `export` section of a run config: the formats a finished run writes to <run_dir>/export/<format>
// and their settings.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "qkd/common/config_fields.h"
#include "qkd/common/dtype_names.h"
#include "qkd/export/export.h"

namespace qkd::exporting {

struct ExportConfig {
  std::vector<Format> formats = {Format::hf};  // empty: no export
  torch::Dtype dtype = torch::kFloat16;        // float weights of hf and packed
  GgufType gguf_type = GgufType::automatic;    // gguf projections: the student's own type, or one named
  template <class Fields>
  void fields(Fields& f) {
    f.retired("hf", "replaced by export.formats, a list such as [\"hf\", \"gguf\"] ([] for none)");
    f.list("formats", formats, format_names, parse_formats);
    f.choice("dtype", dtype, model_dtypes());
    f.choice("gguf_type", gguf_type, gguf_types());
  }
  ExportOptions options() const;
};

}  // namespace qkd::exporting
