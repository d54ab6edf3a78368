// Connections over 127.0.0.1, both ends on one loop: unary calls, bidirectional streams,
// cancellation, deadlines, handler errors, STOP against the half-close stall, keepalive,
// and a stalled consumer that must not hold up other streams.
#include "ringmux/mux/link/connection.h"
#include "ringmux/mux/rpc/call.h"
#include "ringmux/mux/rpc/registry.h"

#include <doctest/doctest.h>

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>

#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <vector>

#include "ringmux/engine/socket.h"
#include "tests/support.h"
#include "tools/echo_server.h"

using namespace ringmux;
using namespace ringmux::mux;
using engine::Loop;

namespace {

constexpr uint64_t second_ns = 1'000'000'000;
constexpr uint32_t echo_unary = 1;
constexpr uint32_t echo_stream = 2;
constexpr uint32_t never_replies = 3;
constexpr uint32_t fails = 4;
constexpr uint32_t sink_stream = 5;

using Bytes = std::vector<std::byte>;

// Server streams that echo every byte back and end when the client ends.
class EchoStream final : public StreamObserver {
 public:
  explicit EchoStream(const StreamStart& start) : connection_(*start.connection), id_(start.id) {}
  void on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept override {
    // Copy: the echo keeps what it could not send yet; credit goes back as it leaves.
    pending_.insert(pending_.end(), bytes.begin(), bytes.end());
    end_ |= end_stream;
    pump();
  }
  void on_stream_writable() noexcept override { pump(); }
  void on_stream_finished(MuxError) noexcept override {}

 private:
  void pump() {
    if (finished_) return;
    auto taken = connection_.write(id_, std::span<const std::byte>(pending_).subspan(sent_), end_);
    if (!taken) return;
    if (taken.value() > 0) connection_.consume(id_, taken.value());
    sent_ += taken.value();
    if (sent_ == pending_.size()) {
      pending_.clear();
      sent_ = 0;
      finished_ = end_;
    }
  }
  Connection& connection_;
  StreamId id_;
  Bytes pending_;
  std::size_t sent_ = 0;
  bool end_ = false;
  bool finished_ = false;
};

// Server streams that count what they are given; `stalled` ones never consume it.
struct SinkStats {
  int stalled_streams = 0;
  uint64_t bytes = 0;
  std::vector<StreamId> stopped_after_five;
};
class SinkStream final : public StreamObserver {
 public:
  SinkStream(const StreamStart& start, SinkStats& stats, bool stall, bool stop_after_five)
      : connection_(*start.connection), id_(start.id), stats_(stats), stall_(stall), stop_after_five_(stop_after_five) {}
  void on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept override {
    if (stall_) return;  // never consumes: its window fills and stays full
    connection_.consume(id_, bytes.size());
    stats_.bytes += bytes.size();
    messages_ += bytes.size() / 1000;
    if (stop_after_five_ && messages_ >= 5 && !stopped_) {
      stopped_ = true;
      stats_.stopped_after_five.push_back(id_);
      connection_.stop(id_);
    }
    if (end_stream) (void)connection_.write(id_, {}, true);
  }
  void on_stream_finished(MuxError) noexcept override {}

 private:
  Connection& connection_;
  StreamId id_;
  SinkStats& stats_;
  bool stall_;
  bool stop_after_five_;
  bool stopped_ = false;
  uint64_t messages_ = 0;
};

// A listener that wraps each accepted fd in a server Connection, and a client connection.
struct Fixture final : engine::ListenerHandler, engine::ConnectHandler, ConnectionObserver {
  explicit Fixture(Loop& loop_ref, ConnectionOptions options = {}, std::optional<ConnectionOptions> server_options = {})
      : loop(loop_ref), listener(loop_ref, *this), connector(loop_ref, *this), options_(options),
        server_options_(server_options.value_or(options)) {
    registry.add_unary(echo_unary, [](std::span<const std::byte> request, std::shared_ptr<Responder> responder) {
      responder->reply(request);
    });
    registry.add_stream(echo_stream, [](const StreamStart& start) { return new EchoStream(start); });
    registry.add_unary(never_replies, [this](std::span<const std::byte>, std::shared_ptr<Responder> responder) {
      held.push_back(responder);
      responder->on_cancel([this] { server_cancellations++; });
    });
    registry.add_unary(fails, [](std::span<const std::byte>, std::shared_ptr<Responder> responder) {
      responder->fail(wire::StatusCode::handler_error, "disk 7 is read-only");
    });
    registry.add_stream(sink_stream, [this](const StreamStart& start) -> StreamObserver* {
      const bool stall = sink.stalled_streams-- > 0;
      return new SinkStream(start, sink, stall, stop_after_five);
    });
    REQUIRE(listener.listen(engine::Address::loopback_v4(0)).ok());
    connector.connect(listener.address());
    REQUIRE(loop.run_until([&] { return client != nullptr && !servers.empty(); }, 5 * second_ns));
  }
  ~Fixture() {
    held.clear();
    if (client && !client->closed()) client->close();
    for (auto& server : servers) {
      if (!server->closed()) server->close();
    }
    listener.close();
    loop.run_until([&] { return closed_count == 1 + servers.size() && listener_closed; }, 5 * second_ns);
    CHECK(loop.ops_in_flight() == 1);
  }

  void on_accept(int fd) noexcept override {
    servers.push_back(std::make_unique<Connection>(loop, fd, false, &registry, *this, server_options_));
    servers.back()->start();
  }
  void on_accept_error(engine::IoError) noexcept override {}
  void on_listener_closed() noexcept override { listener_closed = true; }
  void on_connect(Result<int, engine::IoError> fd) noexcept override {
    REQUIRE(fd.ok());
    client = std::make_unique<Connection>(loop, fd.value(), true, nullptr, *this, options_);
    client->start();
  }
  void on_connection_closed(Connection& connection, MuxError error, engine::IoError io_error) noexcept override {
    closed_count++;
    if (&connection == client.get()) {
      client_close_error = error;
      client_io_error = io_error;
      if (on_client_closed) on_client_closed();
    }
  }

  Loop& loop;
  Registry registry;
  engine::Listener listener;
  engine::Connector connector;
  ConnectionOptions options_;
  ConnectionOptions server_options_;
  std::unique_ptr<Connection> client;
  std::vector<std::unique_ptr<Connection>> servers;
  std::vector<std::shared_ptr<Responder>> held;
  int server_cancellations = 0;
  SinkStats sink;
  bool stop_after_five = false;
  std::size_t closed_count = 0;
  bool listener_closed = false;
  std::optional<MuxError> client_close_error;
  engine::IoError client_io_error = engine::IoError::none;
  std::function<void()> on_client_closed;  // a test's probe of the client's close
};

// A client stream that writes `total` bytes in random-sized messages and hashes what
// comes back.
class HashingStream final : public StreamObserver {
 public:
  HashingStream(Connection& connection, uint64_t seed, std::size_t total) : connection_(connection), rng_(seed), total_(total) {
    XXH3_64bits_reset(&sent_hash_);
    XXH3_64bits_reset(&received_hash_);
    message_.resize(16 * 1024);
    for (auto& b : message_) b = static_cast<std::byte>(rng_());
  }
  void start(StreamId id) {
    id_ = id;
    pump();
  }
  void pump() {
    while (sent_ < total_) {
      std::uniform_int_distribution<std::size_t> size(1, message_.size());
      const std::size_t want = pending_ != 0 ? pending_ : std::min(size(rng_), total_ - sent_);
      const auto chunk = std::span<const std::byte>(message_).subspan(message_.size() - want);
      auto taken = connection_.write(id_, chunk, sent_ + want == total_);
      if (!taken) return;
      XXH3_64bits_update(&sent_hash_, chunk.data(), taken.value());
      sent_ += taken.value();
      pending_ = want - taken.value();
      if (pending_ != 0) return;  // on_stream_writable continues
    }
  }
  void on_stream_data(std::span<const std::byte> bytes, bool) noexcept override {
    XXH3_64bits_update(&received_hash_, bytes.data(), bytes.size());
    received_ += bytes.size();
    connection_.consume(id_, bytes.size());
  }
  void on_stream_writable() noexcept override { pump(); }
  void on_stream_finished(MuxError error) noexcept override {
    finished_ = true;
    error_ = error;
  }
  bool ok() { return finished_ && error_ == MuxError::none && received_ == total_ &&
                     XXH3_64bits_digest(&sent_hash_) == XXH3_64bits_digest(&received_hash_); }
  bool finished_ = false;
  MuxError error_ = MuxError::none;

 private:
  Connection& connection_;
  std::mt19937_64 rng_;
  std::size_t total_;
  StreamId id_ = 0;
  Bytes message_;
  std::size_t sent_ = 0;
  std::size_t pending_ = 0;
  std::size_t received_ = 0;
  XXH3_state_t sent_hash_;
  XXH3_state_t received_hash_;
};

// A client stream that records its end.
struct Watcher final : StreamObserver {
  void on_stream_data(std::span<const std::byte> bytes, bool) noexcept override { received += bytes.size(); }
  void on_stream_stopped() noexcept override { stopped = true; }
  void on_stream_finished(MuxError e) noexcept override { error = e; }
  std::size_t received = 0;
  bool stopped = false;
  std::optional<MuxError> error;
};

// 64 KiB stream and connection windows, on both sides.
ConnectionOptions small_windows() {
  ConnectionOptions options;
  options.session.stream_window_bytes = 64 * 1024;
  options.session.stream_window_bytes_max = 64 * 1024;
  options.session.connection_window_bytes = 64 * 1024;
  return options;
}

// A server handler that keeps every byte it receives unconsumed until told.
struct Holder final : StreamObserver {
  Connection* connection = nullptr;
  StreamId id = 0;
  std::size_t held = 0;
  void on_stream_data(std::span<const std::byte> bytes, bool) noexcept override { held += bytes.size(); }
  void on_stream_finished(MuxError) noexcept override {}
};
constexpr uint32_t holding_stream = 42;

// A client stream's observer that keeps what it receives.
struct Collector final : StreamObserver {
  void on_stream_data(std::span<const std::byte> bytes, bool) noexcept override {
    received.insert(received.end(), bytes.begin(), bytes.end());
  }
  void on_stream_writable() noexcept override { writable = true; }
  void on_stream_finished(MuxError e) noexcept override { error = e; }
  Bytes received;
  bool writable = false;
  std::optional<MuxError> error;
};

// Bytes 0, 1, ... 250, 0, ... (a pattern whose every offset is checkable).
Bytes pattern(std::size_t size, int salt = 0) {
  Bytes bytes(size);
  for (std::size_t i = 0; i < size; i++) bytes[i] = std::byte((i + static_cast<std::size_t>(salt)) % 251);
  return bytes;
}

// What flushes the bytes waiting for credit is the credit's own arrival: they must not wait
// for the next keepalive (1 s) or any other timer.
constexpr uint64_t credit_reaction_max_ns = second_ns / 4;

// Fills the whole connection window (small_windows()) with a stream into a Holder, whose
// credit stays held until the test consumes it. `writer` is the client's observer.
Holder* hold_connection_window(Loop& loop, Fixture& f, Watcher& writer) {
  Holder* holder = nullptr;
  f.registry.add_stream(holding_stream, [&holder](const StreamStart& start) {
    holder = new Holder();
    holder->connection = start.connection;
    holder->id = start.id;
    return holder;
  });
  // After the handshake: until then the client assumes only the minimum windows.
  REQUIRE(loop.run_until([&] { return f.client->connected(); }, 5 * second_ns));
  auto id = f.client->open(holding_stream, 0, {}, false, writer);
  REQUIRE(id.ok());
  const Bytes window(64 * 1024, std::byte{2});
  REQUIRE(f.client->write(id.value(), window, false).value() == window.size());
  REQUIRE(loop.run_until([&] { return holder != nullptr && holder->held == window.size(); }, 5 * second_ns));
  return holder;
}

}  // namespace

// Proves 10,000 unary calls in flight at once on one connection all complete, each with
// its own response.
TEST_CASE("connection: 10,000 concurrent unary calls") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Fixture f(*loop);
  constexpr int calls = 10000;
  int ok = 0, wrong = 0, failed = 0;
  for (int i = 0; i < calls; i++) {
    Bytes request(8 + i % 100);
    std::memcpy(request.data(), &i, sizeof(i));
    call(*f.client, echo_unary, request, 0, [i, size = request.size(), &ok, &wrong, &failed](const CallResult& r) {
      if (r.error != MuxError::none) {
        failed++;
        return;
      }
      int echoed = -1;
      if (r.response.size() == size) std::memcpy(&echoed, r.response.data(), sizeof(echoed));
      (echoed == i ? ok : wrong)++;
    });
  }
  CHECK(loop->run_until([&] { return ok + wrong + failed == calls; }, 60 * second_ns));
  CHECK(ok == calls);
  CHECK(wrong == 0);
  CHECK(failed == 0);
  // One send per batch, not per call.
  CHECK(f.client->batches_sent() < static_cast<uint64_t>(calls) / 10);
}

// Proves 1,000 bidirectional streams with random message sizes round-trip every byte,
// in order, under flow control (hashes compared).
TEST_CASE("connection: 1,000 bidirectional streams with random message sizes") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Fixture f(*loop);
  const uint64_t seed = test::test_seed("connection 1000 streams");
  std::mt19937_64 rng(seed);
  std::vector<std::unique_ptr<HashingStream>> streams;
  for (int i = 0; i < 1000; i++) {
    streams.push_back(std::make_unique<HashingStream>(*f.client, rng(), 1 + rng() % (128 * 1024)));
    auto id = f.client->open(echo_stream, 0, {}, false, *streams.back());
    REQUIRE(id.ok());
    streams.back()->start(id.value());
  }
  auto all_finished = [&] {
    for (auto& s : streams) {
      if (!s->finished_) return false;
    }
    return true;
  };
  CHECK(loop->run_until(all_finished, 120 * second_ns));
  int intact = 0;
  for (auto& s : streams) intact += s->ok() ? 1 : 0;
  CHECK(intact == 1000);
}

// Proves cancellation: the caller gets cancelled (not a bare end of stream) and the
// server's handler observes it.
TEST_CASE("connection: cancel reaches the server handler") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Fixture f(*loop);
  std::optional<MuxError> outcome;
  const StreamId id = call(*f.client, never_replies, {}, 0, [&](const CallResult& r) { outcome = r.error; });
  REQUIRE(id != 0);
  REQUIRE(loop->run_until([&] { return !f.held.empty(); }, 5 * second_ns));
  f.client->cancel(id);
  CHECK(loop->run_until([&] { return outcome.has_value(); }, 5 * second_ns));
  CHECK(outcome == MuxError::cancelled);
  CHECK(loop->run_until([&] { return f.server_cancellations == 1; }, 5 * second_ns));
  CHECK(f.held.back()->cancelled());
}

// Proves deadlines on both sides: the client fails at its own deadline though the server
// is silent, and the server cancels the handler when the deadline it was sent passes.
TEST_CASE("connection: deadline exceeded on both sides") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Fixture f(*loop);
  std::optional<MuxError> outcome;
  const uint64_t start = Loop::clock_ns();
  call(*f.client, never_replies, {}, start + 100'000'000, [&](const CallResult& r) { outcome = r.error; });
  CHECK(loop->run_until([&] { return outcome.has_value(); }, 5 * second_ns));
  CHECK(outcome == MuxError::deadline_exceeded);
  const uint64_t elapsed = Loop::clock_ns() - start;
  CHECK(elapsed >= 95'000'000);
  CHECK(elapsed < 1'000'000'000);
  CHECK(loop->run_until([&] { return f.server_cancellations == 1; }, 5 * second_ns));
  // A deadline already in the past is refused before anything is sent.
  std::optional<MuxError> late;
  CHECK(call(*f.client, echo_unary, {}, Loop::clock_ns() - 1, [&](const CallResult& r) { late = r.error; }) == 0);
  CHECK(loop->run_until([&] { return late.has_value(); }, 5 * second_ns));
  CHECK(late == MuxError::deadline_exceeded);
}

// Proves an unknown handler id and a failing handler are stream-scoped errors carrying
// their reason, and the connection goes on serving.
TEST_CASE("connection: unknown handler and handler error with a message") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Fixture f(*loop);
  std::optional<CallResult> unknown, failed, fine;
  call(*f.client, 999, {}, 0, [&](const CallResult& r) { unknown = r; });
  call(*f.client, fails, {}, 0, [&](const CallResult& r) { failed = CallResult{r.error, {}, r.message}; });
  call(*f.client, echo_unary, {}, 0, [&](const CallResult& r) { fine = CallResult{r.error, {}, r.message}; });
  CHECK(loop->run_until([&] { return unknown && failed && fine; }, 5 * second_ns));
  CHECK(unknown->error == MuxError::unknown_handler);
  CHECK(failed->error == MuxError::handler_error);
  CHECK(failed->message == "disk 7 is read-only");
  CHECK(fine->error == MuxError::none);
  CHECK(!f.client->closed());
}

// Proves the half-close stall cannot happen (yamux #133): the client writes 10 messages,
// the server reads 5 and sends STOP; the client's next write fails within 100 ms.
TEST_CASE("connection: STOP fails the writer within 100 ms") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Watcher watcher;  // outlives the fixture, whose connection finishes it when closing
  Fixture f(*loop);
  f.stop_after_five = true;
  auto id = f.client->open(sink_stream, 0, {}, false, watcher);
  REQUIRE(id.ok());
  const Bytes message(1000, std::byte{7});
  for (int i = 0; i < 10; i++) REQUIRE(f.client->write(id.value(), message, false).value() == 1000);
  const uint64_t start = Loop::clock_ns();
  MuxError write_error = MuxError::none;
  CHECK(loop->run_until(
      [&] {
        auto r = f.client->write(id.value(), message, false);
        if (!r) write_error = r.error();
        return !r.ok();
      },
      second_ns));
  CHECK(write_error == MuxError::stream_stopped);
  CHECK(Loop::clock_ns() - start < 100'000'000);
  CHECK(watcher.stopped);
}

// Proves one consumer that stops reading cannot stop the 63 other streams on the same
// connection, and that what it holds stays within its window.
TEST_CASE("connection: one stalled consumer among 64 streams does not stop the others") {
  ConnectionOptions options;
  options.session.stream_window_bytes = 64 * 1024;
  options.session.stream_window_bytes_max = 64 * 1024;
  auto loop = test::make_test_loop();
  if (!loop) return;
  const Bytes block(256 * 1024, std::byte{1});
  struct Writer final : StreamObserver {
    Connection* connection = nullptr;
    StreamId id = 0;
    const Bytes* block = nullptr;
    std::size_t sent = 0;
    std::optional<MuxError> done;
    void pump() {
      while (sent < block->size()) {
        auto taken = connection->write(id, std::span<const std::byte>(*block).subspan(sent), true);
        if (!taken || taken.value() == 0) return;
        sent += taken.value();
      }
    }
    void on_stream_data(std::span<const std::byte> bytes, bool) noexcept override { connection->consume(id, bytes.size()); }
    void on_stream_writable() noexcept override { pump(); }
    void on_stream_finished(MuxError e) noexcept override { done = e; }
  };
  // Declared before the fixture: the stalled stream's observer must outlive the
  // connection, which finishes it when it closes.
  std::vector<std::unique_ptr<Writer>> writers;
  Fixture f(*loop, options);
  f.sink.stalled_streams = 1;  // the first stream opened stalls
  for (int i = 0; i < 64; i++) {
    writers.push_back(std::make_unique<Writer>());
    Writer& w = *writers.back();
    w.connection = f.client.get();
    w.block = &block;
    auto id = f.client->open(sink_stream, 0, {}, false, w);
    REQUIRE(id.ok());
    w.id = id.value();
    w.pump();
  }
  auto others_done = [&] {
    for (std::size_t i = 1; i < writers.size(); i++) {
      if (!writers[i]->done) return false;
    }
    return true;
  };
  CHECK(loop->run_until(others_done, 30 * second_ns));
  for (std::size_t i = 1; i < writers.size(); i++) CHECK(writers[i]->done == MuxError::none);
  CHECK(!writers[0]->done.has_value());
  CHECK(writers[0]->sent == 64 * 1024);  // exactly one window went out, then it waited
  CHECK(f.servers[0]->session().stream_buffered(writers[0]->id) == 64 * 1024);
  CHECK(f.sink.bytes == 63u * block.size());
}

// Proves a call waits for connection credit that other streams hold instead of failing:
// a stream into a server handler that holds what it receives takes the whole connection
// window; a call made then opens with what fits (nothing) and sends its request once the
// handler consumes; the answer is the call's own request.
TEST_CASE("connection: a call waits for connection credit held by other streams") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Watcher writer;  // outlives the fixture, which finishes it when it closes
  Fixture f(*loop, small_windows());
  Holder* holder = hold_connection_window(*loop, f, writer);
  Bytes request(1000);
  for (std::size_t i = 0; i < request.size(); i++) request[i] = std::byte(i % 251);
  std::optional<MuxError> error;
  Bytes response;
  call(*f.client, echo_unary, request, 0, [&](const CallResult& r) {
    error = r.error;
    response.assign(r.response.begin(), r.response.end());
  });
  loop->run_until([] { return false; }, second_ns / 50);  // 20 ms
  CHECK_FALSE(error.has_value());  // waiting for credit, not refused
  holder->connection->consume(holder->id, holder->held);  // the credit comes back
  CHECK(loop->run_until([&] { return error.has_value(); }, credit_reaction_max_ns));
  REQUIRE(loop->run_until([&] { return error.has_value(); }, 5 * second_ns));
  CHECK(*error == MuxError::none);
  CHECK(response == request);
}

// Proves a stream opened while other streams hold the connection's credit waits for it
// instead of being refused: with the whole window held by a server handler, an echo stream
// opens with a 1000-byte payload (nothing of it can go yet); a write behind it takes
// nothing until the payload has gone; once the credit comes back the payload, then the
// write, then the END arrive in that order, and the echo returns exactly those bytes.
TEST_CASE("connection: a stream waits for connection credit held by other streams") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Watcher writer;
  Collector echo;
  Fixture f(*loop, small_windows());
  Holder* holder = hold_connection_window(*loop, f, writer);

  const Bytes payload = pattern(1000), more = pattern(500, 7);
  auto id = f.client->open(echo_stream, 0, payload, false, echo);
  REQUIRE(id.ok());  // not refused for want of credit
  auto taken = f.client->write(id.value(), more, false);
  REQUIRE(taken.ok());
  CHECK(taken.value() == 0);  // behind the open's payload, which is still waiting
  loop->run_until([] { return false; }, second_ns / 50);  // 20 ms: nothing moves
  CHECK(echo.received.empty());
  holder->connection->consume(holder->id, holder->held);  // the credit comes back
  REQUIRE(loop->run_until([&] { return echo.writable; }, 5 * second_ns));
  CHECK(loop->run_until([&] { return echo.received.size() == payload.size(); }, credit_reaction_max_ns));
  REQUIRE(f.client->write(id.value(), more, false).value() == more.size());
  REQUIRE(f.client->end(id.value()).ok());
  REQUIRE(loop->run_until([&] { return echo.error.has_value(); }, 5 * second_ns));
  CHECK(*echo.error == MuxError::none);
  Bytes expected = payload;
  expected.insert(expected.end(), more.begin(), more.end());
  CHECK(echo.received == expected);
}

// Proves the waiting payload of an open goes by itself once the credit comes back, with no
// later write to push it, and that an END written alone (write of no bytes with
// end_stream) while it waits is queued behind it: the echo returns exactly the payload and
// ends; a write after that END fails with stream_closed.
TEST_CASE("connection: an open's waiting payload goes once credit returns; an END waits behind it") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  for (const bool end_alone : {false, true}) {
    CAPTURE(end_alone);
    Watcher writer;
    Collector echo;
    Fixture f(*loop, small_windows());
    Holder* holder = hold_connection_window(*loop, f, writer);
    const Bytes payload = pattern(3000);
    auto id = f.client->open(echo_stream, 0, payload, false, echo);
    REQUIRE(id.ok());
    if (end_alone) {
      auto ended = f.client->write(id.value(), {}, true);
      REQUIRE(ended.ok());
      CHECK(ended.value() == 0);
      auto after = f.client->write(id.value(), pattern(10), false);
      REQUIRE_FALSE(after.ok());
      CHECK(after.error() == MuxError::stream_closed);
    }
    loop->run_until([] { return false; }, second_ns / 50);  // 20 ms: nothing moves
    CHECK(echo.received.empty());
    holder->connection->consume(holder->id, holder->held);
    CHECK(loop->run_until([&] { return echo.received.size() == payload.size(); }, credit_reaction_max_ns));
    if (!end_alone) REQUIRE(f.client->end(id.value()).ok());
    REQUIRE(loop->run_until([&] { return echo.error.has_value(); }, 5 * second_ns));
    CHECK(*echo.error == MuxError::none);
    CHECK(echo.received == payload);
  }
}

// Proves a silent peer is detected within the dead-peer timeout: the server side here
// is a plain socket that accepts and never reads or writes.
TEST_CASE("connection: a silent peer is detected within the keepalive timeout") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  tools::EchoServer silent(*loop);
  silent.set_never_read(true);
  REQUIRE(silent.listen(engine::Address::loopback_v4(0)).ok());
  struct Dialer final : engine::ConnectHandler, ConnectionObserver {
    Loop& loop;
    ConnectionOptions options;
    std::unique_ptr<Connection> connection;
    std::optional<engine::IoError> io_error;
    uint64_t closed_at = 0;
    explicit Dialer(Loop& l) : loop(l) {}
    void on_connect(Result<int, engine::IoError> fd) noexcept override {
      REQUIRE(fd.ok());
      connection = std::make_unique<Connection>(loop, fd.value(), true, nullptr, *this, options);
      connection->start();
    }
    void on_connection_closed(Connection&, MuxError error, engine::IoError e) noexcept override {
      io_error = e;
      close_error = error;
      closed_at = Loop::clock_ns();
    }
    std::optional<MuxError> close_error;
  } dialer(*loop);
  dialer.options.keepalive_interval_ns = 50'000'000;
  dialer.options.dead_peer_timeout_ns = 150'000'000;
  engine::Connector connector(*loop, dialer);
  const uint64_t start = Loop::clock_ns();
  connector.connect(silent.address());
  CHECK(loop->run_until([&] { return dialer.io_error.has_value(); }, 5 * second_ns));
  CHECK(dialer.io_error == engine::IoError::timed_out);
  CHECK(dialer.close_error == MuxError::connection_lost);
  CHECK(dialer.closed_at - start >= 150'000'000);
  CHECK(dialer.closed_at - start < 400'000'000);
  silent.close();
  loop->run_until([&] { return silent.closed(); }, 5 * second_ns);
}

// Proves refusal beyond the server's stream limit is retryable: the third concurrent call
// is refused with nothing processed, and succeeds when retried after one finished.
TEST_CASE("connection: refused beyond the stream limit, then a successful retry") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  ConnectionOptions server;
  server.session.streams_concurrent_max = 2;
  // Declared before the fixture: a call still open when the fixture closes the
  // connection completes (with an error) into it.
  std::vector<std::optional<MuxError>> outcomes(3);
  Fixture f(*loop, {}, server);
  std::vector<StreamId> ids;
  for (int i = 0; i < 3; i++) {
    ids.push_back(call(*f.client, never_replies, {}, 0, [&outcomes, i](const CallResult& r) { outcomes[i] = r.error; }));
  }
  CHECK(loop->run_until([&] { return outcomes[2].has_value(); }, 5 * second_ns));
  CHECK(outcomes[2] == MuxError::refused);
  CHECK(!outcomes[0].has_value());
  CHECK(f.held.size() == 2);  // only two reached the handler
  f.client->cancel(ids[0]);
  CHECK(loop->run_until([&] { return f.server_cancellations == 1; }, 5 * second_ns));
  std::optional<CallResult> retry;
  call(*f.client, echo_unary, {}, 0, [&](const CallResult& r) { retry = CallResult{r.error, {}, r.message}; });
  CHECK(loop->run_until([&] { return retry.has_value(); }, 5 * second_ns));
  CHECK(retry->error == MuxError::none);
}

// Proves GOAWAY drains: a call in flight completes, a new one is refused, and a stream id
// that has finished is a stale handle (an error, not a crash).
TEST_CASE("connection: goaway drains, and stale stream ids are errors") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Fixture f(*loop);
  std::optional<MuxError> in_flight;
  call(*f.client, never_replies, {}, 0, [&](const CallResult& r) { in_flight = r.error; });
  REQUIRE(loop->run_until([&] { return f.held.size() == 1; }, 5 * second_ns));
  f.servers[0]->goaway();
  loop->run_until([] { return false; }, 20'000'000);
  std::optional<MuxError> late;
  call(*f.client, echo_unary, {}, 0, [&](const CallResult& r) { late = r.error; });
  CHECK(loop->run_until([&] { return late.has_value(); }, 5 * second_ns));
  CHECK(late == MuxError::refused);
  f.held[0]->reply(std::as_bytes(std::span(std::string_view("done"))));
  CHECK(loop->run_until([&] { return in_flight.has_value(); }, 5 * second_ns));
  CHECK(in_flight == MuxError::none);
  auto stale = f.client->write(1, std::as_bytes(std::span(std::string_view("x"))), false);
  REQUIRE(!stale.ok());
  CHECK(stale.error() == MuxError::stream_closed);
}

// Proves the server refuses a call that arrives with its deadline (as good as) passed,
// without starting the handler.
TEST_CASE("connection: a call arriving past its deadline is refused before the handler runs") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Watcher watcher;  // outlives the fixture
  Fixture f(*loop);
  std::byte request[1] = {};
  // Opened with 2 us left: the budget that reaches the server is under the minimum.
  auto id = f.client->open(never_replies, Loop::clock_ns() + 2'000, request, true, watcher);
  if (!id) {
    CHECK(id.error() == MuxError::deadline_exceeded);  // it passed before we even sent it
    return;
  }
  CHECK(loop->run_until([&] { return watcher.error.has_value(); }, 5 * second_ns));
  CHECK(watcher.error == MuxError::deadline_exceeded);
  loop->run_until([] { return false; }, 20'000'000);
  CHECK(f.held.empty());
}

// Proves the handshake over a real connection: the dialer's session gets a random (not
// all-zero) id that the acceptor adopts from the HELLO, both complete the handshake, and
// at rest each side's send position equals the other's receive position.
TEST_CASE("connection: the handshake carries a random session id; positions agree at rest") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Fixture f(*loop);
  int done = 0;
  for (int i = 0; i < 100; i++) {
    const Bytes request(1 + i * 97, std::byte{7});
    call(*f.client, echo_unary, request, 0, [&done](const CallResult& r) { done += r.error == MuxError::none; });
  }
  REQUIRE(loop->run_until([&] { return done == 100; }, 10 * second_ns));
  Session& client = f.client->session();
  Session& server = f.servers.at(0)->session();
  CHECK(client.handshake_complete());
  CHECK(server.handshake_complete());
  CHECK(client.session_id() != wire::SessionId{});
  CHECK(server.session_id() == client.session_id());
  CHECK(client.generation() == 1);
  CHECK(server.generation() == 1);
  CHECK(loop->run_until([&] { return client.send_position() == server.receive_position() &&
                                     server.send_position() == client.receive_position(); },
                        5 * second_ns));
  CHECK(client.send_position() > 0);
  CHECK(client.peer_acked_position() <= client.send_position());
  CHECK(server.peer_acked_position() <= server.send_position());
}

// ---- callbacks never run inside the call that started them ----

namespace {

// A client stream's observer that counts its ends and notes whether the call that ended
// the stream had returned first (`returned`, set by the test right after that call).
struct Ends final : StreamObserver {
  const bool* returned = nullptr;
  int finished = 0;
  bool after_return = false;
  bool peer_ended = false;
  std::optional<MuxError> error;
  void on_stream_data(std::span<const std::byte>, bool end_stream) noexcept override { peer_ended |= end_stream; }
  void on_stream_finished(MuxError e) noexcept override {
    finished++;
    after_return = returned != nullptr && *returned;
    error = e;
  }
};

// Server side: ends its half of the stream on the first data, leaving ours open.
constexpr uint32_t ends_at_once = 43;
struct EndsAtOnce final : StreamObserver {
  explicit EndsAtOnce(const StreamStart& start) : connection(*start.connection), id(start.id) {}
  void on_stream_data(std::span<const std::byte> bytes, bool) noexcept override {
    connection.consume(id, bytes.size());
    if (!ended) (void)connection.write(id, {}, true);
    ended = true;
  }
  void on_stream_finished(MuxError) noexcept override {}
  Connection& connection;
  StreamId id;
  bool ended = false;
};

}  // namespace

// Proves a call that fails at once (its deadline has passed) does not run its callback
// inside call(): the callback runs on the loop's next turn, after the caller went on, and
// exactly once.
TEST_CASE("connection: a call that fails at once reports on the next turn, once") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Fixture f(*loop);
  bool returned = false;
  int calls = 0;
  bool after_return = false;
  std::optional<MuxError> error;
  const StreamId id = call(*f.client, echo_unary, {}, Loop::clock_ns() - 1, [&](const CallResult& r) {
    calls++;
    after_return = returned;
    error = r.error;
  });
  returned = true;
  CHECK(id == 0);
  CHECK(calls == 0);  // not inside call()
  loop->run_once(false);
  CHECK(calls == 1);
  CHECK(after_return);
  CHECK(error == MuxError::deadline_exceeded);
  loop->run_until([] { return false; }, 20'000'000);
  CHECK(calls == 1);
}

// Proves cancel() of a call and reset() of a stream do not call back: the call's callback
// and the stream's on_stream_finished run on the next turn, once each (the peer's handler
// hears the cancellation too).
TEST_CASE("connection: cancel() and reset() report on the next turn, once") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  bool returned = false;
  Ends stream;  // outlives the fixture
  stream.returned = &returned;
  Fixture f(*loop);
  int calls = 0;
  bool after_return = false;
  std::optional<MuxError> error;
  const StreamId id = call(*f.client, never_replies, {}, 0, [&](const CallResult& r) {
    calls++;
    after_return = returned;
    error = r.error;
  });
  REQUIRE(id != 0);
  auto stream_id = f.client->open(echo_stream, 0, {}, false, stream);
  REQUIRE(stream_id.ok());
  REQUIRE(loop->run_until([&] { return !f.held.empty(); }, 5 * second_ns));

  f.client->cancel(id);
  f.client->reset(stream_id.value(), MuxError::cancelled);
  f.client->cancel(id);  // a second cancel of the same call changes nothing
  returned = true;
  CHECK(calls == 0);  // not inside cancel() or reset()
  CHECK(stream.finished == 0);
  loop->run_once(false);
  CHECK(calls == 1);
  CHECK(after_return);
  CHECK(error == MuxError::cancelled);
  CHECK(stream.finished == 1);
  CHECK(stream.after_return);
  CHECK(stream.error == MuxError::cancelled);
  CHECK(loop->run_until([&] { return f.server_cancellations == 1; }, 5 * second_ns));
  CHECK(calls == 1);
  CHECK(stream.finished == 1);
}

// Proves a write or an end that completes a stream (the peer had ended its side) does not
// call back: on_stream_finished (none: a clean end) runs on the next turn, once.
TEST_CASE("connection: a write or end that completes a stream reports on the next turn") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  bool returned = false;
  Ends by_write, by_end;
  by_write.returned = by_end.returned = &returned;
  Fixture f(*loop);
  f.registry.add_stream(ends_at_once, [](const StreamStart& start) { return new EndsAtOnce(start); });
  const Bytes one(1, std::byte{1});
  auto a = f.client->open(ends_at_once, 0, one, false, by_write);
  auto b = f.client->open(ends_at_once, 0, one, false, by_end);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  // The peer's END arrives: each stream waits for ours.
  REQUIRE(loop->run_until([&] { return by_write.peer_ended && by_end.peer_ended; }, 5 * second_ns));
  REQUIRE(f.client->session().streams_open() == 2);
  REQUIRE(f.client->write(a.value(), one, true).value() == 1);
  REQUIRE(f.client->end(b.value()).ok());
  returned = true;
  CHECK(f.client->session().streams_open() == 0);  // both ended inside the calls...
  CHECK(by_write.finished == 0);                   // ...and neither observer heard it there
  CHECK(by_end.finished == 0);
  loop->run_once(false);
  for (Ends* ends : {&by_write, &by_end}) {
    CHECK(ends->finished == 1);
    CHECK(ends->after_return);
    CHECK(ends->error == MuxError::none);
  }
}

// Proves close() calls nothing back: a cancelled call, a call in flight and two streams
// each hear their end once, on the next turn, and on_connection_closed comes after all of
// them (a user who cancels, then closes, hears each callback once).
TEST_CASE("connection: close() reports every end on a later turn, then the close") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  bool returned = false;
  Ends s1, s2;
  s1.returned = s2.returned = &returned;
  Fixture f(*loop);
  int cancelled_calls = 0, open_calls = 0;
  std::optional<MuxError> cancelled_error, open_error;
  const StreamId cancelled = call(*f.client, never_replies, {}, 0, [&](const CallResult& r) {
    cancelled_calls++;
    cancelled_error = r.error;
  });
  call(*f.client, never_replies, {}, 0, [&](const CallResult& r) {
    open_calls++;
    open_error = r.error;
  });
  REQUIRE(f.client->open(echo_stream, 0, {}, false, s1).ok());
  REQUIRE(f.client->open(echo_stream, 0, {}, false, s2).ok());
  REQUIRE(loop->run_until([&] { return f.held.size() == 2; }, 5 * second_ns));
  int ends_heard_at_close = -1;
  f.on_client_closed = [&] { ends_heard_at_close = cancelled_calls + open_calls + s1.finished + s2.finished; };

  f.client->cancel(cancelled);
  f.client->close(MuxError::connection_lost);
  returned = true;
  CHECK(cancelled_calls + open_calls + s1.finished + s2.finished == 0);  // not inside cancel() or close()
  CHECK_FALSE(f.client_close_error.has_value());
  REQUIRE(loop->run_until([&] { return f.client_close_error.has_value(); }, 5 * second_ns));
  CHECK(ends_heard_at_close == 4);  // every end before the close
  CHECK(cancelled_calls == 1);
  CHECK(cancelled_error == MuxError::cancelled);
  CHECK(open_calls == 1);
  CHECK(open_error == MuxError::connection_lost);
  for (Ends* ends : {&s1, &s2}) {
    CHECK(ends->finished == 1);
    CHECK(ends->after_return);
    CHECK(ends->error == MuxError::connection_lost);
  }
  CHECK(f.client_close_error == MuxError::connection_lost);
}
