// mux_bench: first figures of the multiplexing layer, before the load generator exists.
//
// Client connection on a loop pinned to CPU 0, server connection on an engine loop pinned
// to CPU 1, 127.0.0.1. Workloads (shared/WORKLOADS.md naming):
//   W1  unary ping-pong, 64 B each way, one call in flight
//   W2  unary, 64 calls in flight, 64 B each way
//   W3  one stream, 64 KiB writes back to back, server consumes and counts; the bytes
//       count only when the server's final count (returned at the end) matches
// Run: build/perf/mux_bench [seconds]   (default 2 s per workload after 0.5 s warm-up)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "engine/socket.h"
#include "mux/connection.h"
#include "tools/latency.h"

using namespace ringmux;
using engine::Loop;

namespace {

constexpr uint32_t echo_id = 1;
constexpr uint32_t sink_id = 2;

// Server: unary echo and a counting sink, on the engine's loop.
struct Server final : engine::ListenerHandler, mux::ConnectionObserver {
  explicit Server(Loop& l) : loop(l), listener(l, *this) {
    registry.add_unary(echo_id, [](std::span<const std::byte> request, std::shared_ptr<mux::Responder> responder) {
      responder->reply(request);
    });
    registry.add_stream(sink_id, [](const mux::StreamStart& start) -> mux::StreamObserver* {
      struct Sink final : mux::StreamObserver {
        mux::Connection* connection;
        mux::StreamId id;
        uint64_t count = 0;
        void on_stream_data(std::span<const std::byte> bytes, bool end) noexcept override {
          connection->consume(id, bytes.size());
          count += bytes.size();
          if (end) {
            std::byte answer[sizeof(count)];
            std::memcpy(answer, &count, sizeof(count));
            (void)connection->write(id, answer, true);
          }
        }
        void on_stream_finished(mux::MuxError) noexcept override {}
      };
      auto* sink = new Sink();
      sink->connection = start.connection;
      sink->id = start.id;
      return sink;
    });
  }
  void on_accept(int fd) noexcept override {
    connections.push_back(std::make_unique<mux::Connection>(loop, fd, false, &registry, *this));
    connections.back()->start();
  }
  void on_accept_error(engine::IoError) noexcept override {}
  void on_listener_closed() noexcept override { listener_closed = true; }
  void on_connection_closed(mux::Connection&, mux::MuxError, engine::IoError) noexcept override { closed++; }
  bool listener_closed = false;
  Loop& loop;
  mux::Registry registry;
  engine::Listener listener;
  std::vector<std::unique_ptr<mux::Connection>> connections;
  std::size_t closed = 0;
};

struct Client final : engine::ConnectHandler, mux::ConnectionObserver {
  explicit Client(Loop& l) : loop(l), connector(l, *this) {}
  void on_connect(Result<int, engine::IoError> fd) noexcept override {
    if (!fd) std::abort();
    connection = std::make_unique<mux::Connection>(loop, fd.value(), true, nullptr, *this);
    connection->start();
  }
  void on_connection_closed(mux::Connection&, mux::MuxError, engine::IoError) noexcept override { closed = true; }
  Loop& loop;
  engine::Connector connector;
  std::unique_ptr<mux::Connection> connection;
  bool closed = false;
};

void unary(Client& client, int depth, double seconds, const char* name) {
  const uint64_t start = Loop::clock_ns();
  const uint64_t measure_from = start + 500'000'000;
  const uint64_t measure_until = measure_from + static_cast<uint64_t>(seconds * 1e9);
  tools::LatencySamples samples;
  samples.reserve(static_cast<std::size_t>(seconds * 3e6));
  std::vector<std::byte> request(64, std::byte{7});
  int in_flight = 0;
  bool stop = false;
  std::function<void()> issue = [&] {
    const uint64_t issued = Loop::clock_ns();
    in_flight++;
    client.connection->call(echo_id, request, 0, [&, issued](const mux::CallResult& r) {
      in_flight--;
      const uint64_t now = Loop::clock_ns();
      if (r.error != mux::MuxError::none) std::abort();
      if (now >= measure_from && now < measure_until) samples.add(now - issued);
      if (now >= measure_until) stop = true;
      if (!stop) issue();
    });
  };
  for (int i = 0; i < depth; i++) issue();
  client.loop.run_until([&] { return stop && in_flight == 0; }, static_cast<uint64_t>((seconds + 30) * 1e9));
  std::printf("| %s | %.0f calls/s | p50 %.1f us | p99 %.1f us | p99.9 %.1f us | batches sent %llu |\n", name,
              static_cast<double>(samples.count()) / seconds, static_cast<double>(samples.percentile_ns(50)) / 1e3,
              static_cast<double>(samples.percentile_ns(99)) / 1e3, static_cast<double>(samples.percentile_ns(99.9)) / 1e3,
              static_cast<unsigned long long>(client.connection->batches_sent()));
}

void bulk(Client& client, double seconds) {
  struct Writer final : mux::StreamObserver {
    mux::Connection* connection;
    mux::StreamId id = 0;
    std::vector<std::byte> block = std::vector<std::byte>(64 * 1024, std::byte{1});
    std::size_t offset = 0;  // into the current 64 KiB message
    uint64_t written = 0;
    uint64_t measure_from = 0, measure_until = 0, at_from = 0, at_until = 0;
    bool ended = false;
    uint64_t confirmed = 0;
    bool done = false;
    void pump() {
      while (!ended) {
        const uint64_t now = Loop::clock_ns();
        if (at_from == 0 && now >= measure_from) at_from = written;
        const bool last = now >= measure_until && offset == 0;
        if (last) {
          at_until = written;
          ended = true;
          (void)connection->write(id, {}, true);
          return;
        }
        auto taken = connection->write(id, std::span<const std::byte>(block).subspan(offset), false);
        if (!taken || taken.value() == 0) return;
        written += taken.value();
        offset = (offset + taken.value()) % block.size();
      }
    }
    void on_stream_data(std::span<const std::byte> bytes, bool) noexcept override {
      if (bytes.size() == sizeof(confirmed)) std::memcpy(&confirmed, bytes.data(), sizeof(confirmed));
      connection->consume(id, bytes.size());
    }
    void on_stream_writable() noexcept override { pump(); }
    void on_stream_finished(mux::MuxError error) noexcept override { done = error == mux::MuxError::none; }
  } writer;
  writer.connection = client.connection.get();
  const uint64_t start = Loop::clock_ns();
  writer.measure_from = start + 500'000'000;
  writer.measure_until = writer.measure_from + static_cast<uint64_t>(seconds * 1e9);
  auto id = client.connection->open(sink_id, 0, {}, false, writer);
  if (!id) std::abort();
  writer.id = id.value();
  writer.pump();
  client.loop.run_until([&] { return writer.done; }, static_cast<uint64_t>((seconds + 30) * 1e9));
  const double gib = static_cast<double>(writer.at_until - writer.at_from) / seconds / (1u << 30);
  std::printf("| W3 bulk 64 KiB writes | %.2f GiB/s | server confirmed %llu of %llu bytes written (%s) |\n", gib,
              static_cast<unsigned long long>(writer.confirmed), static_cast<unsigned long long>(writer.written),
              writer.confirmed == writer.written ? "equal" : "MISMATCH");
}

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 2.0;
  if (seconds <= 0) {
    std::fprintf(stderr, "usage: mux_bench [seconds > 0]\n");
    return 2;
  }
  engine::EngineOptions engine_options;
  engine_options.cpus = {1};
  auto started = engine::Engine::start(engine_options);
  if (!started) return 1;
  auto server_engine = std::move(started).value();
  std::unique_ptr<Server> server;
  std::promise<uint16_t> port;
  server_engine->post(0, [&] {
    server = std::make_unique<Server>(server_engine->loop(0));
    port.set_value(server->listener.listen(engine::Address::loopback_v4(0)) ? server->listener.address().port() : 0);
  });
  const uint16_t server_port = port.get_future().get();
  if (server_port == 0) return 1;

  std::thread client_thread([&] {
    (void)engine::pin_current_thread(0);
    auto created = Loop::create();
    if (!created) std::abort();
    Loop& loop = *created.value();
    Client client(loop);
    client.connector.connect(engine::Address::loopback_v4(server_port));
    loop.run_until([&] { return client.connection != nullptr; }, 5'000'000'000);
    std::printf("| workload | rate | p50 | p99 | p99.9 | |\n|---|---|---|---|---|---|\n");
    unary(client, 1, seconds, "W1 unary ping-pong 64 B");
    unary(client, 64, seconds, "W2 unary 64 in flight 64 B");
    bulk(client, seconds);
    client.connection->close();
    loop.run_until([&] { return client.closed; }, 5'000'000'000);
  });
  client_thread.join();
  std::promise<void> done;
  server_engine->post(0, [&] {
    for (auto& c : server->connections) c->close();
    server->listener.close();
  });
  // Closing finishes on the loop: wait for every connection's notification (bounded).
  for (int i = 0; i < 5000; i++) {
    std::promise<bool> closed;
    server_engine->post(0, [&] { closed.set_value(server->closed == server->connections.size() && server->listener_closed); });
    if (closed.get_future().get()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  server_engine->post(0, [&] {
    server.reset();
    done.set_value();
  });
  done.get_future().get();
  server_engine->stop();
  return 0;
}
