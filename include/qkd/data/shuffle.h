#pragma once
// Seeded randomness for the data pipeline. Everything is derived from plain uint64 states so that a
// cursor can store them exactly in JSON and results do not depend on the standard library's
// distributions (which differ between libstdc++ and libc++).
#include <cstdint>
#include <vector>

namespace qkd::data {

// SplitMix64 step: advances `state` and returns the next 64 random bits.
uint64_t next_random(uint64_t& state);
// A well-mixed seed for a sub-stream (e.g. source i, epoch e) of `seed`.
uint64_t derive_seed(uint64_t seed, uint64_t a, uint64_t b = 0);
// Uniform in [0, 1) and in [0, n) (n > 0).
double random_unit(uint64_t& state);
uint64_t random_below(uint64_t& state, uint64_t n);
// In-place Fisher-Yates shuffle of `values` driven by `state`.
void shuffle_in_place(std::vector<int64_t>& values, uint64_t& state);

// A seeded bijection of [0, n) computed per index in O(1) memory (Feistel network over the next
// power of four, cycle-walking back into range), so a token file with millions of windows can be
// visited in random order without holding a permutation table.
class IndexPermutation {
 public:
  IndexPermutation() = default;
  IndexPermutation(uint64_t n, uint64_t key);
  uint64_t operator()(uint64_t index) const;
  uint64_t size() const { return n_; }

 private:
  uint64_t encrypt(uint64_t x) const;
  uint64_t n_ = 0;
  uint64_t key_ = 0;
  int half_bits_ = 0;
};

}  // namespace qkd::data
