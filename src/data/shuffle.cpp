#include "qkd/data/shuffle.h"

#include <cstddef>

#include <utility>

namespace qkd::data {

namespace {
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
}  // namespace

uint64_t next_random(uint64_t& state) { return mix64(state += kGolden); }

uint64_t derive_seed(uint64_t seed, uint64_t a, uint64_t b) {
  return mix64(mix64(mix64(seed + kGolden) ^ (a + 1) * kGolden) ^ (b + 1) * 0xD1B54A32D192ED03ull);
}

double random_unit(uint64_t& state) { return static_cast<double>(next_random(state) >> 11) * 0x1.0p-53; }

uint64_t random_below(uint64_t& state, uint64_t n) {
  // Lemire's multiply-shift; the bias (< n / 2^64) is irrelevant at data-pipeline sizes.
  return static_cast<uint64_t>((static_cast<unsigned __int128>(next_random(state)) * n) >> 64);
}

void shuffle_in_place(std::vector<int64_t>& values, uint64_t& state) {
  for (size_t i = values.size(); i > 1; --i) {
    std::swap(values[i - 1], values[random_below(state, i)]);
  }
}

IndexPermutation::IndexPermutation(uint64_t n, uint64_t key) : n_(n), key_(key) {
  // Smallest even bit width whose range covers n: cycle-walking then needs < 4 steps on average.
  while (half_bits_ < 32 && (uint64_t{1} << (2 * half_bits_)) < n) ++half_bits_;
}

uint64_t IndexPermutation::encrypt(uint64_t x) const {
  const uint64_t mask = (uint64_t{1} << half_bits_) - 1;
  uint64_t left = x >> half_bits_, right = x & mask;
  for (uint64_t round = 0; round < 4; ++round) {
    const uint64_t f = mix64(right ^ derive_seed(key_, round)) & mask;
    const uint64_t next_right = left ^ f;
    left = right;
    right = next_right;
  }
  return (left << half_bits_) | right;
}

uint64_t IndexPermutation::operator()(uint64_t index) const {
  uint64_t x = index;
  do {
    x = encrypt(x);
  } while (x >= n_);
  return x;
}

}  // namespace qkd::data
