#include "qkd/export/export_config.h"

#include "qkd/common/error.h"

namespace qkd::exporting {

ExportOptions ExportConfig::options() const {
  ExportOptions options;
  options.dtype = dtype;
  options.gguf_type = gguf_type;
  return options;
}

}  // namespace qkd::exporting
