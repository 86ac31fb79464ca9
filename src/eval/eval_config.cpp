#include "qkd/eval/eval_config.h"

#include <filesystem>

#include "qkd/common/error.h"

namespace qkd::eval {

void EvalConfig::check(const std::string& where) const {
  for (size_t i = 0; i < ppl.size(); ++i)
    if (!std::filesystem::exists(ppl[i]))
      fail(where + ".ppl[" + std::to_string(i) + "]", "file not found: " + ppl[i]);
  for (size_t i = 0; i < mc.size(); ++i)
    if (!std::filesystem::exists(mc[i])) fail(where + ".mc[" + std::to_string(i) + "]", "file not found: " + mc[i]);
}

}  // namespace qkd::eval
