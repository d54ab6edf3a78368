// The latency histogram (base/histogram.h): its bucket layout, the 1 % error bound of its
// percentiles against exact nearest-rank percentiles of the same samples (seeded random),
// exact min/max/mean/stddev, and merging.
#include "ringmux/base/histogram.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "tests/support.h"

using ringmux::Histogram;

namespace {

// Nearest rank over sorted samples: the smallest value with at least p % of the samples at
// or below it (what the loadgen reported before the histogram, and fio's rule).
uint64_t exact_percentile(const std::vector<uint64_t>& sorted, double p) {
  auto rank = static_cast<std::size_t>(std::ceil(static_cast<long double>(p) / 100.0L * sorted.size()));
  rank = std::clamp<std::size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

// Samples spread over many decades (1 ns to 100 s, log-uniform), with runs of repeated
// values and small exact ones, as latencies have.
std::vector<uint64_t> random_samples(std::mt19937_64& random, std::size_t count) {
  std::uniform_real_distribution<double> decades(0.0, 11.0);
  std::uniform_int_distribution<uint64_t> small(0, 200);
  std::vector<uint64_t> samples;
  samples.reserve(count);
  for (std::size_t i = 0; i < count; i++) {
    switch (random() % 4) {
      case 0: samples.push_back(small(random)); break;
      case 1: samples.push_back(50'000 + random() % 64); break;  // a hot spot
      default: samples.push_back(static_cast<uint64_t>(std::pow(10.0, decades(random)))); break;
    }
  }
  return samples;
}

}  // namespace

// Proves the buckets tile every 64-bit value without gaps or overlaps, that each value's
// bucket holds it, and that a midpoint is within relative_error_max of every value of its
// bucket (the 1 % promise), at the edges of every power of two.
TEST_CASE("histogram: buckets tile the values, midpoints within the error bound") {
  for (std::size_t i = 0; i + 1 < Histogram::bucket_count; i++) {
    REQUIRE(Histogram::bucket_lowest(i + 1) == Histogram::bucket_lowest(i) + Histogram::bucket_width(i));
  }
  std::vector<uint64_t> edges = {0, 1, 127, 128, 129, 255, 256, UINT64_MAX, UINT64_MAX - 1};
  for (unsigned bit = 7; bit < 64; bit++) {
    const uint64_t power = uint64_t{1} << bit;
    for (uint64_t v : {power - 1, power, power + 1, power + power / 2, power + power / 3}) edges.push_back(v);
  }
  for (const uint64_t value : edges) {
    const std::size_t index = Histogram::bucket_of(value);
    REQUIRE(index < Histogram::bucket_count);
    const uint64_t lowest = Histogram::bucket_lowest(index);
    CHECK(value >= lowest);
    CHECK(value - lowest < Histogram::bucket_width(index));
    const double error = std::fabs(static_cast<double>(Histogram::bucket_midpoint(index)) - static_cast<double>(value));
    CHECK(error <= Histogram::relative_error_max * static_cast<double>(value) + 1e-9);
  }
  // What fio 3.33 wrote for a 37,220 ns sample in its json+ bins: the same midpoint.
  CHECK(Histogram::bucket_midpoint(Histogram::bucket_of(37'220)) == 37'120u);
  CHECK(Histogram::bucket_midpoint(Histogram::bucket_of(111)) == 111u);
}

// Proves every percentile is within the histogram's error of the exact nearest-rank
// percentile of the same samples (in fact in the same bucket), and that count, min, max,
// mean and standard deviation are exact.
TEST_CASE("histogram: percentiles within 1 % of exact sorted samples") {
  const uint64_t seed = ringmux::test::test_seed("histogram percentiles");
  std::mt19937_64 random(seed);
  for (const std::size_t count : {1u, 2u, 17u, 1000u, 200'000u}) {
    std::vector<uint64_t> samples = random_samples(random, count);
    Histogram histogram;
    long double sum = 0;
    for (const uint64_t v : samples) {
      histogram.record(v);
      sum += v;
    }
    std::sort(samples.begin(), samples.end());
    REQUIRE(histogram.count() == count);
    CHECK(histogram.min() == samples.front());
    CHECK(histogram.max() == samples.back());
    const long double mean = sum / count;
    CHECK(histogram.mean() == doctest::Approx(static_cast<double>(mean)).epsilon(1e-12));
    long double squares = 0;
    for (const uint64_t v : samples) squares += (v - mean) * (v - mean);
    const double stddev = count < 2 ? 0 : static_cast<double>(std::sqrt(squares / (count - 1)));
    CHECK(histogram.stddev() == doctest::Approx(stddev).epsilon(1e-9));
    for (const double p : {0.001, 1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 99.0, 99.5, 99.9, 99.99, 99.999, 100.0}) {
      const uint64_t exact = exact_percentile(samples, p);
      const uint64_t got = histogram.percentile(p);
      INFO("seed " << seed << " count " << count << " p" << p << ": exact " << exact << ", histogram " << got);
      CHECK(Histogram::bucket_of(got) == Histogram::bucket_of(exact));
      CHECK(std::fabs(static_cast<double>(got) - static_cast<double>(exact)) <=
            Histogram::relative_error_max * static_cast<double>(exact) + 1e-9);
    }
  }
}

// Proves merging histograms of parts of a sample set gives exactly the histogram of the
// whole set (what group_reporting and the tcp engine's per-stream parts rely on), and
// that an empty histogram merges as nothing.
TEST_CASE("histogram: merging parts equals the whole") {
  const uint64_t seed = ringmux::test::test_seed("histogram merge");
  std::mt19937_64 random(seed);
  const std::vector<uint64_t> samples = random_samples(random, 50'000);
  Histogram whole, parts[3], merged;
  for (std::size_t i = 0; i < samples.size(); i++) {
    whole.record(samples[i]);
    parts[random() % 3].record(samples[i]);
  }
  for (const Histogram& part : parts) merged.merge(part);
  merged.merge(Histogram());
  CHECK(merged.count() == whole.count());
  CHECK(merged.min() == whole.min());
  CHECK(merged.max() == whole.max());
  CHECK(merged.mean() == whole.mean());
  CHECK(merged.stddev() == whole.stddev());
  for (std::size_t i = 0; i < Histogram::bucket_count; i++) REQUIRE(merged.count_at(i) == whole.count_at(i));
  CHECK(merged.percentile(99.9) == whole.percentile(99.9));
}

// Proves an empty histogram reports zeros, and that the extremes of the value range
// (0 and 2^64 - 1) are recorded exactly in min and max.
TEST_CASE("histogram: empty and extreme values") {
  Histogram empty;
  CHECK(empty.count() == 0);
  CHECK(empty.min() == 0);
  CHECK(empty.max() == 0);
  CHECK(empty.mean() == 0);
  CHECK(empty.stddev() == 0);
  CHECK(empty.percentile(50) == 0);
  Histogram extremes;
  extremes.record(0);
  extremes.record(UINT64_MAX);
  CHECK(extremes.min() == 0);
  CHECK(extremes.max() == UINT64_MAX);
  CHECK(extremes.percentile(50) == 0);
  CHECK(extremes.percentile(0) == 0);  // the minimum
  // The last bucket's midpoint, within the error of the largest value.
  CHECK(extremes.percentile(100) == Histogram::bucket_midpoint(Histogram::bucket_count - 1));
  CHECK(static_cast<double>(UINT64_MAX - extremes.percentile(100)) <=
        Histogram::relative_error_max * static_cast<double>(UINT64_MAX));
  extremes.clear();
  CHECK(extremes.count() == 0);
}
