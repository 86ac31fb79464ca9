#pragma once
// OpenBLAS picks its matrix kernels from the CPU model at load time. Inside virtual machines that
// report a generic "Intel Xeon Processor" it falls back to its Prescott (SSE3) kernels: a full kjv-val
// perplexity eval took 24.8 s with them and 11.0 s with SkylakeX kernels (docs/training.md). Call this first thing in
// main(): when OPENBLAS_CORETYPE is unset it chooses the kernel family from the CPU's feature flags and re-executes the
// program once so the library loads with it.
namespace qkd {

void ensure_fast_blas_kernels(char** argv);

}  // namespace qkd
