// Google Benchmark: the multiplexing layer's per-message costs, no kernel involved.
//   BM_slot_ring/one_thread        claim+commit then acquire+release, one thread
//   BM_slot_ring/cross_thread      a producer thread against this consumer thread
//   BM_session_write/N             Session::write of N-byte messages into the batch, with
//                                  the batch taken when full (frames batched per second)
//   BM_session_receive/N           Session::receive of a batch of N-byte DATA frames on
//                                  one stream, delivered and consumed (frames per second)
// Run: build/perf/bench_mux   (perf/RESULTS.md records it)
#include <benchmark/benchmark.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "ringmux/mux/session/session.h"
#include "ringmux/mux/workers/slot_ring.h"

using namespace ringmux;
using namespace ringmux::mux;

namespace {

void BM_slot_ring_one_thread(benchmark::State& state) {
  SlotRing<uint64_t> ring(1024);
  uint64_t value = 0;
  for (auto _ : state) {
    *ring.claim() = value++;
    ring.commit();
    benchmark::DoNotOptimize(*ring.acquire());
    ring.release();
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_slot_ring_cross_thread(benchmark::State& state) {
  SlotRing<uint64_t> ring(1024);
  std::atomic<bool> stop{false};
  std::thread producer([&] {
    uint64_t value = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      if (uint64_t* slot = ring.claim()) {
        *slot = value++;
        ring.commit();
      }
    }
  });
  for (auto _ : state) {
    const uint64_t* slot = nullptr;
    while ((slot = ring.acquire()) == nullptr) {
    }
    benchmark::DoNotOptimize(*slot);
    ring.release();
  }
  stop.store(true);
  producer.join();
  state.SetItemsProcessed(state.iterations());
}

// A handler that consumes what it is given and ignores the rest.
struct Sink final : SessionHandler {
  Session* session = nullptr;
  uint64_t bytes = 0;
  void on_stream_opened(StreamId id, StreamBinding&, uint32_t, uint64_t, std::span<const std::byte> payload,
                        bool) noexcept override {
    session->consume(id, payload.size(), 0);
  }
  void on_stream_data(StreamId id, StreamBinding&, std::span<const std::byte> payload, bool) noexcept override {
    bytes += payload.size();
    session->consume(id, payload.size(), 0);
  }
  void on_stream_finished(StreamId, StreamBinding&, MuxError, std::string_view) noexcept override {}
  void on_stream_writable(StreamId) noexcept override {}
  void on_stream_stopped(StreamId, StreamBinding&) noexcept override {}
  void on_goaway(uint32_t, wire::StatusCode) noexcept override {}
  void on_pong(uint64_t) noexcept override {}
};

SessionOptions big_windows() {
  SessionOptions options;
  options.stream_window_bytes = limits::stream_window_bytes_max;
  options.connection_window_bytes = limits::connection_window_bytes_initial;
  return options;
}

void BM_session_write(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  Sink sink;
  std::unique_ptr<Session> session;
  StreamId id = 0;
  // A fresh session whenever the window is spent stands for the CREDIT a peer would send.
  auto renew = [&] {
    session = std::make_unique<Session>(sink, big_windows());
    sink.session = session.get();
    id = session->open(1, 0, {}, false).value();
  };
  renew();
  const std::vector<std::byte> message(size, std::byte{1});
  ringmux::ByteVector link;
  ringmux::replay::HeldSpans held;
  uint64_t credit_used = 0;
  for (auto _ : state) {
    const std::size_t taken = session->write(id, message, false).value();
    credit_used += taken;
    if (taken < size) {
      // The batch is full: hand it out, as the glue does when its send completes.
      state.PauseTiming();
      session->take_output(link, held);
      link.clear();
      // A fresh session once the stream's window is nearly spent (no peer returns credit).
      if (credit_used + limits::send_batch_bytes_target + size > limits::stream_window_bytes_max) {
        renew();
        credit_used = 0;
      }
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
}

void BM_session_receive(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  // One batch: an OPEN, then as many DATA frames on that stream as one batch holds (at
  // most 256).
  Sink writer_sink;
  Session writer(writer_sink, big_windows());
  writer_sink.session = &writer;
  auto id = writer.open(1, 0, {}, false);
  const std::vector<std::byte> message(size, std::byte{2});
  int64_t frames = 0;
  uint64_t written = 0;
  while (frames < 256) {
    const std::size_t taken = writer.write(id.value(), message, false).value();
    if (taken == 0) break;
    frames++;
    written += taken;
    if (taken < size) break;  // the batch is full
  }
  ringmux::ByteVector control, data, link;
  ringmux::replay::HeldSpans held;
  writer.take_output(link, held);
  // The HELLO (link) and the OPEN (held control) in control; the DATA frames in data.
  control = link;
  control.insert(control.end(), held.first.begin(), held.first.end());
  data.assign(held.second.begin(), held.second.end());
  for (auto _ : state) {
    state.PauseTiming();
    Sink sink;
    SessionOptions options = big_windows();
    options.dialer = false;
    Session reader(sink, options);
    sink.session = &reader;
    (void)reader.receive(control, 0);
    state.ResumeTiming();
    if (!reader.receive(data, 0).ok() || sink.bytes != written) {
      state.SkipWithError("the batch was not received whole");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * frames);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * written));
  state.counters["frames_per_batch"] = static_cast<double>(frames);
}

}  // namespace

BENCHMARK(BM_slot_ring_one_thread)->Name("BM_slot_ring/one_thread");
BENCHMARK(BM_slot_ring_cross_thread)->Name("BM_slot_ring/cross_thread")->UseRealTime();
BENCHMARK(BM_session_write)->Arg(64)->Arg(4096)->Arg(65536);
BENCHMARK(BM_session_receive)->Arg(64)->Arg(4096)->Arg(65536);
BENCHMARK_MAIN();
