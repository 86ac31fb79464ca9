#pragma once
// Independent pieces of work spread over LibTorch's intra-op threads, each piece on one core with
// its torch calls single-threaded. For many small products (the heads of an attention layer) this
// beats letting OpenBLAS split each product over its threads: with 2 threads, a batched
// [256, 32] x [32, 256] attention product ran at 41 GFLOP/s, against 76 for one thread alone.
#include <functional>

namespace qkd::kernels {

// Runs task(i) for i in [0, count) over the intra-op threads. No autograd is recorded inside a task.
void parallel_tasks(int64_t count, const std::function<void(int64_t)>& task);

}  // namespace qkd::kernels
