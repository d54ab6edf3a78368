// Sockets over 127.0.0.1: multishot accept and receive, single-flight send with short
// sends resumed, -ENOBUFS recovery, errors, connect timeouts, and orderly teardown.
#include "ringmux/engine/socket.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>

#include <cstring>
#include <functional>
#include <optional>
#include <random>
#include <vector>

#include "ringmux/engine/loop.h"
#include "tests/support.h"
#include "tools/echo_server.h"

using namespace ringmux;
using namespace ringmux::engine;

namespace {

constexpr uint64_t second_ns = 1'000'000'000;

// A client connection whose behaviour each test plugs in.
struct Client final : ConnectHandler, SocketHandler {
  explicit Client(Loop& loop) : loop_(loop), connector(loop, *this) {}

  Loop& loop_;
  Connector connector;
  std::unique_ptr<Socket> socket;
  std::optional<IoError> connect_error;
  std::optional<IoError> error;
  bool connected = false;
  int closed_calls = 0;
  int callbacks_after_close = 0;
  int fd_at_close = -1;
  bool fd_was_closed = false;
  std::function<void(Client&)> when_connected;
  std::function<void(std::span<const std::byte>)> when_received;
  std::function<void()> when_sent;

  void on_connect(Result<int, IoError> result) noexcept override {
    if (!result) {
      connect_error = result.error();
      return;
    }
    connected = true;
    socket = std::make_unique<Socket>(loop_, result.value(), *this);
    socket->start();
    if (when_connected) when_connected(*this);
  }
  void on_recv(std::span<const std::byte> bytes) noexcept override {
    if (closed_calls > 0) callbacks_after_close++;
    if (when_received) when_received(bytes);
  }
  void on_send_complete() noexcept override {
    if (closed_calls > 0) callbacks_after_close++;
    if (when_sent) when_sent();
  }
  void on_error(IoError e) noexcept override {
    if (closed_calls > 0) callbacks_after_close++;
    if (!error) error = e;
    socket->close();
  }
  void on_closed() noexcept override {
    closed_calls++;
    fd_at_close = socket->fd();
    fd_was_closed = true;
  }
};

// Closes the server and every client and runs the loop until all of it is done.
void shut_down(Loop& loop, tools::EchoServer& server, std::vector<std::unique_ptr<Client>>& clients) {
  for (auto& client : clients) {
    if (client->socket) client->socket->close();
  }
  server.close();
  const bool done = loop.run_until(
      [&] {
        if (!server.closed()) return false;
        for (auto& client : clients) {
          if (client->socket && client->socket->state() != Socket::State::closed) return false;
        }
        return true;
      },
      10 * second_ns);
  REQUIRE(done);
  CHECK(loop.ops_in_flight() == 1);  // only the loop's own eventfd read is left
}

// A deterministic pseudo-random byte stream: a block of random bytes read cyclically.
class Pattern {
 public:
  explicit Pattern(uint64_t seed) : block_(1 << 22) {
    std::mt19937_64 rng(seed);
    for (auto& byte : block_) byte = static_cast<std::byte>(rng());
  }
  // The `length` bytes at stream offset `offset`, contiguous when they do not wrap.
  std::span<const std::byte> at(uint64_t offset, std::size_t length) const {
    const std::size_t start = offset % block_.size();
    return {block_.data() + start, std::min(length, block_.size() - start)};
  }

 private:
  std::vector<std::byte> block_;
};

// Streams `total` bytes through `client` in random-sized sends and hashes both directions.
struct EchoCheck {
  EchoCheck(Client& client, const Pattern& pattern, uint64_t total, uint64_t seed, std::size_t write_bytes_max)
      : client_(client), pattern_(pattern), total_(total), rng_(seed), write_bytes_max_(write_bytes_max) {
    XXH3_64bits_reset(&sent_hash_);
    XXH3_64bits_reset(&received_hash_);
    client.when_connected = [this](Client&) { send_next(); };
    client.when_sent = [this] { send_next(); };
    client.when_received = [this](std::span<const std::byte> bytes) {
      XXH3_64bits_update(&received_hash_, bytes.data(), bytes.size());
      received_ += bytes.size();
    };
  }
  void send_next() {
    if (sent_ == total_) return;
    std::uniform_int_distribution<std::size_t> size(1, write_bytes_max_);
    const std::size_t want = std::min<uint64_t>(size(rng_), total_ - sent_);
    const auto chunk = pattern_.at(sent_, want);
    XXH3_64bits_update(&sent_hash_, chunk.data(), chunk.size());
    sent_ += chunk.size();
    client_.socket->send(chunk);
  }
  bool done() const { return received_ == total_ || client_.error.has_value(); }
  bool hashes_match() { return XXH3_64bits_digest(&sent_hash_) == XXH3_64bits_digest(&received_hash_); }

  Client& client_;
  const Pattern& pattern_;
  uint64_t total_;
  std::mt19937_64 rng_;
  std::size_t write_bytes_max_;
  uint64_t sent_ = 0;
  uint64_t received_ = 0;
  XXH3_state_t sent_hash_;
  XXH3_state_t received_hash_;
};

}  // namespace

// Proves the receive and send paths move every byte exactly once and in order: 1 GiB
// echoed in writes of random size (1 B to 256 KiB), compared by hash.
TEST_CASE("socket: 1 GiB echoed in random-sized writes arrives intact") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  const uint64_t seed = test::test_seed("socket 1 GiB echo");
  tools::EchoServer server(*loop);
  REQUIRE(server.listen(Address::loopback_v4(0)).ok());
  std::vector<std::unique_ptr<Client>> clients;
  clients.push_back(std::make_unique<Client>(*loop));
  const Pattern pattern(seed);
  EchoCheck check(*clients[0], pattern, uint64_t{1} << 30, seed, 256 * 1024);
  clients[0]->connector.connect(server.address());
  CHECK(loop->run_until([&] { return check.done(); }, 120 * second_ns));
  CHECK(!clients[0]->error.has_value());
  CHECK(check.received_ == check.total_);
  CHECK(check.hashes_match());
  CHECK(clients[0]->socket->bytes_sent() == uint64_t{1} << 30);
  shut_down(*loop, server, clients);
}

// Proves multishot accept and one loop carry 1000 simultaneous connections, each with its
// own bytes echoed back unmixed.
TEST_CASE("socket: 1000 concurrent connections each echo their own bytes") {
  rlimit files{};
  getrlimit(RLIMIT_NOFILE, &files);
  if (files.rlim_cur < 4096 && files.rlim_max >= 4096) {
    files.rlim_cur = 4096;
    setrlimit(RLIMIT_NOFILE, &files);
  }
  if (files.rlim_cur < 2100) {
    MESSAGE("skipped: RLIMIT_NOFILE too low for 1000 connections");
    return;
  }
  auto loop = test::make_test_loop();
  if (!loop) return;
  tools::EchoServer server(*loop);
  REQUIRE(server.listen(Address::loopback_v4(0)).ok());
  constexpr int connections = 1000;
  constexpr std::size_t message_bytes = 1024;
  std::vector<std::unique_ptr<Client>> clients;
  std::vector<std::vector<std::byte>> sent(connections), received(connections);
  for (int i = 0; i < connections; i++) {
    clients.push_back(std::make_unique<Client>(*loop));
    sent[i].resize(message_bytes);
    for (std::size_t b = 0; b < message_bytes; b++) sent[i][b] = static_cast<std::byte>((i * 7 + b) & 0xff);
    clients[i]->when_connected = [&, i](Client& c) { c.socket->send(sent[i]); };
    clients[i]->when_received = [&, i](std::span<const std::byte> bytes) {
      received[i].insert(received[i].end(), bytes.begin(), bytes.end());
    };
    clients[i]->connector.connect(server.address());
  }
  auto all_echoed = [&] {
    for (int i = 0; i < connections; i++) {
      if (received[i].size() < message_bytes && !clients[i]->error && !clients[i]->connect_error) return false;
    }
    return true;
  };
  CHECK(loop->run_until(all_echoed, 60 * second_ns));
  int intact = 0;
  for (int i = 0; i < connections; i++) intact += received[i] == sent[i] ? 1 : 0;
  CHECK(intact == connections);
  CHECK(server.connections_accepted() == connections);
  CHECK(server.connections_open() == connections);
  shut_down(*loop, server, clients);
}

// Proves -ENOBUFS is transient: with 4 receive buffers of 256 B shared by 16 sockets the
// ring runs dry again and again, and still no byte is lost or reordered.
TEST_CASE("socket: a tiny buffer ring forces -ENOBUFS and recovers with no byte lost") {
  LoopOptions options;
  options.recv_buffer_count = 4;
  options.recv_buffer_bytes = 256;
  auto loop = test::make_test_loop(options);
  if (!loop) return;
  const uint64_t seed = test::test_seed("socket tiny buffer ring");
  tools::EchoServer server(*loop);
  REQUIRE(server.listen(Address::loopback_v4(0)).ok());
  const Pattern pattern(seed);
  std::vector<std::unique_ptr<Client>> clients;
  std::vector<std::unique_ptr<EchoCheck>> checks;
  for (int i = 0; i < 8; i++) {
    clients.push_back(std::make_unique<Client>(*loop));
    checks.push_back(std::make_unique<EchoCheck>(*clients.back(), pattern, 512 * 1024, seed + i, 64 * 1024));
    clients.back()->connector.connect(server.address());
  }
  auto all_done = [&] {
    for (auto& check : checks) {
      if (!check->done()) return false;
    }
    return true;
  };
  CHECK(loop->run_until(all_done, 60 * second_ns));
  for (auto& check : checks) {
    CHECK(!check->client_.error.has_value());
    CHECK(check->received_ == check->total_);
    CHECK(check->hashes_match());
  }
  CHECK(loop->stats().recv_no_buffers > 0);
  shut_down(*loop, server, clients);
}

// Proves a reset in the middle of a large send ends it with a reset error (no SIGPIPE: the
// process would die) and never reports the send as complete.
TEST_CASE("socket: peer reset in the middle of a send fails it with reset") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  tools::EchoServer server(*loop);
  server.set_abort_after_bytes(64 * 1024);
  REQUIRE(server.listen(Address::loopback_v4(0)).ok());
  std::vector<std::unique_ptr<Client>> clients;
  clients.push_back(std::make_unique<Client>(*loop));
  Client& client = *clients[0];
  std::vector<std::byte> big(64u << 20, std::byte{1});
  bool send_completed = false;
  client.when_connected = [&](Client& c) { c.socket->send(big); };
  client.when_sent = [&] { send_completed = true; };
  client.connector.connect(server.address());
  CHECK(loop->run_until([&] { return client.error.has_value(); }, 10 * second_ns));
  REQUIRE(client.error.has_value());
  CHECK(*client.error == IoError::reset);
  CHECK(!send_completed);
  CHECK(client.socket->bytes_sent() < big.size());
  shut_down(*loop, server, clients);
}

// Proves teardown with a receive and a blocked send in flight: close() cancels both,
// on_closed() comes once, after every completion, with the fd closed, and nothing after.
TEST_CASE("socket: teardown with operations in flight cancels, waits, then closes") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  tools::EchoServer server(*loop);
  server.set_never_read(true);
  REQUIRE(server.listen(Address::loopback_v4(0)).ok());
  std::vector<std::unique_ptr<Client>> clients;
  clients.push_back(std::make_unique<Client>(*loop));
  Client& client = *clients[0];
  std::vector<std::byte> big(64u << 20, std::byte{2});
  client.when_connected = [&](Client& c) { c.socket->send(big); };
  client.connector.connect(server.address());
  CHECK(loop->run_until([&] { return client.connected; }, 5 * second_ns));
  loop->run_until([] { return false; }, 50'000'000);  // let the socket buffers fill
  REQUIRE(client.socket->send_in_flight());
  const int fd = client.socket->fd();
  const uint32_t ops_before = loop->ops_in_flight();
  client.socket->close();
  CHECK(loop->run_until([&] { return client.closed_calls > 0; }, 5 * second_ns));
  CHECK(client.closed_calls == 1);
  CHECK(client.fd_at_close == -1);
  CHECK(fcntl(fd, F_GETFD) == -1);  // closed, and no other fd was opened since
  CHECK(loop->ops_in_flight() == ops_before - 2);  // the receive and the send are gone
  loop->run_until([] { return false; }, 20'000'000);
  CHECK(client.callbacks_after_close == 0);
  CHECK(client.closed_calls == 1);
  shut_down(*loop, server, clients);
}

// Proves connect errors are told apart: refused for a closed port, timed_out when the
// peer never answers (its accept queue is full), canceled when the caller cancels.
TEST_CASE("socket: connect reports refused, timed_out and canceled") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  // A port that was just free: nobody listens there.
  const int probe = ::socket(AF_INET, SOCK_STREAM, 0);
  Address free_address = Address::loopback_v4(0);
  REQUIRE(::bind(probe, free_address.sockaddr_ptr(), free_address.length) == 0);
  socklen_t length = sizeof(free_address.storage);
  getsockname(probe, reinterpret_cast<sockaddr*>(&free_address.storage), &length);
  ::close(probe);
  Client refused(*loop);
  refused.connector.connect(free_address, 1000);
  CHECK(loop->run_until([&] { return refused.connect_error.has_value(); }, 5 * second_ns));
  CHECK(refused.connect_error == IoError::refused);

  // A listener that never accepts, with its queue filled: further SYNs are dropped.
  const int full = ::socket(AF_INET, SOCK_STREAM, 0);
  Address full_address = Address::loopback_v4(0);
  REQUIRE(::bind(full, full_address.sockaddr_ptr(), full_address.length) == 0);
  REQUIRE(::listen(full, 0) == 0);
  length = sizeof(full_address.storage);
  getsockname(full, reinterpret_cast<sockaddr*>(&full_address.storage), &length);
  std::vector<int> fillers;
  for (int i = 0; i < 4; i++) {
    const int filler = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    (void)::connect(filler, full_address.sockaddr_ptr(), full_address.length);
    fillers.push_back(filler);
  }
  loop->run_until([] { return false; }, 100'000'000);
  Client timed_out(*loop);
  const uint64_t start = Loop::clock_ns();
  timed_out.connector.connect(full_address, 200);
  CHECK(loop->run_until([&] { return timed_out.connect_error.has_value() || timed_out.connected; }, 5 * second_ns));
  CHECK(timed_out.connect_error == IoError::timed_out);
  CHECK(Loop::clock_ns() - start >= 190'000'000);

  Client canceled(*loop);
  canceled.connector.connect(full_address, 5000);
  loop->run_until([] { return false; }, 20'000'000);
  canceled.connector.cancel();
  CHECK(loop->run_until([&] { return canceled.connect_error.has_value(); }, 5 * second_ns));
  CHECK(canceled.connect_error == IoError::canceled);
  CHECK(!canceled.connector.in_progress());
  for (int filler : fillers) ::close(filler);
  ::close(full);
  CHECK(loop->ops_in_flight() == 1);
}

// Proves address parsing accepts IPv4 and IPv6 forms and rejects malformed text.
TEST_CASE("socket: address parsing") {
  auto v4 = Address::parse("127.0.0.1:8080");
  REQUIRE(v4.ok());
  CHECK(v4->port() == 8080);
  CHECK(v4->to_string() == "127.0.0.1:8080");
  auto v6 = Address::parse("[::1]:9");
  REQUIRE(v6.ok());
  CHECK(v6->to_string() == "[::1]:9");
  for (const char* bad : {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", "host:80", "[::1]9",
                          "127.0.0.1:80x", "[::1:80"}) {
    auto parsed = Address::parse(bad);
    CHECK_MESSAGE(!parsed.ok(), bad);
    if (!parsed.ok()) CHECK(parsed.error() == IoError::address_invalid);
  }
}

// Proves the gather send delivers both parts in order, resuming short sends inside either
// part: two 8 MiB parts through an echo, compared byte for byte.
TEST_CASE("socket: a two-part gather send arrives whole and in order") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  tools::EchoServer server(*loop);
  REQUIRE(server.listen(Address::loopback_v4(0)).ok());
  std::vector<std::unique_ptr<Client>> clients;
  clients.push_back(std::make_unique<Client>(*loop));
  Client& client = *clients[0];
  const uint64_t seed = test::test_seed("socket gather send");
  const Pattern pattern(seed);
  const auto first = pattern.at(0, 8u << 20);
  const auto second = pattern.at(1u << 20, 3u << 20);
  std::vector<std::byte> received;
  bool sent = false;
  client.when_connected = [&](Client& c) { c.socket->send(first, second); };
  client.when_sent = [&] { sent = true; };
  client.when_received = [&](std::span<const std::byte> bytes) { received.insert(received.end(), bytes.begin(), bytes.end()); };
  client.connector.connect(server.address());
  const std::size_t total = first.size() + second.size();
  CHECK(loop->run_until([&] { return received.size() >= total || client.error.has_value(); }, 30 * second_ns));
  CHECK(sent);
  REQUIRE(received.size() == total);
  CHECK(std::memcmp(received.data(), first.data(), first.size()) == 0);
  CHECK(std::memcmp(received.data() + first.size(), second.data(), second.size()) == 0);
  shut_down(*loop, server, clients);
}
