#pragma once
// OpenBLAS picks its matrix kernels from the CPU model at load time. Inside virtual machines that
// report a generic "Intel Xeon Processor" it falls back to its Prescott (SSE3) kernels, measured 5x
// slower here than its SkylakeX kernels on the same CPU. Call this first thing in main(): when
// OPENBLAS_CORETYPE is unset it chooses the kernel family from the CPU's feature flags and re-executes
// the program once so the library loads with it.
namespace qkd {

void ensure_fast_blas_kernels(char** argv);

}  // namespace qkd
