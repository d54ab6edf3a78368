// Zero heap allocations per message in steady state (issue 12): a counting operator new
// (this binary replaces the global one) watches 10,000 unary calls and 10,000 stream
// messages each way after a warm-up, client and server on one loop over 127.0.0.1, and
// every allocation made meanwhile is counted. The warm-up grows what is kept for reuse
// (batch buffers, the stream table, pools) to its high-water marks: it runs at twice the
// measured concurrency, since how large a batch gets depends on timing (a batch whose size
// is a new high costs one allocation). The count then covers 10,000 messages in the middle
// of one continuous run (CountWindow), and must be 0.
#include <doctest/doctest.h>

#include <execinfo.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <new>
#include <span>
#include <vector>

#include "ringmux/cluster/manager.h"
#include "ringmux/mux/link/connection.h"
#include "ringmux/mux/rpc/call.h"
#include "ringmux/mux/rpc/registry.h"
#include "tests/mux/support.h"
#include "tests/support.h"

namespace {

std::atomic<bool> counting{false};
std::atomic<uint64_t> allocations{0};
// RINGMUX_ALLOC_TRACE=N prints the stacks of the first N counted allocations (to find them).
const uint64_t trace_max = [] {
  const char* env = std::getenv("RINGMUX_ALLOC_TRACE");
  return env == nullptr ? 0 : std::strtoull(env, nullptr, 10);
}();

void note_allocation() {
  if (!counting.load(std::memory_order_relaxed)) return;
  const uint64_t seen = allocations.fetch_add(1, std::memory_order_relaxed);
  if (seen < trace_max) {
    counting.store(false);  // backtrace() may allocate
    void* frames[24];
    const int depth = backtrace(frames, 24);
    backtrace_symbols_fd(frames, depth, STDERR_FILENO);
    (void)!write(STDERR_FILENO, "----\n", 5);
    counting.store(true);
  }
}

void* counted(std::size_t bytes) {
  note_allocation();
  void* block = std::malloc(bytes == 0 ? 1 : bytes);
  if (block == nullptr) throw std::bad_alloc();
  return block;
}

void* counted_aligned(std::size_t bytes, std::align_val_t alignment) {
  note_allocation();
  const std::size_t align = static_cast<std::size_t>(alignment);
  void* block = std::aligned_alloc(align, (bytes + align - 1) / align * align);
  if (block == nullptr) throw std::bad_alloc();
  return block;
}

// Counts the allocations made between two message counts of one continuous run: the loop
// is never paused inside the window (a pause leaves ACKs and timers pending, and the run's
// restart is not the steady state being measured).
struct CountWindow {
  uint64_t from = UINT64_MAX;  // start counting when this many messages have completed
  uint64_t to = UINT64_MAX;    // stop here
  void on_completed(uint64_t completed) {
    if (completed == from) {
      allocations.store(0);
      counting.store(true);
    }
    if (completed == to) counting.store(false);
  }
  uint64_t value() const { return allocations.load(); }
};

}  // namespace

void* operator new(std::size_t bytes) { return counted(bytes); }
void* operator new[](std::size_t bytes) { return counted(bytes); }
void* operator new(std::size_t bytes, const std::nothrow_t&) noexcept {
  try {
    return counted(bytes);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t bytes, const std::nothrow_t&) noexcept {
  try {
    return counted(bytes);
  } catch (...) {
    return nullptr;
  }
}
void* operator new(std::size_t bytes, std::align_val_t alignment) { return counted_aligned(bytes, alignment); }
void* operator new[](std::size_t bytes, std::align_val_t alignment) { return counted_aligned(bytes, alignment); }
void operator delete(void* block) noexcept { std::free(block); }
void operator delete[](void* block) noexcept { std::free(block); }
void operator delete(void* block, std::size_t) noexcept { std::free(block); }
void operator delete[](void* block, std::size_t) noexcept { std::free(block); }
void operator delete(void* block, std::align_val_t) noexcept { std::free(block); }
void operator delete[](void* block, std::align_val_t) noexcept { std::free(block); }
void operator delete(void* block, std::size_t, std::align_val_t) noexcept { std::free(block); }
void operator delete[](void* block, std::size_t, std::align_val_t) noexcept { std::free(block); }

using namespace ringmux;
using namespace ringmux::mux;
using namespace ringmux::mux::loopback;

namespace {

constexpr uint32_t echo_stream = 2;
constexpr std::size_t message_bytes = 64;

// Keeps `in_flight` unary calls going until `total` have completed.
struct CallPump {
  Connection& connection;
  CountWindow window;
  std::vector<std::byte> request = std::vector<std::byte>(message_bytes, std::byte{0x5a});
  uint64_t issued = 0;
  uint64_t completed = 0;
  uint64_t failed = 0;
  uint64_t total = 0;

  void run(Loop& loop, uint64_t calls, uint32_t in_flight) {
    total += calls;
    while (issued < total && issued - completed < in_flight) issue();
    REQUIRE(loop.run_until([&] { return completed == total; }, 30 * second_ns));
  }
  void issue() {
    issued++;
    call(connection, echo_unary, request, 0, [this](const CallResult& result) {
      completed++;
      window.on_completed(completed);
      if (result.error != MuxError::none || result.response.size() != message_bytes) failed++;
      if (issued < total) issue();
    });
  }
};

// Echoes every message of a stream back (each write is taken whole: the windows are far
// larger than what is in flight).
class EchoStream final : public StreamObserver {
 public:
  explicit EchoStream(const StreamStart& start) : connection_(*start.connection), id_(start.id) {}
  void on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept override {
    if (!bytes.empty()) {
      auto taken = connection_.write(id_, bytes, false);
      REQUIRE(taken.ok());
      REQUIRE(taken.value() == bytes.size());
    }
    connection_.consume(id_, bytes.size());
    if (end_stream) (void)connection_.end(id_);
  }
  void on_stream_finished(MuxError) noexcept override {}

 private:
  Connection& connection_;
  StreamId id_;
};

// The client end: writes `window` messages ahead, counts the echoes.
class StreamPump final : public StreamObserver {
 public:
  explicit StreamPump(Connection& connection) : connection_(connection) {}
  void start(StreamId id) { id_ = id; }
  uint64_t echoed() const { return echoed_; }
  CountWindow window;
  void run(Loop& loop, uint64_t messages, uint32_t in_flight) {
    target_ += messages;
    while (sent_ < target_ && sent_ - echoed_ < in_flight) send();
    REQUIRE(loop.run_until([&] { return echoed_ == target_ || finished_; }, 30 * second_ns));
    REQUIRE_FALSE(finished_);
  }
  void on_stream_data(std::span<const std::byte> bytes, bool) noexcept override {
    connection_.consume(id_, bytes.size());
    received_ += bytes.size();
    while (received_ >= message_bytes) {
      received_ -= message_bytes;
      echoed_++;
      window.on_completed(echoed_);
      if (sent_ < target_) send();
    }
  }
  void on_stream_finished(MuxError) noexcept override { finished_ = true; }

 private:
  void send() {
    auto taken = connection_.write(id_, message_, false);
    REQUIRE(taken.ok());
    REQUIRE(taken.value() == message_.size());
    sent_++;
  }
  Connection& connection_;
  StreamId id_ = 0;
  std::vector<std::byte> message_ = std::vector<std::byte>(message_bytes, std::byte{0x3c});
  uint64_t sent_ = 0;
  uint64_t echoed_ = 0;
  uint64_t target_ = 0;
  std::size_t received_ = 0;
  bool finished_ = false;
};

}  // namespace

// Proves a unary call costs no heap allocation once warm, on either side: 10,000 calls of
// 64 bytes with 64 in flight (after 10,000 with 128 in flight to warm up, and 2,000 more).
TEST_CASE("allocations: 10,000 unary calls after warm-up allocate nothing") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  ConnectionOptions options;
  Server server(*loop, options);
  Client client(*loop, server.port(), options);
  CallPump pump{*client.connection};
  pump.run(*loop, 10'000, 128);  // warm-up at twice the concurrency
  pump.window = {pump.completed + 2'000, pump.completed + 12'000};
  pump.run(*loop, 12'000, 64);
  const uint64_t counted_allocations = pump.window.value();
  MESSAGE("allocations during 10,000 unary calls: " << counted_allocations);
  CHECK(pump.failed == 0);
  CHECK(counted_allocations == 0);
  server.shut_down();
}

// Proves a call through the cluster layer (Manager::call: the peer's lookup, the call in
// flight kept for cancel(), no string built) costs no heap allocation once warm: 10,000
// calls of 64 bytes, 64 in flight, between two managers on one loop.
TEST_CASE("allocations: 10,000 cluster calls after warm-up allocate nothing") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  cluster::Manager a(*loop, engine::Address::loopback_v4(0));
  cluster::Manager b(*loop, engine::Address::loopback_v4(0));
  b.registry().add_unary(echo_unary, [](std::span<const std::byte> request, std::shared_ptr<Responder> responder) {
    responder->reply(request);
  });
  REQUIRE(a.start().ok());
  REQUIRE(b.start().ok());
  a.add_peer(b.self());
  b.add_peer(a.self());
  REQUIRE(loop->run_until([&] { return a.session(b.self()) != nullptr && b.session(a.self()) != nullptr; },
                          5 * second_ns));
  struct Pump {
    cluster::Manager& manager;
    engine::Address peer;
    std::vector<std::byte> request = std::vector<std::byte>(message_bytes, std::byte{0x11});
    uint64_t issued = 0, completed = 0, failed = 0, total = 0;
    CountWindow window;
    void run(Loop& loop, uint64_t calls, uint32_t in_flight) {
      total += calls;
      while (issued < total && issued - completed < in_flight) issue();
      REQUIRE(loop.run_until([&] { return completed == total; }, 30 * second_ns));
    }
    void issue() {
      issued++;
      manager.call(peer, echo_unary, request, 0, [this](const CallResult& result) {
        completed++;
        window.on_completed(completed);
        if (result.error != MuxError::none || result.response.size() != message_bytes) failed++;
        if (issued < total) issue();
      });
    }
  } pump{a, b.self()};
  pump.run(*loop, 10'000, 128);  // warm-up at twice the concurrency
  pump.window = {pump.completed + 2'000, pump.completed + 12'000};
  pump.run(*loop, 12'000, 64);
  const uint64_t counted_allocations = pump.window.value();
  MESSAGE("allocations during 10,000 cluster calls: " << counted_allocations);
  CHECK(pump.failed == 0);
  CHECK(counted_allocations == 0);
  a.close();
  b.close();
  CHECK(loop->run_until([&] { return a.closed() && b.closed(); }, 5 * second_ns));
}

// Proves stream messages cost no heap allocation once warm, either way: 10,000 messages of
// 64 bytes echoed back on one stream, 32 in flight (after 10,000 with 64, and 2,000 more).
TEST_CASE("allocations: 10,000 stream messages each way after warm-up allocate nothing") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  ConnectionOptions options;
  Server server(*loop, options);
  server.registry.add_stream(echo_stream, [](const StreamStart& start) { return new EchoStream(start); });
  Client client(*loop, server.port(), options);
  StreamPump pump(*client.connection);
  auto opened = client.connection->open(echo_stream, 0, {}, false, pump);
  REQUIRE(opened.ok());
  pump.start(opened.value());
  pump.run(*loop, 10'000, 64);  // warm-up at twice the concurrency
  pump.window = {pump.echoed() + 2'000, pump.echoed() + 12'000};
  pump.run(*loop, 12'000, 32);
  const uint64_t counted_allocations = pump.window.value();
  MESSAGE("allocations during 10,000 stream messages each way: " << counted_allocations);
  CHECK(counted_allocations == 0);
  client.connection->reset(opened.value(), MuxError::cancelled);
  server.shut_down();
}
