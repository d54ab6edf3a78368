// Google Benchmark: what recording one latency sample costs in the loadgen's histogram
// (base/histogram.h) against the sample store it replaced (tools/latency.h, every sample
// kept in a vector reserved up front and sorted for the percentiles), and what reading a
// report's 17 percentiles costs in each.
//   BM_histogram_record         one sample into the histogram (30 KiB, cache-resident)
//   BM_samples_add_fresh/N      one sample into a store reserved for N samples, a new
//                               reservation each N (first-touch page faults included:
//                               what a run pays)
//   BM_samples_add_warm/N       the same into memory already touched (the store's best case)
//   BM_histogram_percentiles    the 17 default percentiles of a histogram of 1 M samples
//   BM_samples_percentiles/N    sort N samples, then the 17 percentiles
// Samples are drawn log-uniform from 10 us to 10 ms beforehand (no generator in the loop).
// Run: taskset -c 0 build/perf/bench_histogram --benchmark_min_time=0.5
#include <benchmark/benchmark.h>

#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "ringmux/base/histogram.h"
#include "tools/latency.h"

namespace {

constexpr std::size_t sample_pool_count = 1 << 16;  // a power of two: index by mask
constexpr double default_percentiles[] = {1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99};

const std::vector<uint64_t>& sample_pool() {
  static const std::vector<uint64_t> pool = [] {
    std::mt19937_64 random(42);
    std::uniform_real_distribution<double> exponent(4.0, 7.0);  // 10 us .. 10 ms in ns
    std::vector<uint64_t> values(sample_pool_count);
    for (uint64_t& v : values) v = static_cast<uint64_t>(std::pow(10.0, exponent(random)));
    return values;
  }();
  return pool;
}

void BM_histogram_record(benchmark::State& state) {
  const std::vector<uint64_t>& pool = sample_pool();
  auto histogram = std::make_unique<ringmux::Histogram>();
  std::size_t i = 0;
  for (auto _ : state) {
    histogram->record(pool[i++ & (sample_pool_count - 1)]);
    benchmark::ClobberMemory();
  }
  benchmark::DoNotOptimize(histogram->count());
  state.SetItemsProcessed(state.iterations());
}

void samples_add(benchmark::State& state, bool fresh) {
  const std::vector<uint64_t>& pool = sample_pool();
  const auto capacity = static_cast<std::size_t>(state.range(0));
  auto store = std::make_unique<ringmux::tools::LatencySamples>();
  store->reserve(capacity);
  std::size_t i = 0, kept = 0;
  for (auto _ : state) {
    if (kept == capacity) {  // full: a new store (fresh) or the same memory again (warm)
      state.PauseTiming();
      if (fresh) {
        store = std::make_unique<ringmux::tools::LatencySamples>();
        store->reserve(capacity);
      } else {
        store->clear();
      }
      kept = 0;
      state.ResumeTiming();
    }
    store->add(pool[i++ & (sample_pool_count - 1)]);
    kept++;
    benchmark::ClobberMemory();
  }
  benchmark::DoNotOptimize(store->count());
  state.SetItemsProcessed(state.iterations());
}
void BM_samples_add_fresh(benchmark::State& state) { samples_add(state, true); }
void BM_samples_add_warm(benchmark::State& state) { samples_add(state, false); }

void BM_histogram_percentiles(benchmark::State& state) {
  const std::vector<uint64_t>& pool = sample_pool();
  auto histogram = std::make_unique<ringmux::Histogram>();
  for (std::size_t i = 0; i < (1u << 20); i++) histogram->record(pool[i & (sample_pool_count - 1)]);
  for (auto _ : state) {
    for (const double p : default_percentiles) benchmark::DoNotOptimize(histogram->percentile(p));
  }
}

void BM_samples_percentiles(benchmark::State& state) {
  const std::vector<uint64_t>& pool = sample_pool();
  const auto count = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    state.PauseTiming();
    ringmux::tools::LatencySamples store;  // unsorted again each time, as after a run
    store.reserve(count);
    for (std::size_t i = 0; i < count; i++) store.add(pool[(i * 7919) & (sample_pool_count - 1)]);
    state.ResumeTiming();
    for (const double p : default_percentiles) benchmark::DoNotOptimize(store.percentile_ns(p));
  }
}

}  // namespace

BENCHMARK(BM_histogram_record);
BENCHMARK(BM_samples_add_fresh)->Arg(1 << 20)->Arg(1 << 24);
BENCHMARK(BM_samples_add_warm)->Arg(1 << 20);
BENCHMARK(BM_histogram_percentiles);
BENCHMARK(BM_samples_percentiles)->Arg(1 << 20)->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();
