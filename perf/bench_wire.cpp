// Google Benchmark: the wire format's per-frame costs at 64 B, 4 KiB and 64 KiB payloads.
//   BM_encode/N     header + payload copy into a buffer (encode_frame)
//   BM_encode_header/N  header only, payload already in place (the writer's path)
//   BM_decode/N     decoder on a whole frame in one input (zero-copy path)
//   BM_decode_split/N   decoder on a frame cut in two (the one-copy path)
//   BM_checksum/N   XXH3-64 of the payload
// Run: build/perf/bench_wire   (perf/run.sh records it for perf/RESULTS.md)
#include <benchmark/benchmark.h>

#include <vector>

#include "ringmux/wire/checksum.h"
#include "ringmux/wire/codec.h"

using namespace ringmux::wire;

namespace {

std::vector<std::byte> make_frame(std::size_t payload_bytes) {
  const std::vector<std::byte> payload(payload_bytes, std::byte{0x42});
  std::vector<std::byte> frame(frame_bytes(payload_bytes));
  encode_frame(frame, FrameKind::data, 0, 1, payload);
  return frame;
}

void BM_encode(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const std::vector<std::byte> payload(size, std::byte{0x42});
  std::vector<std::byte> out(frame_bytes(size));
  for (auto _ : state) {
    benchmark::DoNotOptimize(encode_frame(out, FrameKind::data, 0, 1, payload));
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
  state.SetItemsProcessed(state.iterations());
}

void BM_encode_header(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  std::vector<std::byte> frame(frame_bytes(size), std::byte{0x42});
  const std::span<const std::byte> payload(frame.data() + header_bytes, size);
  for (auto _ : state) {
    encode_header(std::span<std::byte, header_bytes>(frame.data(), header_bytes), FrameKind::data, 0, 1, payload);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
  state.SetItemsProcessed(state.iterations());
}

void BM_decode(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const auto frame = make_frame(size);
  for (auto _ : state) {
    Decoder decoder;
    auto step = decoder.next(frame);
    benchmark::DoNotOptimize(step.ok() && step->has_frame);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
  state.SetItemsProcessed(state.iterations());
}

void BM_decode_split(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const auto frame = make_frame(size);
  const std::span<const std::byte> all(frame);
  const std::size_t cut = header_bytes + size / 2;
  Decoder decoder;  // reused, as a connection's reader would
  for (auto _ : state) {
    auto first = decoder.next(all.first(cut));
    auto second = decoder.next(all.subspan(cut));
    benchmark::DoNotOptimize(first.ok() && second.ok() && second->has_frame);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
  state.SetItemsProcessed(state.iterations());
}

void BM_checksum(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const std::vector<std::byte> payload(size, std::byte{0x42});
  for (auto _ : state) benchmark::DoNotOptimize(checksum64(payload));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
}

}  // namespace

BENCHMARK(BM_encode)->Arg(64)->Arg(4096)->Arg(65536);
BENCHMARK(BM_encode_header)->Arg(64)->Arg(4096)->Arg(65536);
BENCHMARK(BM_decode)->Arg(64)->Arg(4096)->Arg(65536);
BENCHMARK(BM_decode_split)->Arg(64)->Arg(4096)->Arg(65536);
BENCHMARK(BM_checksum)->Arg(64)->Arg(4096)->Arg(65536);
BENCHMARK_MAIN();
