// mux::Client: a connection dialed and used from application threads, against the
// loopback server of the application-thread tests (tests/mux/workers/harness.h) on its
// own engine. Every case crosses threads; run under ThreadSanitizer (tests/run.sh tsan,
// "client:*").
#include "ringmux/mux/client/client.h"

#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <future>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "tests/mux/workers/harness.h"
#include "tests/support.h"

using namespace ringmux;
using namespace ringmux::mux;
using namespace ringmux::mux::threaded_test;
using engine::Loop;

namespace {

constexpr uint64_t ms_ns = 1'000'000;
constexpr uint64_t second_ns = 1000 * ms_ns;
// Generous: the deadline of anything that should succeed, on a loaded 2-core machine.
constexpr uint64_t generous_ns = 30 * second_ns;
constexpr uint32_t silent_unary = 9;  // keeps every responder and never replies

std::vector<std::byte> tagged(uint64_t tag, std::size_t bytes = sizeof(uint64_t)) {
  std::vector<std::byte> out(bytes, std::byte{0x5a});
  std::memcpy(out.data(), &tag, sizeof(tag));
  return out;
}

uint64_t tag_of(std::span<const std::byte> bytes) {
  uint64_t tag = UINT64_MAX;
  if (bytes.size() >= sizeof(tag)) std::memcpy(&tag, bytes.data(), sizeof(tag));
  return tag;
}

std::unique_ptr<Client> dial_harness(Harness& h, const ClientOptions& options = {}) {
  engine::IoError io_error = engine::IoError::other;
  auto dialed = Client::dial(h.side->listener.address(), deadline_after(generous_ns), options, &io_error);
  REQUIRE(dialed.ok());
  CHECK(io_error == engine::IoError::none);
  return std::move(dialed).value();
}

// A TCP port on 127.0.0.1 that nobody listens on: bound and closed again.
uint16_t closed_port() {
  const auto [fd, port] = ringmux::test::bound_socket(0);
  ::close(fd);
  return port;
}

// A client's stream to a counting sink that has stopped reading: its window stays shut.
struct StalledSink {
  Harness h;
  const bool stalled = stall();
  std::unique_ptr<Client> client = dial_harness(h);
  ClientStream stream = open();
  // More than any initial window: a write of it cannot finish while the sink does not read.
  const std::vector<std::byte> big = std::vector<std::byte>(16u << 20, std::byte{1});

 private:
  bool stall() {
    on_loop(*h.engine, [&] { h.side->sink_stalls = true; });
    return true;
  }
  ClientStream open() {
    auto opened = client->open_stream(counting_sink, 0);
    REQUIRE(opened.ok());
    return std::move(opened).value();
  }
};

}  // namespace

// Proves blocking calls from 8 application threads at once each get their own response
// (tagged requests), while asynchronous calls (callbacks on the loop) and futures from
// the same client complete with theirs; the client's own loop is the only one touching
// the connection.
TEST_CASE("client: 8 threads of blocking calls, async callbacks and futures on one client") {
  Harness h;
  auto client = dial_harness(h);
  constexpr int threads_count = 8;
  constexpr int calls_per_thread = 200;
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < threads_count; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < calls_per_thread; i++) {
        const uint64_t tag = static_cast<uint64_t>(t) << 32 | static_cast<uint64_t>(i);
        const auto request = tagged(tag, 8 + static_cast<std::size_t>(i % 64));
        CallReply reply = client->call(echo_unary, request, deadline_after(generous_ns));
        if (!reply || reply.value() != request) wrong.fetch_add(1);
      }
    });
  }
  constexpr int async_count = 300;
  std::atomic<int> async_right{0};
  std::atomic<int> async_heard{0};
  std::promise<void> async_all;
  for (int i = 0; i < async_count; i++) {
    client->call_async(echo_unary, tagged(1000 + i), deadline_after(generous_ns),
                       [&, i](const CallResult& result) {
                         if (result.error == MuxError::none && tag_of(result.response) == 1000u + i) async_right++;
                         if (async_heard.fetch_add(1) + 1 == async_count) async_all.set_value();
                       });
  }
  std::vector<std::future<CallReply>> futures;
  for (int i = 0; i < 100; i++) futures.push_back(client->call_future(echo_unary, tagged(5000 + i), deadline_after(generous_ns)));
  int futures_right = 0;
  for (int i = 0; i < 100; i++) {
    CallReply reply = futures[i].get();
    if (reply && tag_of(reply.value()) == 5000u + i) futures_right++;
  }
  for (auto& thread : threads) thread.join();
  async_all.get_future().get();
  CHECK(wrong.load() == 0);
  CHECK(async_right.load() == async_count);
  CHECK(futures_right == 100);
  CHECK_FALSE(client->closed());
}

// Proves a stream round trip through blocking reads and writes: a read with nothing sent
// ends at its deadline and leaves the stream usable, every message written comes back
// whole and in order, close_write() brings the server's end, and a read after the end
// says stream_closed.
TEST_CASE("client: stream echo with blocking read and write, deadlines and the end") {
  Harness h;
  auto client = dial_harness(h);
  auto opened = client->open_stream(echo_stream, 0);
  REQUIRE(opened.ok());
  ClientStream stream = std::move(opened).value();
  CHECK(stream.id() != 0);

  // Nothing was written, so nothing can arrive: the read must end at its deadline.
  auto early = stream.read(deadline_after(50 * ms_ns));
  REQUIRE_FALSE(early.ok());
  CHECK(early.error() == MuxError::deadline_exceeded);

  constexpr int messages = 200;
  std::vector<std::byte> received;
  std::vector<std::byte> sent;
  for (int i = 0; i < messages; i++) {
    const auto message = tagged(static_cast<uint64_t>(i), 8 + static_cast<std::size_t>(i * 37 % 3000));
    sent.insert(sent.end(), message.begin(), message.end());
    REQUIRE(stream.write(message, deadline_after(generous_ns)).ok());
    // The echo may split or join messages: read until this message's bytes are all back.
    while (received.size() < sent.size()) {
      auto read = stream.read(deadline_after(generous_ns));
      REQUIRE(read.ok());
      CHECK_FALSE(read.value().end);
      received.insert(received.end(), read.value().bytes.begin(), read.value().bytes.end());
    }
  }
  CHECK(received == sent);
  REQUIRE(stream.close_write(deadline_after(generous_ns)).ok());
  bool ended = false;
  for (int i = 0; i < 16 && !ended; i++) {  // the END, possibly after an empty delivery
    auto read = stream.read(deadline_after(generous_ns));
    REQUIRE(read.ok());
    CHECK(read.value().bytes.empty());
    ended = read.value().end;
  }
  CHECK(ended);
  auto after = stream.read(deadline_after(generous_ns));
  REQUIRE_FALSE(after.ok());
  CHECK(after.error() == MuxError::stream_closed);
  // Two streams in parallel, each on its own thread, on the same client.
  std::atomic<int> ok_streams{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; t++) {
    threads.emplace_back([&, t] {
      auto other = client->open_stream(echo_stream, deadline_after(generous_ns), tagged(77 + t), false);
      if (!other) return;
      auto read = other.value().read(deadline_after(generous_ns));
      if (read && tag_of(read.value().bytes) == 77u + t && other.value().close_write(deadline_after(generous_ns))) ok_streams++;
    });
  }
  for (auto& thread : threads) thread.join();
  CHECK(ok_streams.load() == 2);
}

// Proves a blocking write that the server never takes (it stops reading, so the window
// stays shut) fails at its deadline with deadline_exceeded and resets the stream: the
// server's handler hears the reset, and the stream reads its end.
TEST_CASE("client: a write to a stalled server fails at its deadline and resets the stream") {
  StalledSink fixture;
  Harness& h = fixture.h;
  ClientStream& stream = fixture.stream;
  auto written = stream.write(fixture.big, deadline_after(200 * ms_ns));
  REQUIRE_FALSE(written.ok());
  CHECK(written.error() == MuxError::deadline_exceeded);
  auto read = stream.read(deadline_after(generous_ns));
  REQUIRE_FALSE(read.ok());
  CHECK(read.error() == MuxError::deadline_exceeded);  // the stream's end: its reset reason
  for (int i = 0; i < 5000 && h.side->sink_finished.load() < 0; i++) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  CHECK(h.side->sink_finished.load() != -1);
}

// Proves cancel() from a third thread ends a stream under a writer blocked on a stalled
// server (its write fails with cancelled) and a reader blocked with no deadline (it reads
// the end, cancelled), and the server's handler hears the reset.
TEST_CASE("client: cancel from another thread wakes a blocked writer and a blocked reader") {
  StalledSink fixture;
  Harness& h = fixture.h;
  ClientStream& stream = fixture.stream;
  std::promise<MuxError> write_error;
  std::promise<MuxError> read_error;
  std::thread writer([&] {
    auto written = stream.write(fixture.big, 0);  // no deadline: only the cancel ends it
    write_error.set_value(written ? MuxError::none : written.error());
  });
  std::thread reader([&] {
    auto read = stream.read(0);
    read_error.set_value(read ? MuxError::none : read.error());
  });
  // The writer is blocked once the loop has taken what the window allows (its sleeps count).
  for (int i = 0; i < 10000 && stream.stats().writer_sleeps == 0; i++) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::thread canceller([&] { stream.cancel(); });
  canceller.join();
  writer.join();
  reader.join();
  CHECK(write_error.get_future().get() == MuxError::cancelled);
  CHECK(read_error.get_future().get() == MuxError::cancelled);
  for (int i = 0; i < 10000 && h.side->sink_finished.load() < 0; i++) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  CHECK(h.side->sink_finished.load() == static_cast<int>(MuxError::cancelled));
}

// Proves close() while calls are in flight ends every one of them (blocking calls on four
// threads, a future, a callback) and a blocked stream read, all with cancelled and none
// left waiting; after it, calls fail at once and the client reports closed/cancelled.
TEST_CASE("client: close while blocking calls, a future, a callback and a stream read are in flight") {
  Harness h;
  std::atomic<int> silent_received{0};
  auto held = std::make_shared<std::vector<std::shared_ptr<Responder>>>();
  on_loop(*h.engine, [&] {
    h.side->registry.add_unary(silent_unary, [&, held](std::span<const std::byte>, std::shared_ptr<Responder> responder) {
      held->push_back(std::move(responder));
      silent_received++;
    });
  });
  auto client = dial_harness(h);
  std::atomic<int> cancelled{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; t++) {
    threads.emplace_back([&] {
      CallReply reply = client->call(silent_unary, tagged(1), 0);  // no deadline: only close ends it
      if (!reply && reply.error() == MuxError::cancelled) cancelled++;
    });
  }
  auto future = client->call_future(silent_unary, tagged(2), 0);
  std::promise<MuxError> callback_error;
  client->call_async(silent_unary, tagged(3), 0,
                     [&](const CallResult& result) { callback_error.set_value(result.error); });
  auto opened = client->open_stream(echo_stream, 0);
  REQUIRE(opened.ok());
  ClientStream stream = std::move(opened).value();
  std::promise<MuxError> read_error;
  std::thread reader([&] {
    auto read = stream.read(0);  // blocks: nothing is written
    read_error.set_value(read ? MuxError::none : read.error());
  });
  // Every call has reached the server before the close.
  for (int i = 0; i < 10000 && silent_received.load() < 6; i++) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  REQUIRE(silent_received.load() == 6);

  client->close();
  CHECK(client->closed());
  CHECK(client->close_error() == MuxError::cancelled);
  for (auto& thread : threads) thread.join();
  reader.join();
  CHECK(cancelled.load() == 4);
  CallReply from_future = future.get();
  REQUIRE_FALSE(from_future.ok());
  CHECK(from_future.error() == MuxError::cancelled);
  CHECK(callback_error.get_future().get() == MuxError::cancelled);
  CHECK(read_error.get_future().get() == MuxError::cancelled);

  // After the close: a call fails (no wait for a deadline), a stream does not open, close
  // again returns at once.
  CallReply late = client->call(echo_unary, tagged(4), 0);
  REQUIRE_FALSE(late.ok());
  CHECK(late.error() == MuxError::stream_closed);
  auto late_stream = client->open_stream(echo_stream, 0);
  REQUIRE_FALSE(late_stream.ok());
  CHECK(late_stream.error() == MuxError::stream_closed);
  client->close();
  on_loop(*h.engine, [&] { held->clear(); });
}

// Proves dialing fails cleanly: a closed port with connection_lost and io_error refused,
// an address that does not parse with address_invalid, and a peer that accepts TCP but
// never answers the handshake with deadline_exceeded at the dial's deadline; each
// failure stops the client's own loop (the process keeps no thread behind: the test ends).
TEST_CASE("client: dial failures: refused port, bad address, silent peer at the deadline") {
  engine::IoError io_error = engine::IoError::none;
  auto refused = Client::dial(engine::Address::loopback_v4(closed_port()), deadline_after(generous_ns), {}, &io_error);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error() == MuxError::connection_lost);
  CHECK(io_error == engine::IoError::refused);

  auto bad = Client::dial("not an address", deadline_after(generous_ns), {}, &io_error);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error() == MuxError::connection_lost);
  CHECK(io_error == engine::IoError::address_invalid);

  // A listening socket nobody accepts from: the kernel completes the TCP handshake, the
  // HELLO goes out, no HELLO_ACK ever comes.
  const auto [fd, port] = ringmux::test::bound_socket(4);
  const uint64_t started_ns = Loop::clock_ns();
  auto silent = Client::dial(engine::Address::loopback_v4(port), deadline_after(300 * ms_ns), {}, &io_error);
  REQUIRE_FALSE(silent.ok());
  CHECK(silent.error() == MuxError::deadline_exceeded);
  CHECK(Loop::clock_ns() - started_ns >= 300 * ms_ns);
  ::close(fd);
}

// Proves a client can borrow a running engine loop (here the server's own): two clients
// share it, a call_async made on the loop thread itself completes, and destroying the
// clients leaves the borrowed loop running (the server still answers a third client).
TEST_CASE("client: clients on a borrowed loop; call_async from the loop thread") {
  Harness h;
  ClientOptions options;
  options.loop = &h.engine->loop(0);
  auto first = dial_harness(h, options);
  auto second = dial_harness(h, options);
  CHECK(&first->loop() == &h.engine->loop(0));
  CallReply reply = second->call(echo_unary, tagged(42), deadline_after(generous_ns));
  REQUIRE(reply.ok());
  CHECK(tag_of(reply.value()) == 42);
  std::promise<uint64_t> from_loop;
  on_loop(*h.engine, [&] {
    CHECK(first->connection().connected());  // the loop thread may reach the connection
    first->call_async(echo_unary, tagged(43), deadline_after(generous_ns),
                      [&](const CallResult& result) { from_loop.set_value(tag_of(result.response)); });
  });
  CHECK(from_loop.get_future().get() == 43);
  first.reset();
  second.reset();
  auto third = dial_harness(h);  // its own loop, to the server still running on the borrowed one
  CallReply again = third->call(echo_unary, tagged(44), deadline_after(generous_ns));
  REQUIRE(again.ok());
  CHECK(tag_of(again.value()) == 44);
}
