#include "qkd/common/blas_kernels.h"

#include <unistd.h>

#include <cstdlib>

namespace qkd {

namespace {
const char* kernel_family_for_this_cpu() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  return nullptr;  // leave OpenBLAS's own choice
}
}  // namespace

void ensure_fast_blas_kernels(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") || std::getenv("QKD_BLAS_REEXEC")) return;
  const char* family = kernel_family_for_this_cpu();
  if (!family) return;
  setenv("OPENBLAS_CORETYPE", family, 1);
  setenv("QKD_BLAS_REEXEC", "1", 1);  // never loop, even if exec'ing ourselves misbehaves
  execv("/proc/self/exe", argv);
  // execv only returns on failure: carry on with the kernels already loaded.
}

}  // namespace qkd
