#include "qkd/kernels/parallel_tasks.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

namespace qkd::kernels {

void parallel_tasks(int64_t count, const std::function<void(int64_t)>& task) {
  at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
    // Worker threads start with the default grad mode: nothing here may be recorded.
    torch::NoGradGuard no_grad;
    for (int64_t i = begin; i < end; ++i) task(i);
  });
}

}  // namespace qkd::kernels
