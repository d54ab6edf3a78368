// The resource model's bounds (wire/RESOURCES.md), over real loopback connections: stream
// deadlines on both sides, a saturated deadline budget, the close timeout of a stopped
// stream, the unary request limit and the RPC buffer budget, large responses held without
// a copy, the call response limit, and the acceptor's cap on sockets waiting for HELLO.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ringmux/engine/loop.h"
#include "ringmux/mux/link/acceptor.h"
#include "ringmux/mux/link/connection.h"
#include "tests/mux/support.h"
#include "tests/support.h"

using namespace ringmux;
using namespace ringmux::mux;
using namespace ringmux::mux::loopback;

namespace {

constexpr uint32_t idle_stream = 20;    // a server stream that never writes, never ends
constexpr uint32_t limited_unary = 21;  // answers with its request's size, 64 KiB limit
constexpr uint32_t held_unary = 22;     // answers with a shared 4 MiB block, no copy
constexpr uint32_t copied_unary = 23;   // answers with a 4 MiB block, copied
constexpr uint32_t deadline_probe = 24;  // records the deadline a stream arrived with

// How a stream ended; kept apart from its observer, which a server's connection deletes.
struct Outcome {
  bool finished = false;
  MuxError error = MuxError::none;
  std::string message;
};

// A stream observer that records how its stream ended into `outcome`.
struct Ends final : StreamObserver {
  explicit Ends(Outcome& outcome_ref) : outcome(outcome_ref) {}
  Outcome& outcome;
  void on_stream_message(std::string_view text) noexcept override { outcome.message = std::string(text); }
  void on_stream_data(std::span<const std::byte>, bool) noexcept override {}
  void on_stream_finished(MuxError e) noexcept override {
    outcome.finished = true;
    outcome.error = e;
  }
};

struct BoundsServer : Server {
  BoundsServer(Loop& loop_ref, ConnectionOptions options_ref) : Server(loop_ref, options_ref) {
    registry.add_stream(idle_stream, [this](const StreamStart&) {
      server_ends.push_back(std::make_unique<Outcome>());
      return new Ends(*server_ends.back());
    });
    registry.add_stream(deadline_probe, [this](const StreamStart& start) {
      probed_deadline_ns = start.deadline_ns;
      return new Ends(probe_outcome);
    });
    UnaryLimits small;
    small.request_bytes_max = 64 * 1024;
    registry.add_unary(
        limited_unary,
        [](std::span<const std::byte> request, std::shared_ptr<Responder> responder) {
          const std::string size = std::to_string(request.size());
          responder->reply(std::as_bytes(std::span(size)));
        },
        small);
    registry.add_unary(held_unary, [this](std::span<const std::byte>, std::shared_ptr<Responder> responder) {
      responder->reply(*block, block);
    });
    registry.add_unary(copied_unary, [this](std::span<const std::byte>, std::shared_ptr<Responder> responder) {
      responder->reply(*block);
    });
  }
  std::shared_ptr<std::vector<std::byte>> block = std::make_shared<std::vector<std::byte>>(4 << 20, std::byte{7});
  std::vector<std::unique_ptr<Outcome>> server_ends;  // of idle streams, in opening order
  Outcome probe_outcome;
  uint64_t probed_deadline_ns = 0;
};

struct CallOutcome {
  bool done = false;
  MuxError error = MuxError::none;
  std::string message;
  std::size_t response_bytes = 0;
};

StreamId call(Connection& connection, uint32_t handler, std::span<const std::byte> request, uint64_t deadline_ns,
              CallOutcome& outcome) {
  return call(connection, handler, request, deadline_ns, [&outcome](const CallResult& result) {
    outcome.done = true;
    outcome.error = result.error;
    outcome.message = result.message;
    outcome.response_bytes = result.response.size();
  });
}

// The echo call every case ends with: the connection still serves.
void still_serves(Loop& loop, Connection& connection) {
  CallOutcome echo;
  const auto request = bytes_of("still here");
  call(connection, echo_unary, request, 0, echo);
  REQUIRE(loop.run_until([&] { return echo.done; }, 5 * second_ns));
  CHECK(echo.error == MuxError::none);
  CHECK(echo.response_bytes == request.size());
}

}  // namespace

TEST_CASE("bounds: a stream's deadline ends it on both sides") {
  auto loop_owner = test::make_test_loop();
  if (!loop_owner) return;
  Loop& loop = *loop_owner;
  BoundsServer server(loop, {});
  Client client(loop, server.port(), {});
  Outcome mine;
  Ends observer(mine);
  const uint64_t start = Loop::clock_ns();
  auto id = client.connection->open(idle_stream, start + 100 * ms_ns, {}, false, observer);
  REQUIRE(id.ok());
  REQUIRE(loop.run_until([&] { return mine.finished && !server.server_ends.empty() && server.server_ends[0]->finished; },
                         10 * second_ns));
  CHECK(mine.error == MuxError::deadline_exceeded);
  CHECK(server.server_ends[0]->error == MuxError::deadline_exceeded);
  CHECK(Loop::clock_ns() - start >= 100 * ms_ns);
  still_serves(loop, *client.connection);
  server.shut_down();
}

TEST_CASE("bounds: a deadline budget of 2^64-1 ns is far away, not already passed") {
  auto loop_owner = test::make_test_loop();
  if (!loop_owner) return;
  Loop& loop = *loop_owner;
  BoundsServer server(loop, {});
  Client client(loop, server.port(), {});
  REQUIRE(loop.run_until([&] { return client.connection->connected(); }, 5 * second_ns));
  // The raw session sends the budget as given (Connection::open derives it from a deadline).
  auto id = client.connection->session().open(deadline_probe, UINT64_MAX, {}, false);
  REQUIRE(id.ok());
  CallOutcome echo;
  const auto request = bytes_of("after");
  call(*client.connection, echo_unary, request, 0, echo);  // flushes the OPEN, then answers behind it
  REQUIRE(loop.run_until([&] { return echo.done; }, 5 * second_ns));
  CHECK(server.probed_deadline_ns == UINT64_MAX);  // saturated, not wrapped into the past
  client.connection->reset(id.value(), MuxError::cancelled);
  server.shut_down();
}

TEST_CASE("bounds: a stream the peer stopped is reset when its writer does nothing") {
  auto loop_owner = test::make_test_loop();
  if (!loop_owner) return;
  Loop& loop = *loop_owner;
  ConnectionOptions options;
  options.stopped_stream_close_timeout_ns = 50 * ms_ns;
  BoundsServer server(loop, options);
  Client client(loop, server.port(), {});
  Outcome mine;
  Ends observer(mine);
  auto id = client.connection->open(idle_stream, 0, {}, false, observer);
  REQUIRE(id.ok());
  REQUIRE(loop.run_until([&] { return !server.server_ends.empty(); }, 5 * second_ns));
  client.connection->stop(id.value());  // the server's writer never ends nor resets
  REQUIRE(loop.run_until([&] { return mine.finished; }, 10 * second_ns));
  CHECK(mine.error == MuxError::stream_stopped);
  CHECK(mine.message.find("stopped_stream_close_timeout") != std::string::npos);
  CHECK(server.server_ends[0]->finished);
  still_serves(loop, *client.connection);
  server.shut_down();
}

TEST_CASE("bounds: a unary request over its handler's limit fails with resource_exhausted") {
  auto loop_owner = test::make_test_loop();
  if (!loop_owner) return;
  Loop& loop = *loop_owner;
  BoundsServer server(loop, {});
  Client client(loop, server.port(), {});
  const std::vector<std::byte> fits(64 * 1024, std::byte{1});
  const std::vector<std::byte> over(64 * 1024 + 1, std::byte{1});
  CallOutcome ok;
  CallOutcome refused;
  call(*client.connection, limited_unary, fits, 0, ok);
  call(*client.connection, limited_unary, over, 0, refused);
  REQUIRE(loop.run_until([&] { return ok.done && refused.done; }, 5 * second_ns));
  CHECK(ok.error == MuxError::none);
  CHECK(refused.error == MuxError::resource_exhausted);
  CHECK(refused.message.find("65536") != std::string::npos);
  CHECK(refused.message.find("request_bytes_max") != std::string::npos);
  CHECK(server.connections[0]->rpc_bytes_buffered() == 0);
  still_serves(loop, *client.connection);
  server.shut_down();
}

TEST_CASE("bounds: requests being gathered share the connection's RPC budget") {
  auto loop_owner = test::make_test_loop();
  if (!loop_owner) return;
  Loop& loop = *loop_owner;
  ConnectionOptions options;
  options.rpc_bytes_max = 48 * 1024;
  BoundsServer server(loop, options);
  Client client(loop, server.port(), {});
  REQUIRE(loop.run_until([&] { return client.connection->connected(); }, 5 * second_ns));
  // Two open streams send 32 KiB each of a request that has not ended: the second passes
  // the 48 KiB budget.
  Outcome first;
  Outcome second;
  Ends first_observer(first);
  Ends second_observer(second);
  const std::vector<std::byte> part(32 * 1024, std::byte{2});
  auto a = client.connection->open(limited_unary, 0, part, false, first_observer);
  auto b = client.connection->open(limited_unary, 0, part, false, second_observer);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  REQUIRE(loop.run_until([&] { return second.finished; }, 5 * second_ns));
  CHECK(second.error == MuxError::resource_exhausted);
  CHECK(second.message.find("connection_rpc_bytes_max") != std::string::npos);
  CHECK(!first.finished);
  CHECK(server.connections[0]->rpc_bytes_buffered() == 32 * 1024);
  client.connection->reset(a.value(), MuxError::cancelled);
  REQUIRE(loop.run_until([&] { return server.connections[0]->rpc_bytes_buffered() == 0; }, 5 * second_ns));
  still_serves(loop, *client.connection);
  server.shut_down();
}

TEST_CASE("bounds: a large response is held by reference; a copied one is charged") {
  auto loop_owner = test::make_test_loop();
  if (!loop_owner) return;
  Loop& loop = *loop_owner;
  ConnectionOptions options;
  options.rpc_bytes_max = 1024 * 1024;  // below the 4 MiB block
  BoundsServer server(loop, options);
  Client client(loop, server.port(), {});
  CallOutcome held;
  call(*client.connection, held_unary, {}, 0, held);
  REQUIRE(loop.run_until([&] { return held.done; }, 10 * second_ns));
  CHECK(held.error == MuxError::none);
  CHECK(held.response_bytes == server.block->size());
  CHECK(server.block.use_count() == 1);  // let go once sent
  CallOutcome copied;
  call(*client.connection, copied_unary, {}, 0, copied);
  REQUIRE(loop.run_until([&] { return copied.done; }, 10 * second_ns));
  CHECK(copied.error == MuxError::resource_exhausted);  // its rest would pass the budget
  CHECK(copied.message.find("response not sent") != std::string::npos);
  CHECK(server.connections[0]->rpc_bytes_buffered() == 0);
  still_serves(loop, *client.connection);
  server.shut_down();
}

TEST_CASE("bounds: a caller gathers at most call_response_bytes_max of a response") {
  auto loop_owner = test::make_test_loop();
  if (!loop_owner) return;
  Loop& loop = *loop_owner;
  BoundsServer server(loop, {});
  ConnectionOptions options;
  options.call_response_bytes_max = 1024 * 1024;
  Client client(loop, server.port(), options);
  CallOutcome big;
  call(*client.connection, held_unary, {}, 0, big);
  REQUIRE(loop.run_until([&] { return big.done; }, 10 * second_ns));
  CHECK(big.error == MuxError::resource_exhausted);
  still_serves(loop, *client.connection);
  server.shut_down();
}

TEST_CASE("bounds: sockets waiting for their HELLO are capped per acceptor") {
  auto loop_owner = test::make_test_loop();
  if (!loop_owner) return;
  Loop& loop = *loop_owner;
  struct Quiet final : engine::ListenerHandler {
    Acceptor* acceptor = nullptr;
    void on_accept(int fd) noexcept override { acceptor->accept(fd); }
    void on_accept_error(engine::IoError) noexcept override {}
    void on_listener_closed() noexcept override { closed = true; }
    bool closed = false;
  } handler;
  AcceptorOptions options;
  options.pending_hellos_max = 3;
  Acceptor acceptor(loop, [](int) -> Connection* { return nullptr; }, options);
  handler.acceptor = &acceptor;
  engine::Listener listener(loop, handler);
  REQUIRE(listener.listen(engine::Address::loopback_v4(0)).ok());
  std::vector<int> fds;
  for (int i = 0; i < 5; i++) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(listener.address().port());
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)) == 0);
    fds.push_back(fd);
  }
  REQUIRE(loop.run_until([&] { return acceptor.stats().connections == 5; }, 5 * second_ns));
  CHECK(acceptor.stats().pending_refused == 2);
  for (const int fd : fds) ::close(fd);
  acceptor.close();
  listener.close();
  CHECK(loop.run_until([&] { return acceptor.idle() && handler.closed; }, 5 * second_ns));
}
