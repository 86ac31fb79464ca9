#pragma once
// Independent pieces of work spread over LibTorch's intra-op threads, each piece on one core with
// its torch calls single-threaded. For many small products (the heads of an attention layer) this
// beats letting OpenBLAS split each product over its threads: with 2 threads, a batched
// [256, 32] x [32, 256] attention product ran at 41 GFLOP/s, against 76 for one thread alone.
#include <functional>

namespace qkd::kernels {

// Runs task(i) for i in [0, count) over the intra-op threads. No autograd is recorded inside a task.
void parallel_tasks(int64_t count, const std::function<void(int64_t)>& task);

// Runs work(i) for i in [0, count) at once, each on its own intra-op thread (count <= the number of
// threads), with every torch operation and BLAS product inside single-threaded: LibTorch's OpenMP
// backend and an OpenMP BLAS both see they are inside a parallel region. Autograd records as usual:
// work(0) runs on the calling thread with its grad mode, the others start with grad mode on. The
// first exception a piece throws is rethrown here once every piece has ended.
void run_on_cores(int64_t count, const std::function<void(int64_t)>& work);

// Whether run_on_cores keeps matrix products on one core each: LibTorch's intra-op backend is OpenMP
// and the BLAS is not one that runs its own thread pool regardless (OpenBLAS built with pthreads).
bool cores_run_single_threaded_products();

}  // namespace qkd::kernels
