// The log hook (base/log.h): with a sink installed, a refused connect, a peer's reset and a
// peer that breaks the protocol each reach it with their fields (the raw errno, the
// connection's id); with none installed, the same events format nothing.
#include "ringmux/base/log.h"

#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ringmux/engine/socket.h"
#include "ringmux/mux/link/acceptor.h"
#include "ringmux/mux/link/connection.h"
#include "tests/support.h"

using namespace ringmux;
using namespace ringmux::mux;
using engine::Loop;

namespace {

constexpr uint64_t second_ns = 1'000'000'000;

struct Recorded {
  LogSeverity severity;
  LogSubsystem subsystem;
  std::string message;
  int errno_value;
  uint64_t connection_id;
  uint64_t stream_id;
};

// Keeps every event (the test's own sink; it allocates, the library's sites do not care).
struct Recorder {
  std::mutex mutex;
  std::vector<Recorded> events;
  LogSink sink{[](void* context, const LogEvent& event) noexcept {
                 auto& self = *static_cast<Recorder*>(context);
                 std::lock_guard lock(self.mutex);
                 self.events.push_back({event.severity, event.subsystem, std::string(event.message), event.errno_value,
                                        event.connection_id, event.stream_id});
               },
               this};
  Recorder() { set_log_sink(&sink); }
  ~Recorder() { set_log_sink(nullptr); }
  // The first event of `subsystem` whose message contains `text`, or nullptr.
  const Recorded* find(LogSubsystem subsystem, const std::string& text) {
    std::lock_guard lock(mutex);
    for (const Recorded& event : events) {
      if (event.subsystem == subsystem && event.message.find(text) != std::string::npos) return &event;
    }
    return nullptr;
  }
};

// A listener whose every accepted socket becomes an accepting Connection, a connector, and
// raw blocking client sockets to misbehave with.
struct Fixture final : engine::ListenerHandler, engine::ConnectHandler, ConnectionObserver {
  explicit Fixture(Loop& loop_ref) : loop(loop_ref), listener(loop_ref, *this), connector(loop_ref, *this) {
    REQUIRE(listener.listen(engine::Address::loopback_v4(0)).ok());
  }
  ~Fixture() {
    for (auto& server : servers) {
      if (!server->closed()) server->close();
    }
    listener.close();
    loop.run_until([&] { return closed == servers.size() && listener_closed; }, 5 * second_ns);
  }
  // A connected blocking socket to the listener (the kernel completes it from the backlog).
  int raw_client() const {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    const engine::Address& address = listener.address();
    REQUIRE(::connect(fd, address.sockaddr_ptr(), address.length) == 0);
    return fd;
  }
  void on_accept(int fd) noexcept override {
    servers.push_back(std::make_unique<Connection>(loop, fd, false, nullptr, *this));
    servers.back()->start();
  }
  void on_accept_error(engine::IoError) noexcept override {}
  void on_listener_closed() noexcept override { listener_closed = true; }
  void on_connect(Result<int, engine::IoError> fd) noexcept override {
    connect_error = fd.ok() ? engine::IoError::none : fd.error();
    if (fd.ok()) ::close(fd.value());
    connect_done = true;
  }
  void on_connection_closed(Connection&, MuxError error, engine::IoError) noexcept override {
    closed++;
    last_close = error;
  }

  Loop& loop;
  engine::Listener listener;
  engine::Connector connector;
  std::vector<std::unique_ptr<Connection>> servers;
  std::size_t closed = 0;
  MuxError last_close = MuxError::none;
  bool listener_closed = false;
  bool connect_done = false;
  engine::IoError connect_error = engine::IoError::none;
};

// A port nobody listens on: bound, never listened to, so a connect is refused.
engine::Address refusing_address(int& fd) {
  fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  engine::Address address = engine::Address::loopback_v4(0);
  REQUIRE(::bind(fd, address.sockaddr_ptr(), address.length) == 0);
  address.length = sizeof(address.storage);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address.storage), &address.length) == 0);
  return address;
}

// The events the test causes: a refused connect, a peer's reset, a peer's garbage.
void cause_events(Fixture& fixture) {
  int bound = -1;
  fixture.connector.connect(refusing_address(bound));
  REQUIRE(fixture.loop.run_until([&] { return fixture.connect_done; }, 5 * second_ns));
  ::close(bound);
  CHECK(fixture.connect_error == engine::IoError::refused);

  // Reset: SO_LINGER 0 makes close() send RST.
  const int resetter = fixture.raw_client();
  REQUIRE(fixture.loop.run_until([&] { return fixture.servers.size() == 1; }, 5 * second_ns));
  const linger abort_on_close{1, 0};
  REQUIRE(::setsockopt(resetter, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof(abort_on_close)) == 0);
  ::close(resetter);
  REQUIRE(fixture.loop.run_until([&] { return fixture.closed == 1; }, 5 * second_ns));
  CHECK(fixture.last_close == MuxError::connection_lost);

  // Garbage instead of a HELLO: a protocol violation.
  const int talker = fixture.raw_client();
  REQUIRE(fixture.loop.run_until([&] { return fixture.servers.size() == 2; }, 5 * second_ns));
  const std::string garbage(64, 'x');
  REQUIRE(::write(talker, garbage.data(), garbage.size()) == static_cast<ssize_t>(garbage.size()));
  REQUIRE(fixture.loop.run_until([&] { return fixture.closed == 2; }, 5 * second_ns));
  CHECK(fixture.last_close == MuxError::protocol_violation);
  ::close(talker);
}

}  // namespace

TEST_CASE("log: a refused connect, a peer's reset and a protocol error reach the sink with their fields") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Recorder recorder;
  {
    Fixture fixture(*loop);
    cause_events(fixture);
    const uint64_t reset_id = fixture.servers[0]->id();
    const uint64_t garbage_id = fixture.servers[1]->id();
    CHECK(reset_id != 0);
    CHECK(garbage_id != reset_id);

    const Recorded* refused = recorder.find(LogSubsystem::engine, "connect on fd");
    REQUIRE(refused != nullptr);
    CHECK(refused->errno_value == ECONNREFUSED);
    CHECK(refused->severity == LogSeverity::debug);
    CHECK(refused->connection_id == 0);

    const Recorded* reset = recorder.find(LogSubsystem::engine, "recv on fd");
    REQUIRE(reset != nullptr);
    CHECK(reset->errno_value == ECONNRESET);
    const Recorded* lost = recorder.find(LogSubsystem::link, "connection reset by peer");
    REQUIRE(lost != nullptr);
    CHECK(lost->connection_id == reset_id);
    CHECK(lost->stream_id == 0);
    CHECK(lost->severity == LogSeverity::warning);
    MESSAGE("reset: " << lost->message);

    const Recorded* violation =
        recorder.find(LogSubsystem::link, std::string("session ended: ") + describe(MuxError::protocol_violation));
    REQUIRE(violation != nullptr);
    CHECK(violation->connection_id == garbage_id);
    CHECK(violation->errno_value == 0);
    MESSAGE("protocol error: " << violation->message);
  }
}

TEST_CASE("log: without a sink the same events format nothing") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  REQUIRE(!log_enabled());
  const uint64_t formats_before = log_formats();
  {
    Fixture fixture(*loop);
    cause_events(fixture);
  }
  CHECK(log_formats() == formats_before);
}

TEST_CASE("log: a long message is cut to the limit, and removing the sink stops delivery") {
  Recorder recorder;
  const std::string long_text(2 * limits::log_message_bytes_max, 'y');
  RM_LOG(LogSeverity::error, LogSubsystem::rpc, 7, 9, EIO, "%s", long_text.c_str());
  REQUIRE(recorder.events.size() == 1);
  CHECK(recorder.events[0].message.size() == limits::log_message_bytes_max - 1);
  CHECK(recorder.events[0].connection_id == 7);
  CHECK(recorder.events[0].stream_id == 9);
  CHECK(recorder.events[0].errno_value == EIO);
  const LogSink* removed = set_log_sink(nullptr);
  CHECK(removed == &recorder.sink);
  RM_LOG(LogSeverity::error, LogSubsystem::rpc, 7, 9, EIO, "%s", "not delivered");
  CHECK(recorder.events.size() == 1);
}

// The acceptor's refusals reach the sink too: a socket that sends a few bytes that are no
// HELLO and closes its side.
TEST_CASE("log: the acceptor reports a connection without a valid HELLO") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Recorder recorder;
  struct Accepting final : engine::ListenerHandler {
    explicit Accepting(Loop& loop) : acceptor(loop, [](int) -> Connection* { return nullptr; }) {}
    void on_accept(int fd) noexcept override {
      accepted++;
      acceptor.accept(fd);
    }
    void on_accept_error(engine::IoError) noexcept override {}
    void on_listener_closed() noexcept override { closed = true; }
    Acceptor acceptor;
    int accepted = 0;
    bool closed = false;
  } accepting(*loop);
  engine::Listener listener(*loop, accepting);
  REQUIRE(listener.listen(engine::Address::loopback_v4(0)).ok());
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  REQUIRE(::connect(fd, listener.address().sockaddr_ptr(), listener.address().length) == 0);
  const std::string garbage(64, 'x');
  REQUIRE(::write(fd, garbage.data(), garbage.size()) == static_cast<ssize_t>(garbage.size()));
  ::shutdown(fd, SHUT_WR);  // and no more: the acceptor's read of a HELLO's bytes ends early
  REQUIRE(loop->run_until([&] { return accepting.accepted == 1 && accepting.acceptor.idle(); }, 5 * second_ns));
  CHECK(accepting.acceptor.stats().failed == 1);
  const Recorded* event = recorder.find(LogSubsystem::link, "no valid HELLO");
  REQUIRE(event != nullptr);
  CHECK(event->severity == LogSeverity::info);
  ::close(fd);
  accepting.acceptor.close();
  listener.close();
  REQUIRE(loop->run_until([&] { return accepting.closed && accepting.acceptor.idle(); }, 5 * second_ns));
}
