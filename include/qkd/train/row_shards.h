#pragma once
// A micro-batch computed as row shards, one per core. Each core runs the whole pass on its rows
// (teacher forward, student forward, loss, backward) with single-threaded products, and the shards'
// gradients are added in shard order. A small model's products are too small to keep several cores
// busy when each one is split over them; whole rows per core are not (docs/PERFORMANCE.md).
//
// The shards' losses are means over the whole micro-batch's tokens (MicroBatch::denominators), so
// their sum is the micro-batch's loss and gradient, up to float rounding: the weight gradients add
// two partial sums over tokens instead of one. A given thread count always gives the same shards, so
// runs and resumes stay bitwise reproducible.
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "qkd/train/micro_batch.h"
#include "qkd/train/train_sections.h"

namespace qkd::train {

// How many shards a micro-batch of `rows` rows is computed in: 1 (one pass, products split over the
// threads) unless the run is on the CPU with train.cpu_parallelism rows, several threads, two or more
// rows, and no activation statistics measured at this step (the monitor sees each forward whole).
int64_t row_shard_count(const ComputeSection& compute, const torch::Device& device, int64_t rows,
                        bool activations_measured);

struct RowRange {
  int64_t begin = 0, count = 0;
};
// `shards` contiguous ranges over `rows` rows, as equal as possible (the first ones take the rest).
std::vector<RowRange> row_ranges(int64_t rows, int64_t shards);

// Rows `range` of `batch`, whose loss is averaged over `whole` (the micro-batch's denominators).
MicroBatch micro_batch_rows(const MicroBatch& batch, RowRange range, const loss::LossDenominators& whole);

// Adds each shard's gradients (per shard, in `parameters` order; undefined where a parameter took
// none) in shard order, and the sum into the parameters' .grad.
void accumulate_shard_gradients(const std::vector<torch::Tensor>& parameters,
                                std::vector<std::vector<torch::Tensor>>& shard_gradients);

}  // namespace qkd::train
