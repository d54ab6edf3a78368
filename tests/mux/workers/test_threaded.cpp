// Application threads against a connection that lives on an engine loop: blocking and
// asynchronous unary calls from several threads, and a stream read by a worker thread
// through its slot ring with credit flowing back. Run under ThreadSanitizer by .ci/run.
#include "ringmux/mux/workers/threaded.h"

#include <doctest/doctest.h>

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>

#include <atomic>
#include <cstring>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "ringmux/engine/engine.h"
#include "ringmux/engine/socket.h"
#include "ringmux/mux/rpc/registry.h"
#include "tests/support.h"

using namespace ringmux;
using namespace ringmux::mux;
using engine::Loop;

namespace {

constexpr uint32_t echo_unary = 1;
constexpr uint32_t echo_stream = 2;
constexpr uint32_t counting_sink = 3;

// Everything that lives on the loop: a listener with server connections, one client.
struct LoopSide final : engine::ListenerHandler, engine::ConnectHandler, ConnectionObserver {
  explicit LoopSide(Loop& l, const ConnectionOptions& options) : loop(l), listener(l, *this), connector(l, *this), options_(options) {
    registry.add_unary(echo_unary, [](std::span<const std::byte> request, std::shared_ptr<Responder> responder) {
      responder->reply(request);
    });
    // A stream handler that sends `total` bytes of a counter pattern, then ends.
    registry.add_stream(echo_stream, [](const StreamStart& start) -> StreamObserver* {
      struct Source final : StreamObserver {
        Connection* connection;
        StreamId id;
        std::vector<std::byte> data;
        std::size_t sent = 0;
        void pump() {
          while (sent < data.size()) {
            auto taken = connection->write(id, std::span<const std::byte>(data).subspan(sent), true);
            if (!taken || taken.value() == 0) return;
            sent += taken.value();
          }
        }
        void on_stream_data(std::span<const std::byte> bytes, bool) noexcept override {
          connection->consume(id, bytes.size());
        }
        void on_stream_writable() noexcept override { pump(); }
        void on_stream_finished(MuxError) noexcept override {}
      };
      auto* source = new Source();
      source->connection = start.connection;
      source->id = start.id;
      uint64_t total = 0;
      std::memcpy(&total, start.payload.data(), sizeof(total));
      source->data.resize(total);
      for (std::size_t i = 0; i < total; i++) source->data[i] = static_cast<std::byte>(i * 131 + (i >> 12));
      source->pump();
      return source;
    });
    // A sink that counts bytes, answers the count when the client ends, and can stall.
    registry.add_stream(counting_sink, [this](const StreamStart& start) -> StreamObserver* {
      struct Sink final : StreamObserver {
        LoopSide* side;
        Connection* connection;
        StreamId id;
        uint64_t count = 0;
        void on_stream_data(std::span<const std::byte> bytes, bool end) noexcept override {
          if (side->sink_stalls) return;
          connection->consume(id, bytes.size());
          count += bytes.size();
          if (end) {
            std::byte answer[sizeof(count)];
            std::memcpy(answer, &count, sizeof(count));
            (void)connection->write(id, answer, true);
          }
        }
        void on_stream_finished(MuxError) noexcept override {}
      };
      auto* sink = new Sink();
      sink->side = this;
      sink->connection = start.connection;
      sink->id = start.id;
      return sink;
    });
    REQUIRE(listener.listen(engine::Address::loopback_v4(0)).ok());
    connector.connect(listener.address());
  }
  bool sink_stalls = false;
  void on_accept(int fd) noexcept override {
    servers.push_back(std::make_unique<Connection>(loop, fd, false, &registry, *this, options_));
    servers.back()->start();
  }
  void on_accept_error(engine::IoError) noexcept override {}
  void on_listener_closed() noexcept override { listener_closed = true; }
  void on_connect(Result<int, engine::IoError> fd) noexcept override {
    REQUIRE(fd.ok());
    client = std::make_unique<Connection>(loop, fd.value(), true, nullptr, *this, options_);
    client->start();
    ready.store(true);
  }
  void on_connection_closed(Connection&, MuxError, engine::IoError) noexcept override { closed++; }
  void shut() {
    client->close();
    for (auto& s : servers) s->close();
    listener.close();
  }
  bool done() const { return closed == 1 + servers.size() && listener_closed; }

  Loop& loop;
  Registry registry;
  engine::Listener listener;
  engine::Connector connector;
  ConnectionOptions options_;
  std::unique_ptr<Connection> client;
  std::vector<std::unique_ptr<Connection>> servers;
  std::atomic<bool> ready{false};
  std::size_t closed = 0;
  bool listener_closed = false;
};

// Runs `fn` on the loop thread and waits for it.
template <typename F>
void on_loop(engine::Engine& engine, F&& fn) {
  std::promise<void> done;
  engine.post(0, [&] {
    fn();
    done.set_value();
  });
  done.get_future().get();
}

struct Harness {
  explicit Harness(ConnectionOptions options = {}) {
    engine::EngineOptions engine_options;
    auto started = engine::Engine::start(engine_options);
    REQUIRE(started.ok());
    engine = std::move(started).value();
    on_loop(*engine, [&] { side = std::make_unique<LoopSide>(engine->loop(0), options); });
    for (int i = 0; i < 5000 && !side->ready.load(); i++) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    REQUIRE(side->ready.load());
  }
  ~Harness() {
    on_loop(*engine, [&] { side->shut(); });
    for (int i = 0; i < 5000; i++) {
      bool done = false;
      on_loop(*engine, [&] { done = side->done(); });
      if (done) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    on_loop(*engine, [&] { side.reset(); });
    engine->stop();
  }
  std::unique_ptr<engine::Engine> engine;
  std::unique_ptr<LoopSide> side;
};

}  // namespace

// Proves blocking calls from 4 threads at once each get their own response, and async
// calls complete too; the connection is only ever touched on its loop.
TEST_CASE("threaded: blocking and async unary calls from 4 threads") {
  Harness h;
  RemoteCaller caller(*h.side->client);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; i++) {
        const int tag = t * 100000 + i;
        std::byte request[sizeof(tag)];
        std::memcpy(request, &tag, sizeof(tag));
        CallOutcome outcome = caller.call(echo_unary, request, Loop::clock_ns() + 10'000'000'000ull);
        int echoed = -1;
        if (outcome.error == MuxError::none && outcome.response.size() == sizeof(tag)) {
          std::memcpy(&echoed, outcome.response.data(), sizeof(echoed));
        }
        if (echoed != tag) wrong.fetch_add(1);
      }
    });
  }
  std::atomic<int> async_done{0};
  for (int i = 0; i < 1000; i++) {
    caller.call_async(echo_unary, std::vector<std::byte>(16, std::byte{1}), 0, [&](const CallResult& r) {
      if (r.error == MuxError::none && r.response.size() == 16) async_done.fetch_add(1);
    });
  }
  for (auto& thread : threads) thread.join();
  for (int i = 0; i < 10000 && async_done.load() < 1000; i++) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  CHECK(wrong.load() == 0);
  CHECK(async_done.load() == 1000);
}

// Proves a worker thread can read a stream through its slot ring: 8 MiB through a
// 64 KiB window, every byte in order, credit returned by the worker's releases.
TEST_CASE("threaded: a worker thread reads a stream through its slot ring") {
  ConnectionOptions options;
  options.session.stream_window_bytes = 64 * 1024;
  options.session.stream_window_bytes_max = 64 * 1024;
  Harness h(options);
  constexpr uint64_t total = 8u << 20;
  std::unique_ptr<WorkerStream> queue;
  on_loop(*h.engine, [&] {
    queue = std::make_unique<WorkerStream>(*h.side->client, 16);
    std::byte request[sizeof(total)];
    std::memcpy(request, &total, sizeof(total));
    auto id = h.side->client->open(echo_stream, 0, request, true, *queue);
    REQUIRE(id.ok());
    queue->set_stream(id.value());
  });
  uint64_t received = 0;
  uint64_t mismatches = 0;
  bool finished = false;
  MuxError error = MuxError::cancelled;
  while (!finished) {
    const WorkerStream::Message* message = queue->acquire(10'000'000'000ull);
    REQUIRE(message != nullptr);
    for (std::size_t i = 0; i < message->bytes.size(); i++) {
      const uint64_t at = received + i;
      if (message->bytes[i] != static_cast<std::byte>(at * 131 + (at >> 12))) mismatches++;
    }
    received += message->bytes.size();
    if (message->finished) {
      finished = true;
      error = message->error;
    }
    queue->release();
  }
  CHECK(received == total);
  CHECK(mismatches == 0);
  CHECK(error == MuxError::none);
  on_loop(*h.engine, [&] { queue.reset(); });
}

// Proves a worker thread can write a stream with blocking writes under flow control
// (16 MiB through a 64 KiB window), and gets the server's byte count back.
TEST_CASE("threaded: a worker thread writes a stream with blocking writes") {
  ConnectionOptions options;
  options.session.stream_window_bytes = 64 * 1024;
  options.session.stream_window_bytes_max = 64 * 1024;
  Harness h(options);
  std::unique_ptr<WorkerStream> stream;
  on_loop(*h.engine, [&] {
    stream = std::make_unique<WorkerStream>(*h.side->client, 16);
    auto id = h.side->client->open(counting_sink, 0, {}, false, *stream);
    REQUIRE(id.ok());
    stream->set_stream(id.value());
  });
  std::vector<std::byte> block(1 << 20, std::byte{0x33});
  for (int i = 0; i < 16; i++) {
    auto written = stream->write(block, i == 15, Loop::clock_ns() + 10'000'000'000ull);
    REQUIRE(written.ok());
  }
  uint64_t count = 0;
  bool finished = false;
  while (!finished) {
    const WorkerStream::Message* message = stream->acquire(10'000'000'000ull);
    REQUIRE(message != nullptr);
    if (message->bytes.size() == sizeof(count)) std::memcpy(&count, message->bytes.data(), sizeof(count));
    finished = message->finished;
    if (finished) CHECK(message->error == MuxError::none);
    stream->release();
  }
  CHECK(count == 16u << 20);
  on_loop(*h.engine, [&] { stream.reset(); });
}

// Proves a blocking write against a peer that stopped reading fails at its deadline
// (and resets the stream) instead of hanging.
TEST_CASE("threaded: a blocking write to a stalled peer fails at its deadline") {
  ConnectionOptions options;
  options.session.stream_window_bytes = 64 * 1024;
  options.session.stream_window_bytes_max = 64 * 1024;
  Harness h(options);
  std::unique_ptr<WorkerStream> stream;
  on_loop(*h.engine, [&] {
    h.side->sink_stalls = true;
    stream = std::make_unique<WorkerStream>(*h.side->client, 16);
    auto id = h.side->client->open(counting_sink, 0, {}, false, *stream);
    REQUIRE(id.ok());
    stream->set_stream(id.value());
  });
  std::vector<std::byte> block(1 << 20, std::byte{0x44});
  const uint64_t start = Loop::clock_ns();
  auto written = stream->write(block, false, start + 200'000'000);
  const uint64_t elapsed = Loop::clock_ns() - start;
  REQUIRE(!written.ok());
  CHECK(written.error() == MuxError::deadline_exceeded);
  CHECK(elapsed >= 190'000'000);
  CHECK(elapsed < 2'000'000'000);
  // The stream was reset: the worker sees it finish with that error.
  const WorkerStream::Message* message = stream->acquire(5'000'000'000ull);
  REQUIRE(message != nullptr);
  CHECK(message->finished);
  CHECK(message->error == MuxError::deadline_exceeded);
  stream->release();
  on_loop(*h.engine, [&] { stream.reset(); });
}
