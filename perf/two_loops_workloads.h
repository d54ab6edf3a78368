// The workload ends the two-loop perf programs share (perf/two_loops.h): W1/W2's calling
// client and its measured window (blocking_w8, tls_bench), W3's writing stream and counting
// sink (worker_w3, tls_bench), and the statistics their tables print.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <thread>
#include <utility>
#include <vector>

#include "perf/two_loops.h"
#include "ringmux/mux/rpc/call.h"

namespace ringmux::perf {

inline constexpr uint32_t call_message_bytes = 64;  // W1 and W2: 64 B each way

// Nearest rank of the sorted latencies, in microseconds.
inline double percentile_us(const std::vector<uint64_t>& sorted_ns, double fraction) {
  if (sorted_ns.empty()) return 0;
  const auto rank = static_cast<std::size_t>(std::max(1.0, std::ceil(fraction * static_cast<double>(sorted_ns.size()))));
  return static_cast<double>(sorted_ns[rank - 1]) / 1000.0;
}

inline double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values.empty() ? 0 : values[values.size() / 2];
}

// The client of W1 and W2: keeps `in_flight` calls of 64 B to `handler` going until
// stopped; records the latency of every call that completes while measuring.
struct CallingClient : ClientSide {
  using ClientSide::ClientSide;
  void start(uint32_t handler_ref, uint32_t in_flight_target) {
    handler = handler_ref;
    stopping = false;
    latencies_ns.clear();
    errors = 0;
    for (uint32_t i = 0; i < in_flight_target; i++) issue();
  }
  void issue() {
    in_flight++;
    const uint64_t start_ns = engine::Loop::clock_ns();
    mux::call(*connection, handler, request, 0, [this, start_ns](const mux::CallResult& result) { done(result, start_ns); });
  }
  void done(const mux::CallResult& result, uint64_t start_ns) {
    in_flight--;
    if (result.error != mux::MuxError::none || result.response.size() != call_message_bytes) {
      errors++;
    } else if (measuring) {
      latencies_ns.push_back(engine::Loop::clock_ns() - start_ns);
    }
    if (!stopping) issue();
  }

  std::vector<std::byte> request = std::vector<std::byte>(call_message_bytes, std::byte{0x5a});
  uint32_t handler = 0;
  uint32_t in_flight = 0;
  bool measuring = false;
  bool stopping = false;
  uint64_t errors = 0;
  std::vector<uint64_t> latencies_ns;
};

// What one measured window of calls gave.
struct CallFigures {
  double calls_per_s = 0;
  double p50_us = 0, p99_us = 0, p999_us = 0;
  uint64_t errors = 0;
};

// Runs `client`'s calls to `handler`, `in_flight` at a time: the warm-up, the measured
// window, then waits for the calls under way to finish.
inline CallFigures measure_calls(const char* program, engine::Engine& engine, CallingClient& client, uint32_t handler,
                                 uint32_t in_flight, const CommonFlags& flags) {
  on_loop(engine, client_loop, [&] {
    client.start(handler, in_flight);
    return 0;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(flags.warmup_ms));
  const uint64_t start_ns = on_loop(engine, client_loop, [&] {
    client.measuring = true;
    return engine::Loop::clock_ns();
  });
  std::this_thread::sleep_for(std::chrono::nanoseconds(static_cast<uint64_t>(flags.seconds * 1e9)));
  const uint64_t end_ns = on_loop(engine, client_loop, [&] {
    client.measuring = false;
    client.stopping = true;
    return engine::Loop::clock_ns();
  });
  if (!wait_until([&] { return on_loop(engine, client_loop, [&] { return client.in_flight; }) == 0; },
                  settle_timeout_ns)) {
    die(program, "calls did not finish");
  }
  CallFigures figures;
  std::vector<uint64_t> latencies = on_loop(engine, client_loop, [&] { return std::move(client.latencies_ns); });
  figures.errors = on_loop(engine, client_loop, [&] { return client.errors; });
  std::sort(latencies.begin(), latencies.end());
  figures.calls_per_s = static_cast<double>(latencies.size()) / (static_cast<double>(end_ns - start_ns) / 1e9);
  figures.p50_us = percentile_us(latencies, 0.50);
  figures.p99_us = percentile_us(latencies, 0.99);
  figures.p999_us = percentile_us(latencies, 0.999);
  return figures;
}

// W3's server end on its loop: hands every delivery to `take`, answers the count at the
// client's END.
class CountingSink final : public mux::StreamObserver {
 public:
  CountingSink(const mux::StreamStart& start, std::function<void(std::span<const std::byte>)> take)
      : connection_(*start.connection), id_(start.id), take_(std::move(take)) {}
  void on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept override {
    connection_.consume(id_, bytes.size());
    take_(bytes);
    count_ += bytes.size();
    if (end_stream) {
      std::memcpy(answer_, &count_, sizeof(count_));
      (void)connection_.write(id_, answer_, true);  // 8 bytes always fit a fresh window
    }
  }
  void on_stream_finished(mux::MuxError) noexcept override {}

 private:
  mux::Connection& connection_;
  mux::StreamId id_;
  std::function<void(std::span<const std::byte>)> take_;
  uint64_t count_ = 0;
  std::byte answer_[sizeof(uint64_t)] = {};
};

// W3's client end: writes the message back to back until told to stop, then finishes the
// message under way and ends; reads the server's count.
class BulkWriter final : public mux::StreamObserver {
 public:
  BulkWriter(mux::Connection& connection, std::span<const std::byte> message)
      : connection_(connection), message_(message) {}
  bool open(uint32_t handler) {
    auto id = connection_.open(handler, 0, {}, false, *this);
    if (!id) return false;
    id_ = id.value();
    pump();
    return true;
  }
  void stop() {
    stopping_ = true;
    pump();
  }
  void on_stream_data(std::span<const std::byte> bytes, bool) noexcept override {
    connection_.consume(id_, bytes.size());
    if (bytes.size() == sizeof(answer)) std::memcpy(&answer, bytes.data(), sizeof(answer));
  }
  void on_stream_writable() noexcept override { pump(); }
  void on_stream_finished(mux::MuxError error) noexcept override {
    result = error;
    finished.store(true, std::memory_order_release);
  }

  uint64_t written = 0;
  uint64_t answer = 0;
  mux::MuxError result = mux::MuxError::none;
  std::atomic<bool> finished{false};

 private:
  void pump() {
    if (ended_) return;
    for (;;) {
      if (offset_ == 0 && stopping_) {
        ended_ = connection_.end(id_).ok();
        return;
      }
      auto taken = connection_.write(id_, message_.subspan(offset_), false);
      if (!taken || taken.value() == 0) return;
      written += taken.value();
      offset_ = (offset_ + taken.value()) % message_.size();
    }
  }

  mux::Connection& connection_;
  std::span<const std::byte> message_;
  mux::StreamId id_ = 0;
  std::size_t offset_ = 0;
  bool stopping_ = false;
  bool ended_ = false;
};

}  // namespace ringmux::perf
