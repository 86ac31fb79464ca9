#include "qkd/export/export_config.h"

#include "qkd/common/error.h"

namespace qkd::exporting {

void ExportConfig::check(const std::string& where) const {
  if (gguf_type != "q4_0" && gguf_type != "q8_0")
    fail(where + ".gguf_type", "expected one of q4_0, q8_0, got \"" + gguf_type + "\"");
}

ExportOptions ExportConfig::options() const {
  ExportOptions options;
  options.dtype = dtype;
  options.gguf_type = gguf_type;
  return options;
}

}  // namespace qkd::exporting
