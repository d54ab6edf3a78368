// Streams between cluster members (Manager::open_stream): a stream waits for the session as
// a call does, then runs both ways; an unknown peer, a peer that never comes up and a plain
// server that is no member each fail with their own cause.
#include <doctest/doctest.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ringmux/cluster/manager.h"
#include "tests/mux/support.h"
#include "tests/support.h"

using namespace ringmux;
using namespace ringmux::mux;
using namespace ringmux::cluster;
using namespace ringmux::mux::loopback;

namespace {

constexpr uint32_t echo_stream_handler = 60;  // sends back every byte, ends when the peer ends

// The server half of the echo stream: what arrives goes back on the same stream.
class EchoStream final : public StreamObserver {
 public:
  explicit EchoStream(const StreamStart& start) : connection_(*start.connection), id_(start.id) {}
  void on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept override {
    auto written = connection_.write(id_, bytes, end_stream);
    // The test's messages fit the windows: an echo that cannot go whole is a failure.
    if (!written || written.value() != bytes.size()) connection_.reset(id_, MuxError::limit_exceeded);
    connection_.consume(id_, bytes.size());
  }
  void on_stream_finished(MuxError) noexcept override {}

 private:
  Connection& connection_;
  StreamId id_;
};

// The client half: gathers what comes back.
struct Collector final : StreamObserver {
  void on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept override {
    received.insert(received.end(), bytes.begin(), bytes.end());
    ended |= end_stream;
    if (connection != nullptr && !bytes.empty()) connection->consume(id, bytes.size());
  }
  void on_stream_finished(MuxError error) noexcept override { finished = error; }
  Connection* connection = nullptr;  // set once open
  StreamId id = 0;
  std::vector<std::byte> received;
  bool ended = false;
  std::optional<MuxError> finished;
};

std::unique_ptr<Manager> member(Loop& loop, const ManagerOptions& options = {}) {
  auto manager = std::make_unique<Manager>(loop, engine::Address::loopback_v4(0), options);
  manager->registry().add_stream(echo_stream_handler, [](const StreamStart& start) { return new EchoStream(start); });
  return manager;
}

void close_managers(Loop& loop, std::initializer_list<Manager*> managers) {
  for (Manager* manager : managers) manager->close();
  CHECK(loop.run_until(
      [&] {
        for (Manager* manager : managers) {
          if (!manager->closed()) return false;
        }
        return true;
      },
      5 * second_ns));
}

}  // namespace

// Proves a cluster stream: opened before the pair's session exists, it waits for it, then
// carries 100 messages to the peer's handler and their echoes back, in order, and ends
// cleanly on both sides.
TEST_CASE("cluster stream: opened before the session is up, it waits, then runs both ways") {
  auto loop = ringmux::test::make_test_loop();
  if (!loop) return;
  auto a = member(*loop);
  auto b = member(*loop);
  REQUIRE(a->start().ok());
  REQUIRE(b->start().ok());
  a->add_peer(b->self());
  b->add_peer(a->self());
  REQUIRE(a->session(b->self()) == nullptr);  // the dial completes on a later turn

  Collector collector;
  std::optional<StreamOpenResult> opened;
  const std::vector<std::byte> hello = bytes_of("hello");
  a->open_stream(b->self(), echo_stream_handler, Loop::clock_ns() + 10 * second_ns, hello, false, collector,
                 [&](const StreamOpenResult& result) { opened = result; });
  CHECK(!opened);  // never inside the call
  REQUIRE(loop->run_until([&] { return opened.has_value(); }, 10 * second_ns));
  REQUIRE(opened->error == MuxError::none);
  REQUIRE(opened->stream.connection == a->session(b->self()));
  collector.connection = opened->stream.connection;
  collector.id = opened->stream.id;

  std::vector<std::byte> sent = hello;
  for (int i = 0; i < 100; i++) {
    std::vector<std::byte> message(64, static_cast<std::byte>(i));
    auto written = collector.connection->write(collector.id, message, i == 99);
    REQUIRE(written.ok());
    REQUIRE(written.value() == message.size());
    sent.insert(sent.end(), message.begin(), message.end());
  }
  REQUIRE(loop->run_until([&] { return collector.finished.has_value(); }, 10 * second_ns));
  CHECK(*collector.finished == MuxError::none);
  CHECK(collector.ended);
  CHECK(collector.received == sent);
  close_managers(*loop, {a.get(), b.get()});
}

// Proves the failures of a cluster stream open: an unknown peer fails with unknown_handler;
// a peer whose session never comes up fails at the deadline with a message naming it; the
// observer hears nothing in either case.
TEST_CASE("cluster stream: an unknown peer and a peer that never comes up fail with their cause") {
  auto loop = ringmux::test::make_test_loop();
  if (!loop) return;
  auto a = member(*loop);
  REQUIRE(a->start().ok());
  // A peer we dial, where nothing listens: connects are refused until the deadline.
  engine::Address absent{};
  for (uint16_t port = 1; port < 1000; port++) {
    if (Manager::dials(a->self(), engine::Address::loopback_v4(port))) {
      absent = engine::Address::loopback_v4(port);
      break;
    }
  }
  REQUIRE(absent.length != 0);
  a->add_peer(absent);
  Collector unknown_observer;
  Collector absent_observer;
  std::optional<StreamOpenResult> unknown;
  std::optional<StreamOpenResult> timed_out;
  a->open_stream(engine::Address::loopback_v4(9), echo_stream_handler, 0, {}, false, unknown_observer,
                 [&](const StreamOpenResult& result) { unknown = result; });
  a->open_stream(absent, echo_stream_handler, Loop::clock_ns() + 300 * ms_ns, {}, false, absent_observer,
                 [&](const StreamOpenResult& result) { timed_out = result; });
  REQUIRE(loop->run_until([&] { return unknown && timed_out; }, 10 * second_ns));
  CHECK(unknown->error == MuxError::unknown_handler);
  CHECK(timed_out->error == MuxError::deadline_exceeded);
  CHECK(timed_out->message.find(absent.to_string()) != std::string::npos);
  CHECK(timed_out->stream.connection == nullptr);
  CHECK(!unknown_observer.finished);
  CHECK(!absent_observer.finished);
  close_managers(*loop, {a.get()});
}

// Proves that a client of the cluster pointed at a plain server (no member: it does not
// serve the identify call) hears the real cause, unknown_handler from the identify call,
// for its waiting call and stream, long before their deadline (deadline_exceeded would
// take 60 s; the test waits at most 20).
TEST_CASE("cluster: a client reaching a plain server hears unknown_handler, not deadline_exceeded") {
  auto loop = ringmux::test::make_test_loop();
  if (!loop) return;
  Server server(*loop, ConnectionOptions{});
  const engine::Address address = engine::Address::loopback_v4(server.listener.address().port());
  ManagerOptions options;
  options.client_only = true;
  auto client = std::make_unique<Manager>(*loop, engine::Address::loopback_v4(0), options);
  client->add_peer(address);
  std::optional<CallResult> call;
  std::optional<StreamOpenResult> stream;
  Collector observer;
  const uint64_t deadline = Loop::clock_ns() + 60 * second_ns;
  client->call(address, echo_unary, bytes_of("ping"), deadline, [&](const CallResult& result) {
    call = result;
    call->response = {};  // a span of the receive buffer: not kept
  });
  client->open_stream(address, echo_stream_handler, deadline, {}, false, observer,
                      [&](const StreamOpenResult& result) { stream = result; });
  REQUIRE(loop->run_until([&] { return call && stream; }, 20 * second_ns));
  CHECK(call->error == MuxError::unknown_handler);
  CHECK(call->message.find("identify") != std::string::npos);
  CHECK(stream->error == MuxError::unknown_handler);
  CHECK(!observer.finished);
  close_managers(*loop, {client.get()});
  server.shut_down();
}
