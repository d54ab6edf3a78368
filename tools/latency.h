// LatencySamples: every sample of a measured window, and nearest-rank percentiles.
//
// Exact (no histogram bucket error): a window of a few seconds at a million samples per
// second is a few tens of MiB, reserved before the window starts so recording never
// allocates. One thread records; percentiles are computed after the window.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace ringmux::tools {

class LatencySamples {
 public:
  void reserve(std::size_t count) { samples_ns_.reserve(count); }
  void add(uint64_t latency_ns) {
    if (samples_ns_.size() < samples_ns_.capacity()) samples_ns_.push_back(latency_ns);
    count_++;
  }
  void clear() {
    samples_ns_.clear();
    count_ = 0;
    sorted_ = false;
  }
  // Samples seen, including any past the reserved capacity (counted, not kept).
  uint64_t count() const { return count_; }
  // Adds every sample of `other` (kept ones, and the count of all).
  void merge(const LatencySamples& other) {
    samples_ns_.insert(samples_ns_.end(), other.samples_ns_.begin(), other.samples_ns_.end());
    count_ += other.count_;
    sorted_ = false;
  }
  uint64_t min_ns() {
    sort();
    return samples_ns_.empty() ? 0 : samples_ns_.front();
  }
  uint64_t max_ns() {
    sort();
    return samples_ns_.empty() ? 0 : samples_ns_.back();
  }
  double mean_ns() const {
    if (samples_ns_.empty()) return 0;
    long double sum = 0;
    for (const uint64_t v : samples_ns_) sum += v;
    return static_cast<double>(sum / samples_ns_.size());
  }
  double stdev_ns() const {
    if (samples_ns_.size() < 2) return 0;
    const double mean = mean_ns();
    long double sum = 0;
    for (const uint64_t v : samples_ns_) sum += (v - mean) * (v - mean);
    return static_cast<double>(std::sqrt(sum / (samples_ns_.size() - 1)));
  }

  // Nearest-rank percentile (p in (0, 100]) of the kept samples, in nanoseconds.
  uint64_t percentile_ns(double p) {
    if (samples_ns_.empty()) return 0;
    sort();
    auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(samples_ns_.size())));
    rank = std::clamp<std::size_t>(rank, 1, samples_ns_.size());
    return samples_ns_[rank - 1];
  }

 private:
  void sort() {
    if (!sorted_) std::sort(samples_ns_.begin(), samples_ns_.end());
    sorted_ = true;
  }
  std::vector<uint64_t> samples_ns_;
  uint64_t count_ = 0;
  bool sorted_ = false;
};

}  // namespace ringmux::tools
