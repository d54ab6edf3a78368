// The loopback fixture of the application-thread tests: an Engine with one loop, on it a
// listener whose connections serve the handlers below, and one client connection. The
// test's own threads play the application: they reach the loop only through the APIs
// under test (and on_loop() for set-up).
#pragma once

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "ringmux/engine/engine.h"
#include "ringmux/engine/socket.h"
#include "ringmux/mux/rpc/registry.h"
#include "ringmux/mux/workers/threaded.h"

namespace ringmux::mux::threaded_test {

using engine::Loop;

constexpr uint32_t echo_unary = 1;     // answers the request
constexpr uint32_t source_stream = 2;  // sends `total` (an 8-byte payload) bytes of pattern_byte(), then ends
constexpr uint32_t counting_sink = 3;  // counts; answers the count when the client ends; can stall
constexpr uint32_t echo_stream = 4;    // writes back what it receives; ends when the client does
constexpr uint32_t worker_served = 5;  // WorkerStream::serve: the stream goes to LoopSide::on_served

// The bytes the source sends: position-dependent, so a lost, repeated or reordered byte shows.
inline std::byte pattern_byte(uint64_t at) { return static_cast<std::byte>(at * 131 + (at >> 12)); }

// Everything that lives on the loop: a listener with server connections, one client.
struct LoopSide final : engine::ListenerHandler, engine::ConnectHandler, ConnectionObserver {
  LoopSide(Loop& l, const ConnectionOptions& options) : loop(l), listener(l, *this), connector(l, *this), options_(options) {
    registry.add_unary(echo_unary, [](std::span<const std::byte> request, std::shared_ptr<Responder> responder) {
      responder->reply(request);
    });
    registry.add_stream(source_stream, [](const StreamStart& start) -> StreamObserver* {
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
      for (std::size_t i = 0; i < total; i++) source->data[i] = pattern_byte(i);
      source->pump();
      return source;
    });
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
        void on_stream_finished(MuxError error) noexcept override { side->sink_finished.store(static_cast<int>(error)); }
      };
      auto* sink = new Sink();
      sink->side = this;
      sink->connection = start.connection;
      sink->id = start.id;
      return sink;
    });
    registry.add_stream(echo_stream, [](const StreamStart& start) -> StreamObserver* {
      struct Echo final : StreamObserver {
        Connection* connection;
        StreamId id;
        std::vector<std::byte> rest;  // what the window did not take yet
        bool end = false;
        void pump() {
          if (rest.empty() && !end) return;
          auto taken = connection->write(id, rest, end);
          if (!taken) return;
          rest.erase(rest.begin(), rest.begin() + static_cast<std::ptrdiff_t>(taken.value()));
          if (rest.empty()) end = false;  // the END went with the last bytes
        }
        void on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept override {
          connection->consume(id, bytes.size());
          rest.insert(rest.end(), bytes.begin(), bytes.end());
          end = end || end_stream;
          pump();
        }
        void on_stream_writable() noexcept override { pump(); }
        void on_stream_finished(MuxError) noexcept override {}
      };
      auto* echo = new Echo();
      echo->connection = start.connection;
      echo->id = start.id;
      return echo;  // the connection delivers the OPEN's payload to it next
    });
    registry.add_stream(worker_served, [this](const StreamStart& start) -> StreamObserver* {
      WorkerStream::Served served = WorkerStream::serve(start, served_options);
      if (on_served) on_served(std::move(served.stream));
      return served.observer;
    });
    REQUIRE(listener.listen(engine::Address::loopback_v4(0)).ok());
    connector.connect(listener.address());
  }
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
  bool sink_stalls = false;  // the counting sink stops reading (and returning credit)
  std::atomic<int> sink_finished{-1};  // the counting sink's end (a MuxError), -1 before
  // worker_served: the options of served streams and who gets them (loop thread).
  WorkerStreamOptions served_options;
  std::function<void(std::shared_ptr<WorkerStream>)> on_served;
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
  // Opens a worker stream on the client connection (on the loop), REQUIREd to succeed.
  std::shared_ptr<WorkerStream> open(uint32_t handler_id, std::span<const std::byte> payload, bool end_stream,
                                     const WorkerStreamOptions& options = {}) {
    std::shared_ptr<WorkerStream> stream;
    on_loop(*engine, [&] {
      auto opened = WorkerStream::open(*side->client, handler_id, 0, payload, end_stream, options);
      REQUIRE(opened.ok());
      stream = std::move(opened).value();
    });
    return stream;
  }
  std::unique_ptr<engine::Engine> engine;
  std::unique_ptr<LoopSide> side;
};

}  // namespace ringmux::mux::threaded_test
