// ringmux-chaos: the proxy object against small blocking-socket servers on 127.0.0.1
// (integrity, each fault, the runtime controls) and the command line (every option, every
// error naming its option). Randomised tests print their seed; RINGMUX_SEED=N replays.
#include "tools/chaos/options.h"
#include "tools/chaos/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace ringmux::chaos;

namespace {

using Clock = std::chrono::steady_clock;
using Bytes = std::vector<uint8_t>;

// Every blocking call of the test servers and clients gives up after this long, so a
// broken proxy fails a test instead of hanging the binary.
constexpr int io_timeout_ms = 5000;

uint64_t chaos_seed(const char* test_name) {
  uint64_t seed = 0;
  if (const char* env = std::getenv("RINGMUX_SEED"); env != nullptr && *env != '\0') {
    seed = std::strtoull(env, nullptr, 10);
  } else {
    seed = (uint64_t{std::random_device{}()} << 32) ^ std::random_device{}();
  }
  std::printf("%s: seed=%llu (replay with RINGMUX_SEED=%llu)\n", test_name, static_cast<unsigned long long>(seed),
              static_cast<unsigned long long>(seed));
  return seed;
}

Bytes random_bytes(uint64_t seed, std::size_t count) {
  std::mt19937_64 random(seed);
  Bytes bytes(count);
  for (std::size_t i = 0; i < count; i += 8) {
    const uint64_t word = random();
    std::memcpy(bytes.data() + i, &word, std::min<std::size_t>(8, count - i));
  }
  return bytes;
}

double elapsed_s(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

void set_timeouts(int fd, int timeout_ms) {
  const timeval timeout{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
}

int connect_to(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0);
  set_timeouts(fd, io_timeout_ms);
  return fd;
}

bool send_all(int fd, const uint8_t* data, std::size_t length) {
  while (length > 0) {
    const ssize_t n = ::send(fd, data, length, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    length -= static_cast<std::size_t>(n);
  }
  return true;
}
bool send_text(int fd, const std::string& text) {
  return send_all(fd, reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

// Reads until end of stream or failure into `out`; returns 0 at end of stream, else errno
// (EAGAIN: the receive timeout passed).
int read_to_end(int fd, Bytes& out) {
  uint8_t buffer[64 * 1024];
  while (true) {
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n == 0) return 0;
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    out.insert(out.end(), buffer, buffer + n);
  }
}

// Receives exactly `count` bytes as text; empty with `error` set when the stream fails.
std::string recv_text(int fd, std::size_t count, int& error) {
  std::string text(count, '\0');
  std::size_t got = 0;
  error = 0;
  while (got < count) {
    const ssize_t n = ::recv(fd, text.data() + got, count - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error = n == 0 ? -1 : errno;  // -1: end of stream
      return {};
    }
    got += static_cast<std::size_t>(n);
  }
  return text;
}

// Waits (bounded) until `condition` holds.
bool eventually(const std::function<bool()>& condition, int timeout_ms = 2000) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return condition();
}

// A listener on 127.0.0.1 whose every connection runs `serve` on a thread of its own.
// The destructor shuts every socket down and joins, so that it always returns.
class Upstream {
 public:
  explicit Upstream(std::function<void(int fd)> serve) : serve_(std::move(serve)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(listen_fd_ >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    REQUIRE(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
    REQUIRE(::listen(listen_fd_, 16) == 0);
    REQUIRE(::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    port_ = ntohs(address.sin_port);
    accept_thread_ = std::thread([this] { accept_loop(); });
  }
  ~Upstream() {
    ::shutdown(listen_fd_, SHUT_RDWR);  // wakes the blocked accept()
    accept_thread_.join();
    {
      std::lock_guard lock(mutex_);
      for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    }
    for (auto& thread : threads_) thread.join();
    for (int fd : fds_) ::close(fd);
    ::close(listen_fd_);
  }
  uint16_t port() const noexcept { return port_; }

 private:
  void accept_loop() {
    while (true) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        return;  // shut down
      }
      set_timeouts(fd, io_timeout_ms);
      std::lock_guard lock(mutex_);
      fds_.push_back(fd);
      threads_.emplace_back([this, fd] { serve_(fd); });
    }
  }

  std::function<void(int fd)> serve_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::thread accept_thread_;
  std::mutex mutex_;
  std::vector<int> fds_;  // closed by the destructor only, so no fd is reused under a thread
  std::vector<std::thread> threads_;
};

// Sends back every byte; passes on the end of stream.
void serve_echo(int fd) {
  uint8_t buffer[64 * 1024];
  while (true) {
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || !send_all(fd, buffer, static_cast<std::size_t>(n))) break;
  }
  ::shutdown(fd, SHUT_WR);
}

// Sends `bytes` and ends its side; then reads until the peer ends (or fails).
std::function<void(int)> serve_source(const Bytes& bytes) {
  return [&bytes](int fd) {
    (void)send_all(fd, bytes.data(), bytes.size());
    ::shutdown(fd, SHUT_WR);
    Bytes ignored;
    (void)read_to_end(fd, ignored);
  };
}

ProxyOptions proxy_to(uint16_t upstream_port, uint64_t seed = 1) {
  ProxyOptions options;
  options.listen = {"127.0.0.1", 0};
  options.upstream = {"127.0.0.1", upstream_port};
  options.seed = seed;
  return options;
}

std::unique_ptr<Proxy> start_proxy(const ProxyOptions& options) {
  std::string error;
  auto proxy = Proxy::start(options, error);
  INFO(error);
  REQUIRE(proxy);
  return proxy;
}

// Runs a source upstream of `bytes` through a proxy with `options` and returns what the
// client received; `end` is read_to_end's result.
Bytes receive_through(ProxyOptions options, const Bytes& bytes, int& end, ProxyStats* stats = nullptr) {
  Upstream upstream(serve_source(bytes));
  options.upstream.port = upstream.port();
  auto proxy = start_proxy(options);
  const int client = connect_to(proxy->port());
  Bytes received;
  end = read_to_end(client, received);
  ::close(client);
  if (stats != nullptr) *stats = proxy->stats();
  return received;
}

}  // namespace

// Proves that without faults other than slicing, 8 MiB cross the proxy both ways intact
// and in order while every send carries 1..512 bytes, and that the pair then closes.
TEST_CASE("chaos: pass-through integrity with slicing 1-512") {
  const uint64_t seed = chaos_seed("chaos: pass-through integrity");
  Upstream upstream(serve_echo);
  ProxyOptions options = proxy_to(upstream.port(), seed);
  options.faults.up.slice_bytes_min = options.faults.down.slice_bytes_min = 1;
  options.faults.up.slice_bytes_max = options.faults.down.slice_bytes_max = 512;
  auto proxy = start_proxy(options);

  constexpr std::size_t total_bytes = 8u << 20;
  const Bytes sent = random_bytes(seed, total_bytes);
  const int client = connect_to(proxy->port());
  std::thread writer([&] {
    std::mt19937_64 random(seed + 1);
    std::size_t offset = 0;
    while (offset < sent.size()) {
      const std::size_t length = std::min<std::size_t>(sent.size() - offset, 1 + random() % (128 * 1024));
      if (!send_all(client, sent.data() + offset, length)) break;
      offset += length;
    }
    ::shutdown(client, SHUT_WR);
  });
  Bytes received;
  received.reserve(total_bytes);
  const int end = read_to_end(client, received);
  writer.join();
  ::close(client);

  CHECK(end == 0);
  REQUIRE(received.size() == sent.size());
  CHECK(received == sent);
  // The snapshot's counters are not read at one instant: wait for both.
  CHECK(eventually([&] {
    const ProxyStats now = proxy->stats();
    return now.closes == 1 && now.connections_active == 0;
  }));
  const ProxyStats stats = proxy->stats();
  CHECK(stats.connections_accepted == 1);
  CHECK(stats.up.bytes_forwarded == total_bytes);
  CHECK(stats.down.bytes_forwarded == total_bytes);
  CHECK(stats.up.sends >= total_bytes / 512);
  CHECK(stats.down.sends >= total_bytes / 512);
  CHECK(stats.resets + stats.cuts + stats.aborts == 0);
}

// Proves --reset-every aborts a pair with RST on both sides no sooner than the period
// after accept (and well within a second after it).
TEST_CASE("chaos: reset-every resets both sides") {
  std::promise<int> upstream_end;
  Upstream upstream([&](int fd) {
    Bytes ignored;
    upstream_end.set_value(read_to_end(fd, ignored));
  });
  ProxyOptions options = proxy_to(upstream.port());
  options.faults.reset_every_ns = 200'000'000;
  auto proxy = start_proxy(options);

  const auto start = Clock::now();
  const int client = connect_to(proxy->port());
  uint8_t byte = 0;
  const ssize_t n = ::recv(client, &byte, 1, 0);
  const int error = errno;
  const double elapsed = elapsed_s(start);
  ::close(client);
  CHECK(n == -1);
  CHECK(error == ECONNRESET);
  CHECK(elapsed >= 0.2);
  CHECK(elapsed < 1.5);
  auto upstream_result = upstream_end.get_future();
  REQUIRE(upstream_result.wait_for(std::chrono::seconds(2)) == std::future_status::ready);
  CHECK(upstream_result.get() == ECONNRESET);
  CHECK(proxy->stats().resets == 1);
}

// Proves --cut-after-bytes delivers exactly N bytes in the targeted direction, then an
// orderly end of stream (FIN, not RST).
TEST_CASE("chaos: cut-after-bytes delivers N bytes then FIN") {
  const uint64_t seed = chaos_seed("chaos: cut-after-bytes");
  const Bytes source = random_bytes(seed, 1u << 20);
  ProxyOptions options = proxy_to(0, seed);
  options.faults.down.cut_after_bytes = 100'000;
  int end = 0;
  ProxyStats stats;
  const Bytes received = receive_through(options, source, end, &stats);
  CHECK(end == 0);
  REQUIRE(received.size() == 100'000);
  CHECK(std::equal(received.begin(), received.end(), source.begin()));
  CHECK(stats.cuts == 1);
  CHECK(stats.down.bytes_forwarded == 100'000);
}

// Proves --latency delays each direction by at least its value and --jitter never
// reorders bytes within a direction.
TEST_CASE("chaos: latency and jitter delay without reordering") {
  Upstream upstream(serve_echo);
  ProxyOptions options = proxy_to(upstream.port(), chaos_seed("chaos: latency and jitter"));
  options.faults.up.latency_ns = options.faults.down.latency_ns = 100'000'000;
  auto proxy = start_proxy(options);
  const int client = connect_to(proxy->port());
  const auto start = Clock::now();
  REQUIRE(send_text(client, "x"));
  int error = 0;
  CHECK(recv_text(client, 1, error) == "x");
  const double round_trip_s = elapsed_s(start);
  CHECK(round_trip_s >= 0.2);
  CHECK(round_trip_s < 1.5);
  CHECK(proxy->stats().up.bytes_delayed == 1);
  CHECK(proxy->stats().down.bytes_delayed == 1);

  // Small latency, large jitter: draws alone would reorder chunks sent 1 ms apart.
  Faults faults;
  faults.up.latency_ns = faults.down.latency_ns = 1'000'000;
  faults.up.jitter_ns = faults.down.jitter_ns = 30'000'000;
  std::string set_error;
  REQUIRE(proxy->set_faults(faults, set_error));
  std::string expected;
  for (int i = 0; i < 60; i++) {
    char number[16];  // room for any int: -O1 cannot prove i < 60
    std::snprintf(number, sizeof(number), "%03d,", i);
    expected += number;
    REQUIRE(send_text(client, number));
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  CHECK(recv_text(client, expected.size(), error) == expected);
  ::close(client);
}

// Proves --bandwidth holds a direction to its rate: 512 KiB at 1 MiB/s take at least
// ~0.5 s less one 10 ms burst (a loose lower bound; no upper bound is asserted); and that
// the proxy sends in bursts, not in the trickle the bucket gains between two turns of its
// loop: 512 KiB in 10 ms bursts of 10 KiB are ~50 sends (a late turn only makes a burst
// larger); a send per trickle was thousands, each turn reading and sending a few hundred
// bytes while the source kept the lane full.
TEST_CASE("chaos: bandwidth limits the rate, in bursts") {
  const Bytes source = random_bytes(7, 512u << 10);
  ProxyOptions options = proxy_to(0);
  options.faults.down.bandwidth_bytes_per_s = 1u << 20;
  const auto start = Clock::now();
  int end = 0;
  ProxyStats stats;
  const Bytes received = receive_through(options, source, end, &stats);
  const double elapsed = elapsed_s(start);
  CHECK(end == 0);
  CHECK(received == source);
  CHECK(elapsed >= 0.45);
  CHECK(stats.down.sends <= 2 * (512u << 10) / ((1u << 20) / 100));
}

// Proves --corrupt flips exactly one bit in each corrupted byte, counts every flip, acts
// on the targeted direction only, and that the flipped bits follow from the seed and the
// byte offsets alone (a second run with different slicing corrupts identically).
TEST_CASE("chaos: corrupt flips counted bits, reproducibly") {
  const uint64_t seed = chaos_seed("chaos: corrupt");
  const Bytes source = random_bytes(seed, 64u << 10);
  ProxyOptions options = proxy_to(0, seed);
  options.faults.down.corrupt_probability = 0.05;
  int end = 0;
  ProxyStats stats;
  const Bytes received = receive_through(options, source, end, &stats);
  CHECK(end == 0);
  REQUIRE(received.size() == source.size());
  uint64_t bits_differing = 0;
  uint64_t bytes_with_more_than_one_bit = 0;
  for (std::size_t i = 0; i < source.size(); i++) {
    const int bits = __builtin_popcount(static_cast<unsigned>(source[i] ^ received[i]));
    bits_differing += static_cast<uint64_t>(bits);
    if (bits > 1) bytes_with_more_than_one_bit++;
  }
  CHECK(bytes_with_more_than_one_bit == 0);
  CHECK(bits_differing == stats.down.bits_flipped);
  // 65536 bytes at 5 %: about 3277 flips; 2000 is more than 20 standard deviations away.
  CHECK(bits_differing > 2000);
  CHECK(stats.up.bits_flipped == 0);

  options.faults.down.slice_bytes_min = 1;
  options.faults.down.slice_bytes_max = 700;
  const Bytes again = receive_through(options, source, end);
  CHECK(again == received);
}

// Proves a blackhole discards in its direction while the sockets stay open (set at run
// time, and lifted again), and that --blackhole-after starts one per pair after its delay
// in the targeted direction only.
TEST_CASE("chaos: blackhole stops delivery and keeps the connection") {
  Upstream upstream(serve_echo);
  auto proxy = start_proxy(proxy_to(upstream.port()));
  int client = connect_to(proxy->port());
  set_timeouts(client, 300);
  int error = 0;
  REQUIRE(send_text(client, "ping1"));
  CHECK(recv_text(client, 5, error) == "ping1");
  proxy->set_blackhole(Direction::both, true);
  REQUIRE(send_text(client, "ping2"));
  CHECK(recv_text(client, 5, error).empty());
  CHECK(error == EAGAIN);  // the receive timed out: no end of stream, no reset
  CHECK(eventually([&] { return proxy->stats().up.bytes_discarded == 5; }));
  CHECK(proxy->stats().connections_active == 1);
  proxy->set_blackhole(Direction::both, false);
  REQUIRE(send_text(client, "ping3"));
  CHECK(recv_text(client, 5, error) == "ping3");  // ping2 is gone for good
  ::close(client);
  proxy->stop();

  // The onset counts from the proxy's accept, which the client cannot see; but once "a"
  // has come back the accept is in the past, so waiting the delay from then is enough.
  ProxyOptions options = proxy_to(upstream.port());
  options.faults.down.blackhole_after_ns = 300'000'000;
  proxy = start_proxy(options);
  client = connect_to(proxy->port());
  set_timeouts(client, 300);
  REQUIRE(send_text(client, "a"));
  CHECK(recv_text(client, 1, error) == "a");
  std::this_thread::sleep_for(std::chrono::milliseconds(300 + 20));
  REQUIRE(send_text(client, "b"));
  CHECK(recv_text(client, 1, error).empty());
  CHECK(error == EAGAIN);
  // The up direction still delivers ("b" reached the echo); its answer was discarded.
  CHECK(eventually([&] { return proxy->stats().up.bytes_forwarded == 2; }));
  CHECK(eventually([&] { return proxy->stats().down.bytes_discarded == 1; }));
  ::close(client);
}

// Proves the runtime controls and the pair-wide faults: reset_all ends live pairs with
// RST, cut_all and --cut-every with FIN, a refused upstream resets the client, and stop()
// returns promptly with a pair still open.
TEST_CASE("chaos: runtime controls, cut-every, refused upstream, prompt stop") {
  Upstream upstream(serve_echo);
  auto proxy = start_proxy(proxy_to(upstream.port()));
  int error = 0;
  auto open_client = [&] {
    const int fd = connect_to(proxy->port());
    REQUIRE(send_text(fd, "hi"));
    CHECK(recv_text(fd, 2, error) == "hi");
    return fd;
  };
  int client = open_client();
  proxy->reset_all();
  CHECK(recv_text(client, 1, error).empty());
  CHECK(error == ECONNRESET);
  ::close(client);
  CHECK(proxy->stats().resets == 1);

  client = open_client();
  proxy->cut_all();
  CHECK(recv_text(client, 1, error).empty());
  CHECK(error == -1);  // end of stream
  ::close(client);
  CHECK(proxy->stats().cuts == 1);

  Faults faults;
  faults.cut_every_ns = 100'000'000;
  std::string set_error;
  REQUIRE(proxy->set_faults(faults, set_error));
  const auto start = Clock::now();
  client = open_client();
  CHECK(recv_text(client, 1, error).empty());
  CHECK(error == -1);
  CHECK(elapsed_s(start) >= 0.1);
  ::close(client);
  CHECK(proxy->stats().cuts == 2);

  REQUIRE(proxy->set_faults(Faults{}, set_error));
  client = open_client();
  const auto stop_start = Clock::now();
  proxy->stop();
  CHECK(elapsed_s(stop_start) < 1.0);
  CHECK(recv_text(client, 1, error).empty());
  CHECK(error == -1);  // stop() closed the pair: end of stream
  ::close(client);

  // A port nobody listens on: bound, never listening, then closed.
  const int probe = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  REQUIRE(::bind(probe, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
  REQUIRE(::getsockname(probe, reinterpret_cast<sockaddr*>(&address), &length) == 0);
  ::close(probe);
  proxy = start_proxy(proxy_to(ntohs(address.sin_port)));
  client = connect_to(proxy->port());
  CHECK(recv_text(client, 1, error).empty());
  CHECK(error == ECONNRESET);
  ::close(client);
  CHECK(proxy->stats().connect_failures == 1);
}

// Proves Proxy::start and set_faults refuse what cannot run, with a message.
TEST_CASE("chaos: start and set_faults report errors") {
  std::string error;
  ProxyOptions options = proxy_to(9);
  options.listen.host = "localhost";
  CHECK(!Proxy::start(options, error));
  CHECK(error.find("listen address 'localhost'") != std::string::npos);
  options = proxy_to(0);
  CHECK(!Proxy::start(options, error));
  CHECK(error.find("upstream") != std::string::npos);
  options = proxy_to(9);
  options.faults.up.slice_bytes_min = 10;
  options.faults.up.slice_bytes_max = 5;
  CHECK(!Proxy::start(options, error));
  CHECK(error == "option '--slice' (up): min 10 is above max 5");

  auto proxy = start_proxy(proxy_to(9));
  Faults faults;
  faults.down.corrupt_probability = 1.5;
  CHECK(!proxy->set_faults(faults, error));
  CHECK(error == "option '--corrupt' (down): the probability is outside [0, 1]");
  faults.down.corrupt_probability = 0;
  faults.down.latency_ns = 11'000'000'000;
  CHECK(!proxy->set_faults(faults, error));
  CHECK(error.find("'--latency' (down)") != std::string::npos);
}

// Proves every option lands where it should, the --direction scheme (applies to the
// faults after it; whole-pair faults ignore it), and the value syntaxes.
TEST_CASE("chaos: command line, every option") {
  const ParsedCommandLine parsed = parse_command_line(
      {"--listen=127.0.0.1:0", "--upstream=127.0.0.1:7300", "--reset-every=2s", "--cut-every=1500ms",
       "--latency=5ms", "--direction=down", "--jitter=50us", "--bandwidth=10m/s", "--slice=1-4k",
       "--blackhole-after=0", "--corrupt=1e-6", "--cut-after-bytes=64k", "--direction=up", "--latency=7ms",
       "--seed=42", "--duration=3", "--stats=json"});
  INFO(parsed.error);
  REQUIRE(parsed.ok());
  const CommandLine& line = *parsed.value;
  CHECK(line.proxy.listen.host == "127.0.0.1");
  CHECK(line.proxy.listen.port == 0);
  CHECK(line.proxy.upstream.port == 7300);
  const Faults& faults = line.proxy.faults;
  CHECK(faults.reset_every_ns == 2'000'000'000u);
  CHECK(faults.cut_every_ns == 1'500'000'000u);
  CHECK(faults.up.latency_ns == 7'000'000u);  // --latency=5ms (both), then 7ms for up
  CHECK(faults.down.latency_ns == 5'000'000u);
  CHECK(faults.down.jitter_ns == 50'000u);
  CHECK(faults.up.jitter_ns == 0u);
  CHECK(faults.down.bandwidth_bytes_per_s == 10u << 20);
  CHECK(faults.down.slice_bytes_min == 1u);
  CHECK(faults.down.slice_bytes_max == 4096u);
  CHECK(faults.down.blackhole_after_ns == 0u);
  CHECK(!faults.up.blackhole_after_ns);
  CHECK(faults.down.corrupt_probability == 1e-6);
  CHECK(faults.down.cut_after_bytes == 65536u);
  CHECK(faults.up.cut_after_bytes == 0u);
  CHECK(line.seed == 42u);
  CHECK(line.duration_ns == 3'000'000'000u);
  CHECK(line.stats == StatsFormat::json);
  CHECK(!line.help);

  const ParsedCommandLine defaults = parse_command_line({"--listen=127.0.0.1:7400", "--upstream=127.0.0.1:7300"});
  REQUIRE(defaults.ok());
  CHECK(!defaults.value->seed);
  CHECK(defaults.value->duration_ns == 0u);
  CHECK(defaults.value->stats == StatsFormat::none);
  CHECK(parse_command_line({"--help"}).value->help);
  CHECK(parse_rate("1k") == 1024u);
  CHECK(!parse_rate("0"));
  CHECK(parse_probability("1") == 1.0);
  CHECK(!parse_probability("-0.1"));
  CHECK(!parse_slice("5-4"));
  CHECK(!parse_slice("0-4"));
  CHECK(!parse_endpoint("127.0.0.1", true));
  CHECK(!parse_endpoint("127.0.0.1:0", false));
}

// Proves each bad option gets a precise error naming it, and that --help lists every
// option with its default.
TEST_CASE("chaos: command-line errors name the option") {
  auto error_of = [](std::vector<std::string> args) {
    args.insert(args.begin(), {"--listen=127.0.0.1:0", "--upstream=127.0.0.1:7300"});
    const ParsedCommandLine parsed = parse_command_line(args);
    REQUIRE(!parsed.ok());
    return parsed.error;
  };
  CHECK(error_of({"--latency=5parsecs"}) ==
        "option '--latency': '5parsecs' is not a duration (e.g. 100ms, 50us, 2s; bare numbers are seconds)");
  CHECK(error_of({"--latency=11s"}) == "option '--latency': '11s' is not at most 10s");
  CHECK(error_of({"--reset-every=0"}) == "option '--reset-every': '0' is not a positive duration (e.g. 100ms, 50us, 2s)");
  CHECK(error_of({"--cut-every=soon"}).find("option '--cut-every'") == 0);
  CHECK(error_of({"--cut-after-bytes=0"}).find("option '--cut-after-bytes'") == 0);
  CHECK(error_of({"--bandwidth=fast"}).find("option '--bandwidth': 'fast' is not a rate") == 0);
  CHECK(error_of({"--slice=9-3"}).find("option '--slice': '9-3' is not MIN-MAX") == 0);
  CHECK(error_of({"--slice=1-300k"}).find("option '--slice'") == 0);
  CHECK(error_of({"--blackhole-after=x"}).find("option '--blackhole-after'") == 0);
  CHECK(error_of({"--corrupt=2"}) == "option '--corrupt': '2' is not a probability in [0, 1] (e.g. 0.01, 1e-6)");
  CHECK(error_of({"--direction=sideways"}) == "option '--direction': 'sideways' is not one of both, up, down");
  CHECK(error_of({"--seed=-1"}).find("option '--seed'") == 0);
  CHECK(error_of({"--duration=0"}).find("option '--duration'") == 0);
  CHECK(error_of({"--stats=xml"}) == "option '--stats': 'xml' is not one of none, text, json");
  CHECK(error_of({"--latency"}) == "option '--latency' needs a value (--latency=DURATION)");
  CHECK(error_of({"--frobnicate=1"}) == "unknown option '--frobnicate' (see --help)");
  CHECK(error_of({"extra"}) == "unexpected argument 'extra' (see --help)");
  CHECK(error_of({"--upstream=example.com:80"}) ==
        "option '--upstream': 'example.com:80' is not an IPv4 ADDRESS:PORT");
  CHECK(error_of({"--listen=127.0.0.1:70000"}).find("option '--listen'") == 0);
  CHECK(parse_command_line({"--upstream=127.0.0.1:1"}).error ==
        "option '--listen' is required (e.g. --listen=127.0.0.1:7400)");
  CHECK(parse_command_line({"--listen=127.0.0.1:1"}).error ==
        "option '--upstream' is required (e.g. --upstream=127.0.0.1:7300)");

  const std::string help = help_text();
  for (const char* option : {"--listen=", "--upstream=", "--direction=", "--reset-every=", "--cut-every=",
                             "--cut-after-bytes=", "--latency=", "--jitter=", "--bandwidth=", "--slice=",
                             "--blackhole-after=", "--corrupt=", "--seed=", "--duration=", "--stats=", "--help"}) {
    INFO(option);
    CHECK(help.find(option) != std::string::npos);
  }
}

// Proves the --stats=json output carries every counter.
TEST_CASE("chaos: stats json names every counter") {
  ProxyStats stats;
  stats.down.bits_flipped = 3;
  const std::string json = stats_json(stats);
  for (const char* key : {"connections_accepted", "connections_active", "connect_failures", "resets", "cuts", "aborts",
                          "closes", "\"up\"", "\"down\"", "bytes_received", "bytes_forwarded", "bytes_discarded",
                          "bytes_delayed", "sends", "bits_flipped\": 3"}) {
    INFO(key);
    CHECK(json.find(key) != std::string::npos);
  }
}
