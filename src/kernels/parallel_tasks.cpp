#include "qkd/kernels/parallel_tasks.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <omp.h>
#include <torch/torch.h>

#include <atomic>
#include <exception>
#include <string>

namespace qkd::kernels {

namespace {
void run_piece(const std::function<void(int64_t)>& work, int64_t i, std::exception_ptr& first_error,
               std::atomic<bool>& failed) {
  try {
    work(i);
  } catch (...) {
    if (!failed.exchange(true)) first_error = std::current_exception();
  }
}
}  // namespace

void parallel_tasks(int64_t count, const std::function<void(int64_t)>& task) {
  at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
    // Worker threads start with the default grad mode: nothing here may be recorded.
    torch::NoGradGuard no_grad;
    for (int64_t i = begin; i < end; ++i) task(i);
  });
}

void run_on_cores(int64_t count, const std::function<void(int64_t)>& work) {
  TORCH_CHECK(count >= 1 && count <= at::get_num_threads(), "run_on_cores: ", count, " pieces for ",
              at::get_num_threads(), " threads");
  if (count == 1) return work(0);
  // An explicit team of `count` threads, one piece each: at::parallel_for may hand every piece to
  // one thread when the runtime sizes its team smaller. The calling thread is thread 0.
  std::exception_ptr first_error;
  std::atomic<bool> failed{false};
#pragma omp parallel num_threads(static_cast<int>(count))
  {
    const int64_t i = omp_get_thread_num();
    if (omp_get_num_threads() != count) {
      // Fewer threads than pieces: thread 0 runs them all (correct, only slower).
      if (i == 0)
        for (int64_t j = 0; j < count; ++j) run_piece(work, j, first_error, failed);
    } else {
      run_piece(work, i, first_error, failed);
    }
  }
  if (first_error) std::rethrow_exception(first_error);
}

namespace {
// OpenBLAS says how it was built (0 sequential, 1 pthreads, 2 OpenMP); other BLAS libraries lack the
// symbol. A pthreads OpenBLAS would run every product of every core on all its own threads at once.
bool blas_runs_own_thread_pool() {
  using Query = int (*)();
  const auto query = reinterpret_cast<Query>(dlsym(RTLD_DEFAULT, "openblas_get_parallel"));
  return query && query() == 1;
}
}  // namespace

bool cores_run_single_threaded_products() {
  static const bool single = [] {
    return at::get_parallel_info().find("ATen parallel backend: OpenMP") != std::string::npos &&
           !blas_runs_own_thread_pool();
  }();
  return single;
}

}  // namespace qkd::kernels
