// Sessions that survive broken connections: resume through the chaos proxy (resets, cuts,
// slicing, corruption, a black hole), a peer that restarted, and the refusals.
#include <doctest/doctest.h>

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>

#include <openssl/ssl.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "ringmux/engine/socket.h"
#include "ringmux/mux/link/acceptor.h"
#include "ringmux/mux/link/connection.h"
#include "ringmux/mux/link/tls.h"
#include "ringmux/mux/workers/threaded.h"
#include "ringmux/wire/codec.h"
#include "tests/mux/support.h"
#include "tests/support.h"
#include "tests/support_tls.h"
#include "tools/chaos/proxy.h"

using namespace ringmux;
using namespace ringmux::mux;
using engine::Loop;
using namespace ringmux::mux::loopback;

namespace {

constexpr uint32_t hash_sink = 2;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool sanitized = true;
#else
constexpr bool sanitized = false;
#endif

// The deterministic content of stream `stream` at `offset` (a multiple of 8), 8 bytes.
uint64_t content_word(uint64_t seed, uint64_t stream, uint64_t offset) {
  uint64_t x = seed ^ (stream * 0x9e3779b97f4a7c15ull) ^ (offset * 0xbf58476d1ce4e5b9ull);
  x ^= x >> 31;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 29;
  return x;
}

// Server side of hash_sink: hashes every byte; when the client ends, answers with the
// byte count and the hash (16 bytes) and ends too.
class HashSink final : public StreamObserver {
 public:
  explicit HashSink(const StreamStart& start) : connection_(*start.connection), id_(start.id) {
    XXH3_64bits_reset(&hash_);
  }
  void on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept override {
    XXH3_64bits_update(&hash_, bytes.data(), bytes.size());
    count_ += bytes.size();
    connection_.consume(id_, bytes.size());
    if (end_stream) {
      uint64_t answer[2] = {count_, XXH3_64bits_digest(&hash_)};
      std::memcpy(reply_, answer, sizeof(reply_));
      pump();
    }
  }
  void on_stream_writable() noexcept override { pump(); }
  void on_stream_finished(MuxError) noexcept override {}

 private:
  void pump() {
    auto taken = connection_.write(id_, std::span<const std::byte>(reply_).subspan(sent_), true);
    if (taken) sent_ += taken.value();
  }
  Connection& connection_;
  StreamId id_;
  XXH3_state_t hash_;
  uint64_t count_ = 0;
  std::byte reply_[16] = {};
  std::size_t sent_ = 0;
};

// A resumable server with the echo and hash_sink handlers.
struct HashServer : Server {
  explicit HashServer(Loop& loop_ref, const ConnectionOptions& options_ref, uint16_t port = 0,
                      const AcceptorOptions& acceptor_options = {})
      : Server(loop_ref, options_ref, port, acceptor_options) {
    registry.add_stream(hash_sink, [](const StreamStart& start) { return new HashSink(start); });
  }
};

// A client stream that writes `total` bytes of content_word() and checks the server's
// count and hash at the end.
class Upload final : public StreamObserver {
 public:
  Upload(Connection& connection, uint64_t seed, uint64_t stream, uint64_t total)
      : connection_(connection), seed_(seed), stream_(stream), total_(total) {
    XXH3_64bits_reset(&hash_);
    chunk_.resize(64 * 1024);
  }
  void start() {
    auto id = connection_.open(hash_sink, 0, {}, false, *this);
    REQUIRE(id.ok());
    id_ = id.value();
    pump();
  }
  void on_stream_data(std::span<const std::byte> bytes, bool) noexcept override {
    reply_.insert(reply_.end(), bytes.begin(), bytes.end());
    connection_.consume(id_, bytes.size());
  }
  void on_stream_writable() noexcept override { pump(); }
  void on_stream_finished(MuxError why) noexcept override {
    finished = true;
    error = why;
  }
  // The server saw every byte once and in order.
  bool verified() const {
    if (reply_.size() != 16) return false;
    uint64_t answer[2];
    std::memcpy(answer, reply_.data(), sizeof(answer));
    return answer[0] == total_ && answer[1] == sent_hash_;
  }

  bool finished = false;
  MuxError error = MuxError::none;
  uint64_t sent = 0;

 private:
  void pump() {
    while (sent < total_) {
      if (chunk_used_ == chunk_fill_) refill();
      const auto rest = std::span<const std::byte>(chunk_).subspan(chunk_used_, chunk_fill_ - chunk_used_);
      auto taken = connection_.write(id_, rest, sent + rest.size() == total_);
      if (!taken || taken.value() == 0) return;  // on_stream_writable continues
      chunk_used_ += taken.value();
      sent += taken.value();
    }
    if (sent == total_) sent_hash_ = XXH3_64bits_digest(&hash_);
  }
  void refill() {
    const uint64_t bytes = std::min<uint64_t>(chunk_.size(), total_ - sent);
    for (uint64_t i = 0; i < bytes; i += 8) {
      const uint64_t word = content_word(seed_, stream_, sent + i);
      std::memcpy(chunk_.data() + i, &word, std::min<uint64_t>(8, bytes - i));
    }
    XXH3_64bits_update(&hash_, chunk_.data(), bytes);
    chunk_fill_ = bytes;
    chunk_used_ = 0;
  }
  Connection& connection_;
  StreamId id_ = 0;
  uint64_t seed_;
  uint64_t stream_;
  uint64_t total_;
  XXH3_state_t hash_;
  uint64_t sent_hash_ = 0;
  std::vector<std::byte> chunk_;
  std::size_t chunk_fill_ = 0;
  std::size_t chunk_used_ = 0;
  std::vector<std::byte> reply_;
};

// Unary echo calls with checked responses, `depth` in flight, `total` in all.
struct Calls {
  Calls(Connection& connection_ref, uint64_t seed_ref, int total_ref, int depth_ref)
      : connection(connection_ref), seed(seed_ref), total(total_ref), depth(depth_ref) {}
  static std::vector<std::byte> request_of(uint64_t seed, int index) {
    std::vector<std::byte> request(1 + content_word(seed, 1000, index * 8) % 2048);
    for (std::size_t i = 0; i < request.size(); i++) request[i] = std::byte((index + i * 7) & 0xff);
    return request;
  }
  void pump() {
    while (issued < total && issued - done < depth) {
      const int index = issued++;
      const auto request = request_of(seed, index);
      call(connection, echo_unary, request, 0, [this, index](const CallResult& result) {
        done++;
        if (result.error != MuxError::none) {
          errors++;
          last_error = result.error;
        } else {
          const auto expected = request_of(seed, index);
          if (!std::equal(result.response.begin(), result.response.end(), expected.begin(), expected.end())) {
            mismatches++;
          }
        }
        pump();
      });
    }
  }
  Connection& connection;
  uint64_t seed;
  int total;
  int depth;
  int issued = 0;
  int done = 0;
  int errors = 0;
  int mismatches = 0;
  MuxError last_error = MuxError::none;
};

chaos::ProxyOptions proxy_to(uint16_t upstream_port, uint64_t seed) {
  chaos::ProxyOptions options;
  options.upstream.port = upstream_port;
  options.seed = seed;
  return options;
}

}  // namespace

// Proves the central promise of replay: through a proxy that resets every connection
// every 50 ms, forwards in random slices of 1-512 bytes and flips bits with probability
// 1e-6 per byte, 8 concurrent streams deliver every byte exactly once and in order (the
// server's count and hash equal the client's), 10,000 unary calls all complete with their
// own response, no stream or call sees an error, and neither side's held batches ever
// exceed their bound. 1 GiB in all in the release build; a sanitizer build moves 64 MiB
// (it runs ~10x slower; the paths are the same).
TEST_CASE("resume: 8 streams and 10,000 calls through resets, slicing and corruption, nothing lost") {
  const uint64_t seed = test::test_seed("resume through chaos");
  const uint64_t total_bytes = sanitized ? (64ull << 20) : (1ull << 30);
  const int streams = 8;
  const int calls = 10'000;
  auto loop = test::make_test_loop();
  if (!loop) return;
  ConnectionOptions options;
  HashServer server(*loop, options);
  chaos::ProxyOptions proxy_options = proxy_to(server.port(), seed);
  proxy_options.faults.reset_every_ns = 50 * ms_ns;
  for (chaos::LaneFaults* lane : {&proxy_options.faults.up, &proxy_options.faults.down}) {
    lane->slice_bytes_min = 1;
    lane->slice_bytes_max = 512;
    lane->corrupt_probability = 1e-6;
  }
  std::string error;
  auto proxy = chaos::Proxy::start(proxy_options, error);
  REQUIRE_MESSAGE(proxy != nullptr, error);
  {
    Client client(*loop, proxy->port(), options);
    Connection& connection = *client.connection;
    std::vector<std::unique_ptr<Upload>> uploads;
    for (int i = 0; i < streams; i++) {
      uploads.push_back(std::make_unique<Upload>(connection, seed, i, total_bytes / streams));
      uploads.back()->start();
    }
    Calls unary(connection, seed, calls, 16);
    unary.pump();
    const uint64_t started = Loop::clock_ns();
    const bool done = loop->run_until(
        [&] {
          if (client.closed) return true;
          for (auto& upload : uploads) {
            if (!upload->finished) return false;
          }
          return unary.done == calls;
        },
        (sanitized ? 600 : 300) * second_ns);
    const double seconds = static_cast<double>(Loop::clock_ns() - started) / 1e9;
    const ResumeStats client_stats = connection.resume_stats();
    const chaos::ProxyStats faults = proxy->stats();
    MESSAGE("moved " << total_bytes << " bytes and " << unary.done << " calls in " << seconds << " s; resets "
                     << faults.resets << ", bits flipped " << faults.up.bits_flipped + faults.down.bits_flipped
                     << ", client: transports lost " << client_stats.transports_lost << ", resumes "
                     << client_stats.resumes << ", bytes replayed " << client_stats.bytes_replayed
                     << ", redials " << client_stats.redials << ", held peak " << client_stats.held_bytes_peak);
    REQUIRE(done);
    CHECK_FALSE(client.closed);
    for (auto& upload : uploads) {
      CHECK(upload->finished);
      CHECK(upload->error == MuxError::none);
      CHECK(upload->verified());
    }
    CHECK(unary.done == calls);
    CHECK_MESSAGE(unary.errors == 0, "last call error: " << describe(unary.last_error));
    CHECK(unary.mismatches == 0);
    // The faults happened, and the session rode them out.
    CHECK(faults.resets > 0);
    CHECK(client_stats.resumes > 0);
    CHECK(client_stats.resumes <= client_stats.transports_lost);
    CHECK(client_stats.held_bytes_peak <= limits::replay_bytes_max);
    REQUIRE(server.connections.size() == 1);  // one session, however many TCP connections
    const ResumeStats server_stats = server.connections[0]->resume_stats();
    CHECK(server_stats.resumes > 0);
    CHECK(server_stats.held_bytes_peak <= limits::replay_bytes_max);
    CHECK(server.acceptor.stats().resumes == server_stats.resumes);
  }
  proxy->stop();
  server.shut_down();
}

namespace {

// A raw TCP client for hand-written handshakes.
int raw_connect(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  const engine::Address address = engine::Address::loopback_v4(port);
  REQUIRE(::connect(fd, address.sockaddr_ptr(), address.length) == 0);
  timeval timeout{2, 0};  // bounded reads
  (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  return fd;
}

// Reads until the peer closes (or 2 s pass); returns what arrived, or -1 on timeout.
long read_to_close(int fd, Loop& loop) {
  long total = 0;
  const uint64_t deadline = Loop::clock_ns() + 2 * second_ns;
  while (Loop::clock_ns() < deadline) {
    loop.run_once(false);  // the acceptor lives on this thread's loop
    char buffer[256];
    const ssize_t got = ::recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT);
    if (got == 0) return total;
    if (got > 0) total += got;
    if (got < 0 && errno != EAGAIN) return total;
  }
  return -1;
}

}  // namespace

// Proves a peer that restarted (its session table is empty) ends the old session: the
// dialer's RESUME is refused with resume_unknown_session, every stream and call fails
// with session_lost well within the resume timeout, and a new session then works.
TEST_CASE("resume: a restarted peer refuses the resume; everything fails with session_lost, a new session works") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  ConnectionOptions options;
  options.resume_timeout_ns = 5 * second_ns;
  auto first = std::make_unique<HashServer>(*loop, options);
  const uint16_t port = first->port();
  std::vector<std::shared_ptr<Responder>> held;
  first->registry.add_unary(3, [&](std::span<const std::byte>, std::shared_ptr<Responder> responder) {
    held.push_back(std::move(responder));  // never answers: the call is in flight at the restart
  });
  Client client(*loop, port, options);
  Upload upload(*client.connection, 1, 0, 1ull << 40);  // never finishes by itself
  upload.start();
  MuxError call_error = MuxError::none;
  bool call_done = false;
  call(*client.connection, 3, bytes_of("pending"), 0, [&](const CallResult& result) {
    call_done = true;
    call_error = result.error;
  });
  REQUIRE(loop->run_until([&] { return held.size() == 1 && upload.sent > (8u << 20); }, 5 * second_ns));

  // The restart: the old server goes away with its sessions, without a word to the peer
  // (a graceful close would tell it); a new one listens on the port.
  held.clear();
  first->crash();
  first.reset();
  const uint64_t restarted = Loop::clock_ns();
  HashServer second(*loop, options, port);
  REQUIRE(loop->run_until([&] { return client.closed; }, 5 * second_ns));
  const double seconds = static_cast<double>(Loop::clock_ns() - restarted) / 1e9;
  MESSAGE("session lost " << seconds << " s after the restart");
  CHECK(client.close_error == MuxError::session_lost);
  CHECK(call_done);
  CHECK(call_error == MuxError::session_lost);
  CHECK(upload.finished);
  CHECK(upload.error == MuxError::session_lost);
  CHECK(second.acceptor.stats().refused >= 1);
  CHECK(seconds < 1.0);  // refused at once, not timed out

  // A new session to the restarted peer starts cleanly.
  Client fresh(*loop, port, options);
  bool answered = false;
  call(*fresh.connection, echo_unary, bytes_of("again"), 0, [&](const CallResult& result) {
    answered = result.error == MuxError::none && result.response.size() == 5;
  });
  CHECK(loop->run_until([&] { return answered; }, 5 * second_ns));
  fresh.connection->close();
  loop->run_until([&] { return fresh.closed; }, 5 * second_ns);
  second.shut_down();
}

// Proves a black hole (the path drops everything, the sockets stay open) is detected by
// the keepalive within the dead-peer timeout, and that the session resumes once the path
// works again: the stream's bytes arrive once and in order.
TEST_CASE("resume: a black hole is detected by the keepalive, then the session resumes") {
  const uint64_t seed = test::test_seed("resume black hole");
  auto loop = test::make_test_loop();
  if (!loop) return;
  ConnectionOptions options;
  options.keepalive_interval_ns = 50 * ms_ns;
  options.dead_peer_timeout_ns = 200 * ms_ns;
  HashServer server(*loop, options);
  std::string error;
  auto proxy = chaos::Proxy::start(proxy_to(server.port(), seed), error);
  REQUIRE_MESSAGE(proxy != nullptr, error);
  {
    Client client(*loop, proxy->port(), options);
    Upload upload(*client.connection, seed, 0, 32ull << 20);
    upload.start();
    REQUIRE(loop->run_until([&] { return upload.sent > (4u << 20); }, 10 * second_ns));
    proxy->set_blackhole(chaos::Direction::both, true);
    const uint64_t holed = Loop::clock_ns();
    REQUIRE(loop->run_until([&] { return client.connection->resume_stats().transports_lost > 0; }, 5 * second_ns));
    const uint64_t detected_ns = Loop::clock_ns() - holed;
    MESSAGE("black hole detected after " << detected_ns / 1000 << " us");
    // Silence for dead_peer_timeout, seen by a keepalive tick (every half interval).
    CHECK(detected_ns <= options.dead_peer_timeout_ns + options.keepalive_interval_ns + 100 * ms_ns);
    proxy->set_blackhole(chaos::Direction::both, false);
    REQUIRE(loop->run_until([&] { return upload.finished || client.closed; }, 30 * second_ns));
    CHECK(upload.error == MuxError::none);
    CHECK(upload.verified());
    CHECK(client.connection->resume_stats().resumes >= 1);
    CHECK_FALSE(client.closed);
  }
  proxy->stop();
  server.shut_down();
}

// Proves the resume timeout: with the peer unreachable (connections refused), the session
// is lost after resume_timeout_ns, not before, and its calls fail with session_lost.
TEST_CASE("resume: an unreachable peer loses the session at the resume timeout") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  ConnectionOptions options;
  options.resume_timeout_ns = 300 * ms_ns;
  HashServer server(*loop, options);
  std::string error;
  auto proxy = chaos::Proxy::start(proxy_to(server.port(), 1), error);
  REQUIRE_MESSAGE(proxy != nullptr, error);
  Client client(*loop, proxy->port(), options);
  bool first_done = false;
  call(*client.connection, echo_unary, bytes_of("one"), 0, [&](const CallResult& r) {
    first_done = r.error == MuxError::none;
  });
  REQUIRE(loop->run_until([&] { return first_done; }, 5 * second_ns));
  proxy->stop();  // every connection through it closes, and new ones are refused
  const uint64_t cut = Loop::clock_ns();
  MuxError second_error = MuxError::none;
  call(*client.connection, echo_unary, bytes_of("two"), 0, [&](const CallResult& r) { second_error = r.error; });
  REQUIRE(loop->run_until([&] { return client.closed; }, 5 * second_ns));
  const uint64_t lost_ns = Loop::clock_ns() - cut;
  MESSAGE("session lost " << lost_ns / 1000 << " us after the path went away; redials "
                          << client.connection->resume_stats().redials);
  CHECK(client.close_error == MuxError::session_lost);
  CHECK(second_error == MuxError::session_lost);
  CHECK(lost_ns >= options.resume_timeout_ns - 20 * ms_ns);  // the deadline starts at the loss
  CHECK(lost_ns < options.resume_timeout_ns + 500 * ms_ns);
  CHECK(client.connection->resume_stats().redials >= 2);  // backoff, not one attempt
  server.shut_down();
}

// Proves the connection's callbacks never run inside a call on it, even when the session
// ends at once, and that each runs once although the connection is destroyed before the
// loop turns: with the peer unreachable the session waits for a resume with no transport
// (the next redial 10 s away); two calls are queued in it, one is cancelled, the session
// closed (closed() at once: no socket to wait for) and a third call fails on it. None of
// the three callbacks runs inside those calls; the destructor delivers each once.
TEST_CASE("resume: a session closed without a transport and destroyed before the loop turns reports each call once") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  ConnectionOptions options;
  options.redial_backoff_ns_min = 10 * second_ns;
  options.redial_backoff_ns_max = 10 * second_ns;
  HashServer server(*loop, options);
  std::string error;
  auto proxy = chaos::Proxy::start(proxy_to(server.port(), 1), error);
  REQUIRE_MESSAGE(proxy != nullptr, error);
  Client client(*loop, proxy->port(), options);
  REQUIRE(loop->run_until([&] { return client.connection->connected(); }, 5 * second_ns));
  proxy->stop();  // the connection breaks; the redial at once is refused, the next waits 10 s
  REQUIRE(loop->run_until([&] { return client.connection->resume_stats().redials >= 1; }, 5 * second_ns));
  loop->run_until([] { return false; }, 50 * ms_ns);  // the refused connect completes
  REQUIRE_FALSE(client.connection->connected());

  struct Outcome {
    int calls = 0;
    std::optional<MuxError> error;
  };
  Outcome cancelled, pending, late;
  auto record = [](Outcome& outcome) {
    return [&outcome](const CallResult& r) {
      outcome.calls++;
      outcome.error = r.error;
    };
  };
  Connection& connection = *client.connection;
  const StreamId a = call(connection, echo_unary, bytes_of("a"), 0, record(cancelled));
  const StreamId b = call(connection, echo_unary, bytes_of("b"), 0, record(pending));
  REQUIRE(a != 0);  // queued in the session while it resumes
  REQUIRE(b != 0);
  connection.cancel(a);
  connection.close();
  CHECK(call(connection, echo_unary, bytes_of("c"), 0, record(late)) == 0);
  CHECK(cancelled.calls + pending.calls + late.calls == 0);  // none inside the calls
  REQUIRE(connection.closed());

  client.connection.reset();  // before the loop turns
  client.closed = true;       // it never reports its close: destroyed first
  CHECK(cancelled.calls == 1);
  CHECK(cancelled.error == MuxError::cancelled);
  CHECK(pending.calls == 1);
  CHECK(pending.error == MuxError::cancelled);
  CHECK(late.calls == 1);
  CHECK(late.error == MuxError::stream_closed);
  loop->run_until([] { return false; }, 20 * ms_ns);
  CHECK(cancelled.calls + pending.calls + late.calls == 3);
  server.shut_down();
}

// Proves a late HELLO of a superseded generation is ignored by the acceptor: its socket is
// closed without an answer and the live session goes on untouched.
TEST_CASE("resume: a HELLO of a superseded generation is closed unanswered; the session goes on") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  ConnectionOptions options;
  HashServer server(*loop, options);
  Client client(*loop, server.port(), options);
  REQUIRE(loop->run_until([&] { return client.connection->connected(); }, 5 * second_ns));
  wire::Hello stale;
  stale.session_id = client.connection->session().session_id();
  stale.generation = 1;  // the live connection's own generation: not newer
  stale.hello_flags = wire::hello_flag_resume;
  std::vector<std::byte> frame(wire::frame_bytes(wire::hello_payload_bytes));
  wire::encode_hello(frame, stale);
  const int fd = raw_connect(server.port());
  REQUIRE(::send(fd, frame.data(), frame.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(frame.size()));
  CHECK(read_to_close(fd, *loop) == 0);  // closed, nothing said
  ::close(fd);
  CHECK(server.acceptor.stats().ignored == 1);
  bool answered = false;
  call(*client.connection, echo_unary, bytes_of("still here"), 0, [&](const CallResult& r) {
    answered = r.error == MuxError::none;
  });
  CHECK(loop->run_until([&] { return answered; }, 5 * second_ns));
  CHECK(client.connection->resume_stats().transports_lost == 0);
  client.connection->close();
  loop->run_until([&] { return client.closed; }, 5 * second_ns);
  server.shut_down();
}

// Proves the cross-thread paths under resume (run under ThreadSanitizer): 4 threads make
// blocking calls through RemoteCaller while the proxy resets the connection every 20 ms
// and the test thread resets it too; the loop thread alone runs the session and its
// resumes, and every call gets its own answer.
TEST_CASE("threaded: calls from 4 threads ride through resumes") {
  const uint64_t seed = test::test_seed("threaded resume");
  std::atomic<bool> ready{false};
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> resumes{0};
  Connection* connection = nullptr;      // published by `ready`
  std::unique_ptr<chaos::Proxy> proxy;   // published by `ready`
  bool have_loop = true;
  std::thread loop_thread([&] {
    // A loop is driven by the thread that made it (SINGLE_ISSUER): everything here.
    auto loop = test::make_test_loop();
    if (!loop) {
      have_loop = false;
      ready.store(true);
      return;
    }
    ConnectionOptions options;
    HashServer server(*loop, options);
    chaos::ProxyOptions proxy_options = proxy_to(server.port(), seed);
    proxy_options.faults.reset_every_ns = 20 * ms_ns;
    std::string error;
    proxy = chaos::Proxy::start(proxy_options, error);
    REQUIRE_MESSAGE(proxy != nullptr, error);
    {
      Client client(*loop, proxy->port(), options);
      connection = client.connection.get();
      ready.store(true);
      const uint64_t deadline = Loop::clock_ns() + 120 * second_ns;
      while (!stop.load() && Loop::clock_ns() < deadline) loop->run_once(true, 1 * ms_ns);
      resumes.store(client.connection->resume_stats().resumes);
    }
    proxy->stop();
    server.shut_down();
  });
  while (!ready.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (have_loop) {
    RemoteCaller caller(*connection);
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; t++) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 1000; i++) {
          const int tag = t * 100000 + i;
          std::byte request[sizeof(tag)];
          std::memcpy(request, &tag, sizeof(tag));
          CallOutcome outcome = caller.call(echo_unary, request, Loop::clock_ns() + 30 * second_ns);
          int echoed = -1;
          if (outcome.error == MuxError::none && outcome.response.size() == sizeof(tag)) {
            std::memcpy(&echoed, outcome.response.data(), sizeof(echoed));
          }
          if (echoed != tag) wrong.fetch_add(1);
        }
      });
    }
    for (int i = 0; i < 5; i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(7));
      proxy->reset_all();  // from this thread, while the workers call
    }
    for (auto& thread : threads) thread.join();
    stop.store(true);
    loop_thread.join();
    CHECK(wrong.load() == 0);
    CHECK(resumes.load() > 0);
    MESSAGE("4,000 calls from 4 threads across " << resumes.load() << " resumes");
  } else {
    loop_thread.join();
  }
}

// Proves that closing a resumable session ends the peer's at once: the peer does not take
// the closed socket for a broken connection and wait out its resume timeout.
TEST_CASE("resume: closing a session ends the peer's session at once") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  ConnectionOptions options;  // resume timeout: the 10 s default
  HashServer server(*loop, options);
  Client client(*loop, server.port(), options);
  REQUIRE(loop->run_until([&] { return client.connection->connected() && server.connections.size() == 1; },
                          5 * second_ns));
  const uint64_t closed_at = Loop::clock_ns();
  client.connection->close();
  REQUIRE(loop->run_until([&] { return server.closed == 1; }, 5 * second_ns));
  const uint64_t took_ns = Loop::clock_ns() - closed_at;
  MESSAGE("the server's session ended " << took_ns / 1000 << " us after the client closed its own");
  CHECK(took_ns < second_ns);
  CHECK(server.last_error == MuxError::peer_error);
  CHECK(server.acceptor.sessions() == 0);
  server.shut_down();
}

namespace {

// A socket transport whose send completions the test holds back: a send stays in flight
// (as one to a peer that reads slowly) until complete_send(). Its bytes do reach the peer.
class HeldSends final : public Transport, private TransportHandler {
 public:
  // `last_words_sent` outlives the transport: set by a send after complete_send() (the
  // connection has only its last words left to send then).
  HeldSends(std::unique_ptr<Transport> inner, bool& last_words_sent)
      : inner_(std::move(inner)), last_words_sent_(last_words_sent) {}
  void complete_send() noexcept {
    holding_ = false;
    if (std::exchange(completed_, false)) handler_->on_transport_sent();
  }
  bool holds_a_send() const noexcept { return completed_; }

  void start(TransportHandler& handler) noexcept override {
    handler_ = &handler;
    inner_->start(*this);
  }
  void send(std::span<const std::byte> a, std::span<const std::byte> b, std::span<const std::byte> c) noexcept override {
    if (!holding_) last_words_sent_ = true;
    inner_->send(a, b, c);
  }
  bool send_in_flight() const noexcept override { return completed_ || inner_->send_in_flight(); }
  bool usable() const noexcept override { return inner_->usable(); }
  void send_last(std::span<const std::byte> bytes) noexcept override { inner_->send_last(bytes); }
  void close() noexcept override { inner_->close(); }

 private:
  void on_transport_recv(std::span<const std::byte> bytes) noexcept override { handler_->on_transport_recv(bytes); }
  void on_transport_sent() noexcept override {
    if (holding_) {
      completed_ = true;
      return;
    }
    handler_->on_transport_sent();
  }
  void on_transport_error(engine::IoError error) noexcept override { handler_->on_transport_error(error); }
  void on_transport_closed() noexcept override { handler_->on_transport_closed(); }

  std::unique_ptr<Transport> inner_;
  bool& last_words_sent_;
  TransportHandler* handler_ = nullptr;
  bool holding_ = true;
  bool completed_ = false;
};

// A resumable dialer over HeldSends (its first transport; redials are plain TCP).
struct HeldClient final : ConnectionObserver {
  HeldClient(Loop& loop, uint16_t port, ConnectionOptions options) {
    options.resume = true;
    options.peer = engine::Address::loopback_v4(port);
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    REQUIRE(::connect(fd, options.peer.sockaddr_ptr(), options.peer.length) == 0);
    auto transport = std::make_unique<HeldSends>(make_socket_transport(loop, fd), last_words_sent);
    held = transport.get();
    connection = std::make_unique<Connection>(loop, std::move(transport), true, nullptr, *this, options);
    connection->start();
  }
  void on_connection_closed(Connection&, MuxError error, engine::IoError) noexcept override {
    closed = true;
    close_error = error;
  }
  std::unique_ptr<Connection> connection;
  HeldSends* held = nullptr;  // valid until the connection's first transport closes
  bool last_words_sent = false;
  bool closed = false;
  MuxError close_error = MuxError::none;
};

}  // namespace

// Proves the last words wait for a send in flight instead of being dropped: a session
// closed while its send is in flight (here the HELLO's, held back by the test) writes its
// ERROR behind that send once it completes, so the peer ends at once rather than waiting
// for a resume until its timeout (30 s here).
TEST_CASE("resume: a session closed with a send in flight tells the peer once the send completes") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  ConnectionOptions options;
  options.resume_timeout_ns = 30 * second_ns;
  HashServer server(*loop, options);
  HeldClient client(*loop, server.port(), options);
  REQUIRE(loop->run_until([&] { return client.connection->connected() && client.held->holds_a_send(); },
                          5 * second_ns));
  client.connection->close();
  CHECK_FALSE(client.last_words_sent);  // not yet: they would cut into the send
  CHECK(loop->run_until([&] { return server.closed == 1; }, 200 * ms_ns) == false);  // nothing told yet
  REQUIRE_FALSE(client.closed);  // its socket waits for the send (and `held` is still there)
  const uint64_t released_at = Loop::clock_ns();
  client.held->complete_send();
  REQUIRE(loop->run_until([&] { return server.closed == 1 && client.closed; }, 5 * second_ns));
  const uint64_t took_ns = Loop::clock_ns() - released_at;
  MESSAGE("the server's session ended " << took_ns / 1000 << " us after the send completed");
  CHECK(took_ns < 2 * second_ns);
  CHECK(server.last_error == MuxError::peer_error);
  CHECK(client.close_error == MuxError::cancelled);
  CHECK(client.last_words_sent);
  CHECK(server.acceptor.sessions() == 0);
  server.shut_down();
}

// Proves the wait for a send in flight is bounded: a send that never completes (a peer
// that stopped reading) keeps the closed session's socket for dead_peer_timeout_ns (here
// 1 s, also limits::closed_send_linger_ns_max), no longer, and the last words are dropped.
TEST_CASE("resume: a closed session's send that never completes keeps its socket for dead_peer_timeout_ns") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  ConnectionOptions options;
  options.dead_peer_timeout_ns = second_ns;
  options.keepalive_interval_ns = 250 * ms_ns;
  HashServer server(*loop, options);
  HeldClient client(*loop, server.port(), options);
  REQUIRE(loop->run_until([&] { return client.connection->connected() && client.held->holds_a_send(); },
                          5 * second_ns));
  const uint64_t closed_at = Loop::clock_ns();
  client.connection->close();
  REQUIRE(loop->run_until([&] { return client.closed; }, 10 * second_ns));
  const uint64_t took_ns = Loop::clock_ns() - closed_at;
  MESSAGE("the socket closed " << took_ns / 1000 << " us after the session (bound 1 s)");
  CHECK(took_ns >= second_ns);
  CHECK(took_ns < 6 * second_ns);
  CHECK_FALSE(client.last_words_sent);
  server.shut_down();
}

// Proves a session that fails for what its peer sent, while its own send is in flight,
// ends at once (its streams finish, no resume) and still tells the peer why: the ERROR
// goes behind that send once it completes, then the socket closes; and that a send that
// never completes keeps the socket no longer than the linger bound (1 s here), the ERROR
// dropped. The peer is a raw socket that answers the dialer's HELLO (held in flight by the
// test) with a PING.
TEST_CASE("resume: a session failed by its peer with a send in flight ends at once and tells the peer after the send") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  const auto [listening, port] = test::bound_socket(4);

  ConnectionOptions options;
  options.resume_timeout_ns = 30 * second_ns;
  // Longer than every wait below: the held send never looks stuck to the keepalive.
  options.dead_peer_timeout_ns = 20 * second_ns;
  options.keepalive_interval_ns = 5 * second_ns;
  HeldClient client(*loop, port, options);
  const int peer = ::accept4(listening, nullptr, nullptr, SOCK_CLOEXEC);
  REQUIRE(peer >= 0);
  Upload upload(*client.connection, 5, 0, 1ull << 20);
  // On a failed REQUIRE too: the connection closes (and its stream finishes) before the
  // stream's observer goes, and the sockets close.
  struct Cleanup {
    Loop& loop;
    HeldClient& client;
    int peer, listening;
    ~Cleanup() {
      if (!client.connection->ended()) client.connection->close();
      loop.run_until([&] { return client.closed; }, 5 * second_ns);
      ::close(peer);
      ::close(listening);
    }
  } cleanup{*loop, client, peer, listening};
  REQUIRE(loop->run_until([&] { return client.held->holds_a_send(); }, 5 * second_ns));

  // What the peer reads, without blocking; true once the client's FIN came.
  std::vector<std::byte> received;
  auto read_available = [&] {
    std::byte chunk[4096];
    for (;;) {
      const ssize_t n = ::recv(peer, chunk, sizeof(chunk), MSG_DONTWAIT);
      if (n <= 0) return n == 0;
      received.insert(received.end(), chunk, chunk + n);
    }
  };
  // The frames the peer has read whole, by kind; the ERROR's status and stream.
  std::optional<wire::StatusCode> status;
  uint32_t error_stream = UINT32_MAX;
  auto kinds_received = [&] {
    wire::Decoder decoder;
    std::vector<wire::FrameKind> kinds;
    std::span<const std::byte> rest(received);
    while (!rest.empty()) {
      auto step = decoder.next(rest);
      REQUIRE(step);
      rest = rest.subspan(step.value().consumed);
      if (!step.value().has_frame) continue;
      kinds.push_back(step.value().frame.header.frame_kind());
      if (kinds.back() != wire::FrameKind::error) continue;
      error_stream = step.value().frame.header.stream_id;
      auto error = wire::parse_error(step.value().frame);
      REQUIRE(error);
      status = error.value().status;
      MESSAGE("the peer was told: " << error.value().message);
    }
    return kinds;
  };
  using Kinds = std::vector<wire::FrameKind>;
  REQUIRE(loop->run_until([&] { return (void)read_available(), kinds_received() == Kinds{wire::FrameKind::hello}; },
                          5 * second_ns));
  upload.start();  // its OPEN waits behind the held send

  // A well-formed frame where the HELLO_ACK must be: the session fails (a damaged byte
  // would only cost this connection: the session would resume).
  std::vector<std::byte> ping(wire::frame_bytes(8));
  ping.resize(wire::encode_ping(ping, 7));
  REQUIRE(::write(peer, ping.data(), ping.size()) == static_cast<ssize_t>(ping.size()));
  REQUIRE(loop->run_until([&] { return client.connection->ended() && upload.finished; }, 5 * second_ns));
  const uint64_t ended_at = Loop::clock_ns();
  CHECK(upload.error == MuxError::protocol_violation);
  loop->run_until([] { return false; }, 50 * ms_ns);
  (void)read_available();
  CHECK(kinds_received() == Kinds{wire::FrameKind::hello});  // nothing cut into the send
  REQUIRE_FALSE(client.closed);  // its socket waits for the send (and `held` is still there)

  bool peer_saw_fin = false;
  SUBCASE("the send completes: the ERROR follows it, then the FIN") {
    client.held->complete_send();
    REQUIRE(loop->run_until([&] { return (peer_saw_fin = read_available() || peer_saw_fin) && client.closed; },
                            5 * second_ns));
    CHECK(client.close_error == MuxError::protocol_violation);
    // Behind the HELLO: exactly one frame, the ERROR on stream 0 that says why.
    CHECK(kinds_received() == Kinds{wire::FrameKind::hello, wire::FrameKind::error});
    CHECK(error_stream == 0);
    CHECK(status == status_of(MuxError::protocol_violation));
  }
  SUBCASE("the send never completes: the socket closes after the linger bound, without the ERROR") {
    REQUIRE(loop->run_until([&] { return (peer_saw_fin = read_available() || peer_saw_fin) && client.closed; },
                            10 * second_ns));
    const uint64_t took_ns = Loop::clock_ns() - ended_at;
    MESSAGE("the socket closed " << took_ns / 1000 << " us after the session ended (bound 1 s)");
    // ended_at was read a turn after the session ended and the linger timer started.
    CHECK(took_ns >= limits::closed_send_linger_ns_max - 100 * ms_ns);
    CHECK(took_ns < 6 * second_ns);
    CHECK(kinds_received() == Kinds{wire::FrameKind::hello});
  }
}

// Proves the ACK timer: a few bytes to a receiver that sends nothing back are still
// acknowledged within limits::ack_interval_ns, so the sender releases its held batches
// instead of keeping them until some later send carries the ACK.
TEST_CASE("resume: a trickle is acknowledged by the ACK timer") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  ConnectionOptions options;
  HashServer server(*loop, options);
  Client client(*loop, server.port(), options);
  Upload upload(*client.connection, 3, 0, 1ull << 30);  // opened, then only a trickle
  auto id = client.connection->open(hash_sink, 0, bytes_of("a few bytes"), false, upload);
  REQUIRE(id.ok());
  const Session& session = client.connection->session();
  REQUIRE(loop->run_until([&] { return session.send_position() > 0 && session.held().bytes_unsent() == 0; },
                          5 * second_ns));
  const uint64_t sent_at = Loop::clock_ns();
  REQUIRE(loop->run_until([&] { return session.held().acked() == session.send_position(); }, 5 * second_ns));
  const uint64_t took_ns = Loop::clock_ns() - sent_at;
  MESSAGE("acknowledged after " << took_ns / 1000 << " us (ack_interval_ns " << limits::ack_interval_ns / 1000
                                << " us)");
  CHECK(took_ns < limits::ack_interval_ns + 50 * ms_ns);
  CHECK(session.held().batches() == 0);  // released
  client.connection->close();
  loop->run_until([&] { return client.closed; }, 5 * second_ns);
  server.shut_down();
}

namespace {

// Mutual TLS for both sides of the resume tests: a CA, the server node-b, the client
// node-a, and node-c, another member of the same CA (a legitimate identity, not the
// session's).
struct TlsSides {
  test::TestPki pki;
  std::shared_ptr<Handshake> server, client;
  mux::TlsOptions node_c;
  TlsSides() {
    pki.make_ca("ca");
    server = stage(pki.make_leaf("node-b", "ca"));
    client = stage(pki.make_leaf("node-a", "ca"));
    node_c = pki.make_leaf("node-c", "ca");
  }
  // The server's acceptor: every accepted socket passes the TLS handshake first.
  AcceptorOptions acceptor() const {
    AcceptorOptions options;
    options.handshake = server;
    return options;
  }
  static std::shared_ptr<Handshake> stage(const mux::TlsOptions& options) {
    std::string error;
    auto context = TlsContext::create(options, error);
    REQUIRE_MESSAGE(context != nullptr, error);
    return make_tls_handshake(std::move(context));
  }
};

// A transport the test can break (its handler hears a reset), and that can lose the first
// bytes it receives: on a dialer's first connection those are the HELLO_ACK.
class Breakable final : public Transport, private TransportHandler {
 public:
  Breakable(std::unique_ptr<Transport> inner, bool lose_first_answer)
      : inner_(std::move(inner)), lose_first_answer_(lose_first_answer) {}
  void break_now() noexcept {
    if (broken_ || handler_ == nullptr) return;
    broken_ = true;
    handler_->on_transport_error(engine::IoError::reset);
  }

  void start(TransportHandler& handler) noexcept override {
    const bool started = handler_ != nullptr;
    handler_ = &handler;
    if (!started) inner_->start(*this);
  }
  void send(std::span<const std::byte> a, std::span<const std::byte> b, std::span<const std::byte> c) noexcept override {
    inner_->send(a, b, c);
  }
  bool send_in_flight() const noexcept override { return inner_->send_in_flight(); }
  bool usable() const noexcept override { return !broken_ && inner_->usable(); }
  void send_last(std::span<const std::byte> bytes) noexcept override { inner_->send_last(bytes); }
  void close() noexcept override { inner_->close(); }
  std::string peer_identity() const override { return inner_->peer_identity(); }
  bool export_secret(std::string_view label, std::span<std::byte> out) const noexcept override {
    return inner_->export_secret(label, out);
  }
  bool authenticates_bytes() const noexcept override { return inner_->authenticates_bytes(); }

 private:
  void on_transport_recv(std::span<const std::byte> bytes) noexcept override {
    if (broken_) return;
    if (lose_first_answer_) {
      lose_first_answer_ = false;
      break_now();
      return;
    }
    handler_->on_transport_recv(bytes);
  }
  void on_transport_sent() noexcept override {
    if (!broken_) handler_->on_transport_sent();
  }
  void on_transport_error(engine::IoError error) noexcept override {
    if (broken_) return;
    broken_ = true;
    handler_->on_transport_error(error);
  }
  void on_transport_closed() noexcept override { handler_->on_transport_closed(); }

  std::unique_ptr<Transport> inner_;
  TransportHandler* handler_ = nullptr;
  bool lose_first_answer_;
  bool broken_ = false;
};

// A handshake stage over `inner` whose transports are Breakable; the first one loses the
// HELLO_ACK.
struct LoseFirstAnswer final : Handshake {
  explicit LoseFirstAnswer(std::shared_ptr<Handshake> inner_stage) : inner(std::move(inner_stage)) {}
  std::unique_ptr<Transport> wrap(Loop& loop, std::unique_ptr<Transport> raw, bool dialer) override {
    auto transport = std::make_unique<Breakable>(inner->wrap(loop, std::move(raw), dialer), transports == 0);
    transports++;
    current = transport.get();
    return transport;
  }
  std::shared_ptr<Handshake> inner;
  int transports = 0;
  Breakable* current = nullptr;  // the latest: valid while the client is connected on it
};

// A resume HELLO for someone else's session, sent over a TLS connection of `identity` by
// a blocking OpenSSL client on its own thread; `status` is the HELLO_ACK's (or nullopt:
// none came). `proof`: a made-up proof, or none.
struct StolenResume {
  StolenResume(Loop& loop, uint16_t port, const mux::TlsOptions& identity, const wire::Hello& hello) {
    thread = std::thread([&loop, port, identity, hello, this] {
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      const engine::Address address = engine::Address::loopback_v4(port);
      timeval timeout{10, 0};  // bounded: a server that never answers fails the test
      (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
      SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
      SSL_CTX_use_certificate_chain_file(ctx, identity.cert_file.c_str());
      SSL_CTX_use_PrivateKey_file(ctx, identity.key_file.c_str(), SSL_FILETYPE_PEM);
      SSL_CTX_load_verify_locations(ctx, identity.ca_file.c_str(), nullptr);
      SSL* ssl = SSL_new(ctx);
      SSL_set_fd(ssl, fd);
      if (::connect(fd, address.sockaddr_ptr(), address.length) == 0 && SSL_connect(ssl) == 1) {
        std::vector<std::byte> frame(wire::frame_bytes(wire::hello_payload_size(hello)));
        const std::size_t size = wire::encode_hello(frame, hello);
        if (SSL_write(ssl, frame.data(), static_cast<int>(size)) > 0) {
          wire::Decoder decoder;
          std::array<std::byte, 256> in{};
          int got = 0;
          while (!status && (got = SSL_read(ssl, in.data(), static_cast<int>(in.size()))) > 0) {
            auto step = decoder.next(std::span<const std::byte>(in.data(), static_cast<std::size_t>(got)));
            if (step && step->has_frame && step->frame.header.frame_kind() == wire::FrameKind::hello_ack) {
              if (auto ack = wire::parse_hello_ack(step->frame)) status = ack->status;
            }
          }
        }
      }
      SSL_free(ssl);
      SSL_CTX_free(ctx);
      ::close(fd);
      done = true;
      loop.post_fn([] {});  // wakes the loop's run_until to see `done`
    });
  }
  ~StolenResume() { thread.join(); }
  std::thread thread;
  std::atomic<bool> done{false};
  std::optional<wire::StatusCode> status;  // read once `done`
};

}  // namespace

// Proves the session over mutual TLS resumes like one over TCP: through a proxy that resets
// every connection every 50 ms, streams deliver every byte once and in order and every call
// completes, each resume passing a new TLS handshake and proving the session's secret.
TEST_CASE("resume over TLS: streams and calls through resets, nothing lost") {
  const uint64_t seed = test::test_seed("resume over TLS");
  const uint64_t total_bytes = sanitized ? (16ull << 20) : (256ull << 20);
  auto loop = test::make_test_loop();
  if (!loop) return;
  TlsSides tls;
  HashServer server(*loop, ConnectionOptions{}, 0, tls.acceptor());
  chaos::ProxyOptions proxy_options = proxy_to(server.port(), seed);
  proxy_options.faults.reset_every_ns = 50 * ms_ns;
  std::string error;
  auto proxy = chaos::Proxy::start(proxy_options, error);
  REQUIRE_MESSAGE(proxy != nullptr, error);
  {
    ConnectionOptions options;
    options.handshake = tls.client;
    Client client(*loop, proxy->port(), options);
    std::vector<std::unique_ptr<Upload>> uploads;
    for (int i = 0; i < 4; i++) {
      uploads.push_back(std::make_unique<Upload>(*client.connection, seed, i, total_bytes / 4));
      uploads.back()->start();
    }
    Calls unary(*client.connection, seed, 2000, 16);
    unary.pump();
    REQUIRE(loop->run_until(
        [&] {
          if (client.closed) return true;
          for (auto& upload : uploads) {
            if (!upload->finished) return false;
          }
          return unary.done == unary.total;
        },
        (sanitized ? 600 : 300) * second_ns));
    CHECK_FALSE(client.closed);
    for (auto& upload : uploads) CHECK(upload->verified());
    CHECK(unary.errors == 0);
    CHECK(unary.mismatches == 0);
    const ResumeStats stats = client.connection->resume_stats();
    MESSAGE("resets " << proxy->stats().resets << ", resumes " << stats.resumes << ", bytes replayed "
                      << stats.bytes_replayed << ", the session "
                      << std::string(client.closed ? describe(client.close_error) : "open"));
    CHECK(stats.resumes > 0);
    REQUIRE(server.connections.size() == 1);
    CHECK(server.acceptor.stats().resumes == server.connections[0]->resume_stats().resumes);
    CHECK(server.acceptor.stats().refused == 0);
  }
  proxy->stop();
  server.shut_down();
}

// Proves a session id alone resumes nothing over TLS: a resume of a live session sent by
// another member of the same CA, and one by a holder of the session's own client
// certificate, neither with a valid proof of the session's secret, are both refused with
// resume_unauthenticated, and the session they named goes on untouched (calls complete,
// no resume happened).
TEST_CASE("resume over TLS: a stolen session id is refused with resume_unauthenticated; the session goes on") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  TlsSides tls;
  HashServer server(*loop, ConnectionOptions{}, 0, tls.acceptor());
  {
    ConnectionOptions options;
    options.handshake = tls.client;
    Client client(*loop, server.port(), options);
    Calls before(*client.connection, 1, 10, 4);
    before.pump();
    REQUIRE(loop->run_until([&] { return before.done == before.total; }, 10 * second_ns));
    REQUIRE(before.errors == 0);

    wire::Hello stolen;
    stolen.session_id = client.connection->session().session_id();
    stolen.generation = client.connection->session().generation() + 1;
    stolen.stream_window_bytes = 256 * 1024;
    stolen.connection_window_bytes = 8 * 1024 * 1024;
    // A RESUME, and a new-session HELLO (what a dialer that never got our first HELLO_ACK
    // sends: this dialer did get it, it acknowledged our bytes).
    for (const uint32_t flags : {wire::hello_flag_resume, uint32_t{0}}) {
      stolen.hello_flags = flags;
      for (const bool with_made_up_proof : {false, true}) {
        stolen.has_resume_proof = with_made_up_proof;
        stolen.resume_proof.fill(std::byte{0x5a});
        for (const mux::TlsOptions& identity : {tls.node_c, tls.pki.options("node-a", "ca")}) {
          CAPTURE(identity.cert_file);
          CAPTURE(with_made_up_proof);
          CAPTURE(flags);
          StolenResume thief(*loop, server.port(), identity, stolen);
          REQUIRE(loop->run_until([&] { return thief.done.load(); }, 15 * second_ns));
          REQUIRE(thief.status.has_value());
          CHECK(*thief.status == wire::StatusCode::resume_unauthenticated);
        }
      }
    }
    CHECK(server.acceptor.stats().refused == 8);
    Calls after(*client.connection, 2, 10, 4);
    after.pump();
    REQUIRE(loop->run_until([&] { return after.done == after.total; }, 10 * second_ns));
    CHECK(after.errors == 0);
    CHECK_FALSE(client.closed);
    CHECK(client.connection->resume_stats().resumes == 0);
    REQUIRE(server.connections.size() == 1);
    CHECK(server.connections[0]->resume_stats().resumes == 0);
  }
  server.shut_down();
}

// Proves the unconfirmed window closes without any byte from the acceptor: a TLS session
// whose server has sent nothing but its HELLO_ACK is confirmed by the dialer's first ACK,
// and then a new-session HELLO for it, with no proof, sent over a TLS connection with the
// session's own client certificate, is refused with resume_unauthenticated; the session
// goes on. (Before the dialer sent that ACK, this session stayed open to such a HELLO.)
TEST_CASE("resume over TLS: an idle session refuses a proofless new-session HELLO from its own certificate") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  TlsSides tls;
  HashServer server(*loop, ConnectionOptions{}, 0, tls.acceptor());
  {
    ConnectionOptions options;
    options.handshake = tls.client;
    Client client(*loop, server.port(), options);
    REQUIRE(loop->run_until([&] {
      return client.connection->connected() && server.connections.size() == 1 &&
             server.connections[0]->session().dialer_confirmed();
    }, 10 * second_ns));
    const Session& served = server.connections[0]->session();
    CHECK(served.has_resume_key());
    CHECK(served.send_position() == 0);  // the acceptor has sent no byte
    wire::Hello stolen;
    stolen.session_id = client.connection->session().session_id();
    stolen.generation = client.connection->session().generation() + 1;
    stolen.stream_window_bytes = 256 * 1024;
    stolen.connection_window_bytes = 8 * 1024 * 1024;
    {
      StolenResume thief(*loop, server.port(), tls.pki.options("node-a", "ca"), stolen);
      REQUIRE(loop->run_until([&] { return thief.done.load(); }, 15 * second_ns));
      REQUIRE(thief.status.has_value());
      CHECK(*thief.status == wire::StatusCode::resume_unauthenticated);
    }
    CHECK(server.acceptor.stats().refused == 1);
    Calls after(*client.connection, 3, 10, 4);
    after.pump();
    REQUIRE(loop->run_until([&] { return after.done == after.total; }, 10 * second_ns));
    CHECK(after.errors == 0);
    CHECK(client.connection->resume_stats().resumes == 0);
    CHECK(server.connections.size() == 1);
  }
  server.shut_down();
}

// Proves a dialer whose first HELLO_ACK was lost (the connection broke after the acceptor
// had made the session and bound its resume key) gets the same session on its next
// connection, which both sides bind the key to; a later break then resumes with a proof of
// that key. Before this rule such a dialer was refused (resume_unauthenticated) forever.
TEST_CASE("resume over TLS: a dialer that lost the first HELLO_ACK gets its session, then resumes with a proof") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  TlsSides tls;
  HashServer server(*loop, ConnectionOptions{}, 0, tls.acceptor());
  {
    auto stage = std::make_shared<LoseFirstAnswer>(tls.client);
    ConnectionOptions options;
    options.handshake = stage;
    Client client(*loop, server.port(), options);
    Calls first(*client.connection, 1, 20, 4);
    first.pump();
    REQUIRE(loop->run_until([&] { return first.done == first.total || client.closed; }, 20 * second_ns));
    CHECK_FALSE(client.closed);
    CHECK(first.errors == 0);
    CHECK(stage->transports >= 2);  // the first lost its answer
    CHECK(server.acceptor.stats().refused == 0);
    REQUIRE(server.connections.size() == 1);  // the same session, not a second one
    CHECK(client.connection->session().has_resume_key());
    CHECK(server.connections[0]->session().has_resume_key());

    REQUIRE(client.connection->connected());
    const int before = stage->transports;
    stage->current->break_now();
    Calls second(*client.connection, 2, 20, 4);
    second.pump();
    REQUIRE(loop->run_until([&] { return second.done == second.total || client.closed; }, 20 * second_ns));
    CHECK_FALSE(client.closed);
    CHECK(second.errors == 0);
    CHECK(stage->transports > before);
    CHECK(client.connection->resume_stats().resumes >= 1);
    CHECK(server.acceptor.stats().refused == 0);
    CHECK(server.connections.size() == 1);
  }
  server.shut_down();
}
