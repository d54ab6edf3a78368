// Connection snapshots (mux/link/snapshot.h): unary calls and a stream stalled by flow
// control move the counters they should, a snapshot taken from another thread (run on the
// loop) agrees with one taken on it, and LinkTotals adds them up.
#include "ringmux/mux/link/snapshot.h"

#include <doctest/doctest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "ringmux/engine/socket.h"
#include "ringmux/mux/link/connection.h"
#include "ringmux/mux/rpc/call.h"
#include "ringmux/mux/rpc/registry.h"
#include "tests/support.h"

using namespace ringmux;
using namespace ringmux::mux;
using engine::Loop;

namespace {

constexpr uint64_t second_ns = 1'000'000'000;
constexpr uint32_t echo_unary = 1;
constexpr uint32_t holding_stream = 2;
constexpr int calls = 10;
constexpr std::size_t request_bytes = 1000;

// A server stream that never consumes: its window fills and the writer stalls.
struct Holding final : StreamObserver {
  void on_stream_data(std::span<const std::byte>, bool) noexcept override {}
  void on_stream_finished(MuxError) noexcept override { delete this; }
};

struct Quiet final : StreamObserver {
  void on_stream_data(std::span<const std::byte>, bool) noexcept override {}
  void on_stream_finished(MuxError) noexcept override {}
};

struct Fixture final : engine::ListenerHandler, engine::ConnectHandler, ConnectionObserver {
  explicit Fixture(Loop& loop_ref, ConnectionOptions client_options_ref = {})
      : loop(loop_ref), listener(loop_ref, *this), connector(loop_ref, *this), client_options(client_options_ref) {
    registry.add_unary(echo_unary, [](std::span<const std::byte> request, std::shared_ptr<Responder> responder) {
      responder->reply(request);
    });
    registry.add_stream(holding_stream, [](const StreamStart&) -> StreamObserver* { return new Holding; });
    REQUIRE(listener.listen(engine::Address::loopback_v4(0)).ok());
    connector.connect(listener.address());
    REQUIRE(loop.run_until([&] { return client != nullptr && server != nullptr; }, 5 * second_ns));
  }
  ~Fixture() {
    if (!client->closed()) client->close();
    if (!server->closed()) server->close();
    listener.close();
    loop.run_until([&] { return closed == 2 && listener_closed; }, 5 * second_ns);
  }
  void on_accept(int fd) noexcept override {
    server = std::make_unique<Connection>(loop, fd, false, &registry, *this);
    server->start();
  }
  void on_accept_error(engine::IoError) noexcept override {}
  void on_listener_closed() noexcept override { listener_closed = true; }
  void on_connect(Result<int, engine::IoError> fd) noexcept override {
    REQUIRE(fd.ok());
    client = std::make_unique<Connection>(loop, fd.value(), true, nullptr, *this, client_options);
    client->start();
  }
  void on_connection_closed(Connection&, MuxError, engine::IoError) noexcept override { closed++; }

  Loop& loop;
  Registry registry;
  engine::Listener listener;
  engine::Connector connector;
  ConnectionOptions client_options;
  std::unique_ptr<Connection> client;
  std::unique_ptr<Connection> server;
  int closed = 0;
  bool listener_closed = false;
};

}  // namespace

TEST_CASE("snapshot: calls move the counters on both sides, from any thread") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Fixture fixture(*loop);
  const std::vector<std::byte> request(request_bytes, std::byte{7});
  int answered = 0;
  for (int i = 0; i < calls; i++) {
    call(*fixture.client, echo_unary, request, 0, [&answered](const CallResult& result) {
      CHECK(result.error == MuxError::none);
      answered++;
    });
  }
  REQUIRE(loop->run_until([&] { return answered == calls; }, 5 * second_ns));
  // The server's turn may still be finishing its streams, and the client's last frames (an
  // ACK, credit) may be on their way: let the loop settle until the two sides agree.
  REQUIRE(loop->run_until(
      [&] {
        const ConnectionSnapshot sent = fixture.client->snapshot();
        const ConnectionSnapshot received = fixture.server->snapshot();
        return received.streams_open == 0 && received.bytes_received == sent.bytes_sent &&
               received.frames_received == sent.frames_sent;
      },
      5 * second_ns));

  const ConnectionSnapshot client = fixture.client->snapshot();
  const ConnectionSnapshot server = fixture.server->snapshot();
  CHECK(client.id == fixture.client->id());
  CHECK(client.dialer);
  CHECK(!server.dialer);
  CHECK(client.connected);
  CHECK(client.streams_opened_local == calls);
  CHECK(server.streams_opened_remote == calls);
  CHECK(client.streams_open == 0);
  CHECK(client.bytes_sent >= calls * request_bytes);
  CHECK(server.bytes_received == client.bytes_sent);
  CHECK(client.bytes_received >= calls * request_bytes);
  CHECK(client.frames_sent > 0);
  CHECK(server.frames_received == client.frames_sent);
  CHECK(client.batches_sent > 0);
  CHECK(client.floods == 0);
  CHECK(client.transports_lost == 0);

  // From another thread: the copy is made on the loop, which keeps running meanwhile (an
  // ACK or a keepalive PING may go out in between: the counters only grow).
  ConnectionSnapshot remote;
  engine::LoopStats loop_stats;
  std::atomic<bool> taken{false};
  std::thread taker([&] {
    remote = take_snapshot(*fixture.client);
    loop_stats = loop->stats_snapshot();
    taken = true;
  });
  REQUIRE(loop->run_until([&] { return taken.load(); }, 5 * second_ns));
  taker.join();
  CHECK(remote.bytes_sent >= client.bytes_sent);
  CHECK(remote.frames_sent >= client.frames_sent);
  CHECK(remote.streams_opened_local == client.streams_opened_local);
  CHECK(loop_stats.iterations > 0);
  CHECK(loop_stats.tasks_run > 0);  // run_sync's posts ran on the loop (a busy loop needs no wake-up)

  LinkTotals totals;
  totals.add(client);
  totals.add(server);
  CHECK(totals.connections == 2);
  CHECK(totals.connections_connected == 2);
  CHECK(totals.bytes_sent == client.bytes_sent + server.bytes_sent);
  LinkTotals twice;
  twice.add(totals);
  twice.add(totals);
  CHECK(twice.streams_opened_remote == 2 * calls);
  CHECK(!client.call_latency.has_value());  // not asked for: no histogram, no clock reads
}

// Proves the library's call-latency histogram: a connection that records it counts every
// successful call once, with latencies no shorter than the loop took to answer nothing and
// no longer than the whole run, and sums merge them.
TEST_CASE("snapshot: a connection recording call latency counts each successful call") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  ConnectionOptions options;
  options.record_call_latency = true;
  Fixture fixture(*loop, options);
  const std::vector<std::byte> request(request_bytes, std::byte{7});
  int answered = 0;
  const uint64_t started = Loop::clock_ns();
  for (int i = 0; i < calls; i++) {
    call(*fixture.client, echo_unary, request, 0, [&answered](const CallResult&) { answered++; });
  }
  // One that fails (no such handler) is not a latency of a call that worked.
  call(*fixture.client, 999, request, 0, [&answered](const CallResult& r) {
    CHECK(r.error == MuxError::unknown_handler);
    answered++;
  });
  REQUIRE(loop->run_until([&] { return answered == calls + 1; }, 5 * second_ns));
  const uint64_t elapsed = Loop::clock_ns() - started;
  const ConnectionSnapshot client = take_snapshot(*fixture.client);
  REQUIRE(client.call_latency.has_value());
  CHECK(client.call_latency->count() == static_cast<uint64_t>(calls));
  CHECK(client.call_latency->min() > 0);
  CHECK(client.call_latency->max() <= elapsed);
  CHECK(!fixture.server->snapshot().call_latency.has_value());  // the server made no calls
  LinkTotals totals;
  totals.add(client);
  totals.add(client);
  REQUIRE(totals.call_latency.has_value());
  CHECK(totals.call_latency->count() == 2 * static_cast<uint64_t>(calls));
}

TEST_CASE("snapshot: a writer cut short by the peer's window counts a flow-control stall") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Quiet observer;  // before the fixture: it hears on_stream_finished when the fixture closes
  Fixture fixture(*loop);
  auto opened = fixture.client->open(holding_stream, 0, {}, false, observer);
  REQUIRE(opened.ok());
  // More than the initial stream window: the rest waits for credit the holder never gives.
  const std::vector<std::byte> bulk(2 * limits::stream_window_bytes_initial, std::byte{1});
  auto taken = fixture.client->write(opened.value(), bulk, false);
  REQUIRE(taken.ok());
  CHECK(taken.value() < bulk.size());
  const ConnectionSnapshot stalled = fixture.client->snapshot();
  CHECK(stalled.flow_control_stalls >= 1);
  CHECK(stalled.streams_open == 1);
  fixture.client->reset(opened.value(), MuxError::cancelled);
  REQUIRE(loop->run_until([&] { return fixture.client->session().streams_open() == 0; }, 5 * second_ns));
}
