// Sessions that survive broken connections: resume through the chaos proxy (resets, cuts,
// slicing, corruption, a black hole), a peer that restarted, and the refusals.
#include <doctest/doctest.h>

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/socket.h"
#include "mux/acceptor.h"
#include "mux/connection.h"
#include "tests/support.h"
#include "tools/chaos/proxy.h"

using namespace ringmux;
using namespace ringmux::mux;
using engine::Loop;

namespace {

constexpr uint64_t ms_ns = 1'000'000;
constexpr uint64_t second_ns = 1000 * ms_ns;
constexpr uint32_t echo_unary = 1;
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

// The accepting side: a listener, the acceptor (session table) and the connections.
struct Server final : engine::ListenerHandler, ConnectionObserver {
  Server(Loop& loop_ref, ConnectionOptions options_ref, uint16_t port = 0)
      : loop(loop_ref), options(options_ref), listener(loop_ref, *this),
        acceptor(loop_ref, [this](int fd) {
          connections.push_back(std::make_unique<Connection>(loop, fd, false, &registry, *this, options));
          return connections.back().get();
        }) {
    options.resume = true;
    registry.add_unary(echo_unary, [](std::span<const std::byte> request, std::shared_ptr<Responder> responder) {
      responder->reply(request);
    });
    registry.add_stream(hash_sink, [](const StreamStart& start) { return new HashSink(start); });
    REQUIRE(listener.listen(engine::Address::loopback_v4(port)).ok());
  }
  // Closes everything and waits for it (bounded).
  void shut_down() {
    for (auto& connection : connections) {
      if (!connection->closed()) connection->close(MuxError::cancelled);
    }
    acceptor.close();
    listener.close();
    CHECK(loop.run_until([&] { return closed == connections.size() && listener_closed && acceptor.idle(); },
                         5 * second_ns));
  }
  void on_accept(int fd) noexcept override { acceptor.accept(fd); }
  void on_accept_error(engine::IoError) noexcept override {}
  void on_listener_closed() noexcept override { listener_closed = true; }
  void on_connection_closed(Connection&, MuxError error, engine::IoError) noexcept override {
    closed++;
    last_error = error;
  }
  uint16_t port() const { return listener.address().port(); }

  Loop& loop;
  ConnectionOptions options;
  Registry registry;
  engine::Listener listener;
  Acceptor acceptor;
  std::vector<std::unique_ptr<Connection>> connections;
  std::size_t closed = 0;
  bool listener_closed = false;
  MuxError last_error = MuxError::none;
};

// The dialing side: one resumable connection to `port`.
struct Client final : engine::ConnectHandler, ConnectionObserver {
  Client(Loop& loop_ref, uint16_t port, ConnectionOptions options_ref) : loop(loop_ref), connector(loop_ref, *this) {
    options = options_ref;
    options.resume = true;
    options.peer = engine::Address::loopback_v4(port);
    connector.connect(options.peer);
    REQUIRE(loop.run_until([&] { return connection != nullptr || failed; }, 5 * second_ns));
    REQUIRE(connection != nullptr);
  }
  ~Client() {
    if (connection && !connection->closed()) connection->close();
    loop.run_until([&] { return closed; }, 5 * second_ns);
  }
  void on_connect(Result<int, engine::IoError> fd) noexcept override {
    if (!fd) {
      failed = true;
      return;
    }
    connection = std::make_unique<Connection>(loop, fd.value(), true, nullptr, *this, options);
    connection->start();
  }
  void on_connection_closed(Connection&, MuxError error, engine::IoError) noexcept override {
    closed = true;
    close_error = error;
  }

  Loop& loop;
  ConnectionOptions options;
  engine::Connector connector;
  std::unique_ptr<Connection> connection;
  bool failed = false;
  bool closed = false;
  MuxError close_error = MuxError::none;
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
      connection.call(echo_unary, request, 0, [this, index](const CallResult& result) {
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
  Server server(*loop, options);
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
    CHECK(unary.errors == 0);
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
