// Histogram: counts of non-negative integer values (latencies in nanoseconds, typically)
// in log-linear buckets of fixed memory, with exact count, min, max, mean and standard
// deviation beside them.
//
// Buckets: every value below 2 * sub_bucket_count (128) has a bucket of its own; above,
// each power of two [2^k, 2^(k+1)) is cut into sub_bucket_count equal buckets. A bucket
// stands for its midpoint, which is within half a bucket width of every value in it: at
// most 2^(k-6) / 2 / 2^k = 1/128 (0.78 %) of the value, below the 1 % this type promises
// (static_assert below). Values 0 .. 2^64-1 all fit: bucket_count counters, 30 KiB, held
// inline; recording never allocates.
//
// The layout is fio's (its FIO_IO_U_PLAT_BITS = 6 histogram, extended from 34 to 64 bits),
// so that a bucket's midpoint is the key fio itself writes in its json+ "bins".
//
// Percentiles follow fio's rule: the p-th percentile is the first bucket whose running
// count reaches p / 100 * count (nearest rank), reported as its midpoint clamped to
// [min, max] (a clamp only makes the figure closer to the truth).
//
// Mean and standard deviation come from exact sums (128-bit): exact while the sum of
// squares stays below 2^128 (a billion samples of up to six days each).
//
// Invariant: count_ is the sum of counts_; min_ <= max_ when count_ > 0. Not thread-safe:
// one thread records; another may read a copy taken with that thread's agreement.
// merge() adds another histogram (jobs, loops) without losing anything.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "ringmux/base/assert.h"

namespace ringmux {

class Histogram {
 public:
  // Linear buckets per power of two: 2^6 = 64, fio's resolution (0.78 % worst case).
  static constexpr unsigned sub_bucket_bits = 6;
  static constexpr uint64_t sub_bucket_count = uint64_t{1} << sub_bucket_bits;
  // Values below this have a bucket each (exact); from here on, 64 buckets per doubling.
  static constexpr uint64_t exact_below = 2 * sub_bucket_count;
  // One group of sub_bucket_count buckets per bit position from sub_bucket_bits to 63,
  // plus the two exact groups below.
  static constexpr std::size_t bucket_count = (64 - sub_bucket_bits + 1) * sub_bucket_count;
  // The promise: a bucket's midpoint is within this share of any value it holds.
  static constexpr double relative_error_max = 1.0 / static_cast<double>(2 * sub_bucket_count);
  static_assert(relative_error_max <= 0.01, "the histogram promises values within 1 %");
  static_assert(bucket_count == 3776, "59 groups of 64 cover every 64-bit value");

  // The bucket of `value`.
  static constexpr std::size_t bucket_of(uint64_t value) noexcept {
    if (value < exact_below) return static_cast<std::size_t>(value);
    const unsigned shift = static_cast<unsigned>(std::bit_width(value)) - 1 - sub_bucket_bits;
    return static_cast<std::size_t>((shift + 1) * sub_bucket_count + ((value >> shift) - sub_bucket_count));
  }
  // The smallest value of bucket `index`, and its width (1 for the exact buckets).
  static constexpr uint64_t bucket_lowest(std::size_t index) noexcept {
    if (index < exact_below) return index;
    const unsigned shift = static_cast<unsigned>(index / sub_bucket_count) - 1;
    return (sub_bucket_count + index % sub_bucket_count) << shift;
  }
  static constexpr uint64_t bucket_width(std::size_t index) noexcept {
    return index < exact_below ? 1 : uint64_t{1} << (index / sub_bucket_count - 1);
  }
  // The value that stands for bucket `index` (fio's plat_idx_to_val).
  static constexpr uint64_t bucket_midpoint(std::size_t index) noexcept {
    return bucket_lowest(index) + bucket_width(index) / 2;
  }

  void record(uint64_t value) noexcept {
    counts_[bucket_of(value)]++;
    count_++;
    min_ = std::min(min_, value);
    max_ = std::max(max_, value);
    sum_ += value;
    sum_squares_ += static_cast<unsigned __int128>(value) * value;
  }

  // Adds every sample of `other`.
  void merge(const Histogram& other) noexcept {
    for (std::size_t i = 0; i < bucket_count; i++) counts_[i] += other.counts_[i];
    count_ += other.count_;
    min_ = std::min(min_, other.min_);
    max_ = std::max(max_, other.max_);
    sum_ += other.sum_;
    sum_squares_ += other.sum_squares_;
  }

  void clear() noexcept { *this = Histogram(); }

  uint64_t count() const noexcept { return count_; }
  // Samples in bucket `index`.
  uint64_t count_at(std::size_t index) const noexcept {
    RM_ASSERT(index < bucket_count);
    return counts_[index];
  }
  // Exact; 0 without samples.
  uint64_t min() const noexcept { return count_ == 0 ? 0 : min_; }
  uint64_t max() const noexcept { return max_; }
  double mean() const noexcept {
    return count_ == 0 ? 0 : static_cast<double>(static_cast<long double>(sum_) / static_cast<long double>(count_));
  }
  // Sample standard deviation (n - 1), as fio reports it; 0 below two samples.
  double stddev() const noexcept {
    if (count_ < 2) return 0;
    const long double n = static_cast<long double>(count_);
    const long double sum = static_cast<long double>(sum_);
    const long double spread = static_cast<long double>(sum_squares_) - sum * (sum / n);
    return spread <= 0 ? 0 : static_cast<double>(std::sqrt(spread / (n - 1)));
  }

  // The p-th percentile, p in [0, 100] (0: the minimum); 0 without samples.
  uint64_t percentile(double p) const noexcept {
    RM_ASSERT(p >= 0 && p <= 100);
    if (count_ == 0) return 0;
    if (p == 0) return min_;
    const long double rank = static_cast<long double>(p) / 100.0L * static_cast<long double>(count_);
    uint64_t running = 0;
    for (std::size_t i = 0; i < bucket_count; i++) {
      running += counts_[i];
      if (counts_[i] != 0 && static_cast<long double>(running) >= rank) {
        return std::clamp(bucket_midpoint(i), min_, max_);
      }
    }
    return max_;  // p = 100 with rounding: the largest sample
  }

 private:
  std::array<uint64_t, bucket_count> counts_{};
  uint64_t count_ = 0;
  uint64_t min_ = UINT64_MAX;
  uint64_t max_ = 0;
  unsigned __int128 sum_ = 0;
  unsigned __int128 sum_squares_ = 0;
};

static_assert(Histogram::bucket_of(UINT64_MAX) == Histogram::bucket_count - 1, "the last bucket ends at 2^64 - 1");
static_assert(Histogram::bucket_of(Histogram::exact_below) == Histogram::exact_below, "no gap after the exact buckets");
// fio's largest bin (FIO_IO_U_PLAT_NR = 1856 buckets) is the same bucket here.
static_assert(Histogram::bucket_midpoint(1855) == 17'112'760'320ull, "the layout is fio's");

}  // namespace ringmux
