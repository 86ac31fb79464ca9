#include "qkd/train/row_shards.h"

#include <ATen/Parallel.h>

#include <algorithm>

#include "qkd/kernels/parallel_tasks.h"

namespace qkd::train {

int64_t row_shard_count(const ComputeSection& compute, const torch::Device& device, int64_t rows,
                        bool activations_measured) {
  if (!device.is_cpu() || compute.cpu_parallelism != CpuParallelism::rows) return 1;
  if (activations_measured || !kernels::cores_run_single_threaded_products()) return 1;
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows));
}

std::vector<RowRange> row_ranges(int64_t rows, int64_t shards) {
  std::vector<RowRange> ranges;
  int64_t begin = 0;
  for (int64_t i = 0; i < shards; ++i) {
    const int64_t count = rows / shards + (i < rows % shards ? 1 : 0);
    ranges.push_back({begin, count});
    begin += count;
  }
  return ranges;
}

MicroBatch micro_batch_rows(const MicroBatch& batch, RowRange range, const loss::LossDenominators& whole) {
  const auto rows = [&](const torch::Tensor& x) { return x.narrow(0, range.begin, range.count); };
  MicroBatch shard;
  shard.input_ids = rows(batch.input_ids);
  if (batch.documents)
    shard.documents = model::DocumentLayout{rows(batch.documents->starts), rows(batch.documents->positions)};
  shard.labels = rows(batch.labels);
  shard.denominators = whole;
  return shard;
}

void accumulate_shard_gradients(const std::vector<torch::Tensor>& parameters,
                                std::vector<std::vector<torch::Tensor>>& shard_gradients) {
  for (size_t j = 0; j < parameters.size(); ++j) {
    torch::Tensor sum;
    for (auto& shard : shard_gradients) {
      const auto& g = shard[j];
      if (!g.defined()) continue;
      if (!sum.defined())
        sum = g;  // the shard's own tensor: added into below, never read again
      else
        sum.add_(g);
    }
    if (!sum.defined()) continue;
    auto parameter = parameters[j];  // a handle: its .grad is the parameter's
    auto& grad = parameter.mutable_grad();
    if (grad.defined())
      grad.add_(sum);
    else
      grad = sum;
  }
}

}  // namespace qkd::train
