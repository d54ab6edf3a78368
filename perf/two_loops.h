// The frame of the perf programs that run one client connection against one server on two
// pinned loops of one Engine (worker_w3, blocking_w8): the client on loop 0, the server on
// loop 1, each side built, used and destroyed on its own loop's thread; the main thread
// reaches them only through on_loop().
#pragma once

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "ringmux/engine/engine.h"
#include "ringmux/engine/socket.h"
#include "ringmux/mux/link/connection.h"
#include "ringmux/mux/rpc/registry.h"

namespace ringmux::perf {

inline constexpr uint32_t client_loop = 0;
inline constexpr uint32_t server_loop = 1;
// How long connecting, and closing at the end, may take.
inline constexpr uint64_t settle_timeout_ns = 30'000'000'000;

// The flags every two-loop program takes (a program's Options derive from it).
struct CommonFlags {
  int runs = 3;
  double seconds = 3;
  uint64_t warmup_ms = 500;
  int client_cpu = 0;
  int server_cpu = 1;
  uint64_t loop_spin_ns = limits::loop_spin_ns_default;

  // Takes `name` (with its `value`) if it is one of these; false otherwise.
  bool take(const std::string& name, const char* value) {
    if (name == "--runs") runs = std::atoi(value);
    else if (name == "--seconds") seconds = std::atof(value);
    else if (name == "--warmup_ms") warmup_ms = std::strtoull(value, nullptr, 10);
    else if (name == "--client_cpu") client_cpu = std::atoi(value);
    else if (name == "--server_cpu") server_cpu = std::atoi(value);
    else if (name == "--loop_spin_ns") loop_spin_ns = std::strtoull(value, nullptr, 10);
    else return false;
    return true;
  }
};

// Hands each argument "--name=value" (value "" without '=') to `take(name, value)`; the
// first one it does not take prints `usage` and ends the program (status 0 for -h/--help).
template <typename Take>
void parse_flags(int argc, char** argv, Take&& take, const std::string& usage) {
  for (int i = 1; i < argc; i++) {
    const std::string arg = argv[i];
    const std::size_t equals = arg.find('=');
    const char* value = equals == std::string::npos ? "" : argv[i] + equals + 1;
    if (take(arg.substr(0, equals), value)) continue;
    std::fputs(usage.c_str(), stderr);
    std::exit(arg == "-h" || arg == "--help" ? 0 : 2);
  }
}

[[noreturn]] inline void die(const char* program, const char* what) {
  std::fprintf(stderr, "%s: %s\n", program, what);
  std::exit(1);
}

// Runs `fn` on loop `index` and returns its result.
template <typename F>
auto on_loop(engine::Engine& engine, uint32_t index, F&& fn) {
  using T = decltype(fn());
  std::promise<T> promise;
  engine.post(index, [&] { promise.set_value(fn()); });
  return promise.get_future().get();
}

// Polls `done` from the main thread every millisecond until it holds or `timeout_ns` passed.
template <typename Done>
bool wait_until(Done&& done, uint64_t timeout_ns) {
  const uint64_t until_ns = engine::Loop::clock_ns() + timeout_ns;
  while (!done()) {
    if (engine::Loop::clock_ns() >= until_ns) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// The server's side, on its loop: the listener (127.0.0.1, any port), the registry the
// program fills, the one accepted connection.
struct ServerSide : engine::ListenerHandler, mux::ConnectionObserver {
  ServerSide(engine::Loop& loop_ref, const mux::ConnectionOptions& options)
      : loop(loop_ref), listener(loop_ref, *this), options_(options) {}
  virtual ~ServerSide() = default;
  void on_accept(int fd) noexcept override {
    connection = std::make_unique<mux::Connection>(loop, fd, false, &registry, *this, options_);
    connection->start();
  }
  void on_accept_error(engine::IoError) noexcept override {}
  void on_listener_closed() noexcept override { listener_closed = true; }
  void on_connection_closed(mux::Connection&, mux::MuxError, engine::IoError) noexcept override {}
  bool closed() const { return listener_closed && (!connection || connection->closed()); }

  engine::Loop& loop;
  engine::Listener listener;
  mux::Registry registry;
  mux::ConnectionOptions options_;
  std::unique_ptr<mux::Connection> connection;
  bool listener_closed = false;
};

// The client's side, on its loop: one connection.
struct ClientSide : engine::ConnectHandler, mux::ConnectionObserver {
  ClientSide(engine::Loop& loop_ref, const mux::ConnectionOptions& options)
      : loop(loop_ref), connector(loop_ref, *this), options_(options) {}
  virtual ~ClientSide() = default;
  void on_connect(Result<int, engine::IoError> fd) noexcept override {
    if (!fd) return;
    connection = std::make_unique<mux::Connection>(loop, fd.value(), true, nullptr, *this, options_);
    connection->start();
    connected.store(true, std::memory_order_release);
  }
  void on_connection_closed(mux::Connection&, mux::MuxError, engine::IoError) noexcept override {}

  engine::Loop& loop;
  engine::Connector connector;
  mux::ConnectionOptions options_;
  std::unique_ptr<mux::Connection> connection;
  std::atomic<bool> connected{false};
};

// Starts the engine's two loops, pinned to `client_cpu` and `server_cpu`.
inline std::unique_ptr<engine::Engine> start_two_loops(const char* program, int client_cpu, int server_cpu,
                                                       uint64_t loop_spin_ns) {
  engine::EngineOptions options;
  options.loop_count = 2;
  options.cpus = {client_cpu, server_cpu};
  options.loop.spin_ns = loop_spin_ns;
  auto started = engine::Engine::start(options);
  if (!started) die(program, engine::describe(started.error()));
  return std::move(started).value();
}

// Builds the server (make_server(loop) on its loop, then listening) and the client
// (make_client(loop) on its loop, then connecting to the server), and waits until the
// client is connected.
template <typename MakeServer, typename MakeClient>
auto connect_pair(const char* program, engine::Engine& engine, MakeServer&& make_server, MakeClient&& make_client) {
  auto server = on_loop(engine, server_loop, [&] {
    auto side = make_server(engine.loop(server_loop));
    if (!side->listener.listen(engine::Address::loopback_v4(0)).ok()) die(program, "listen failed");
    return side;
  });
  const engine::Address address = on_loop(engine, server_loop, [&] { return server->listener.address(); });
  auto client = on_loop(engine, client_loop, [&] {
    auto side = make_client(engine.loop(client_loop));
    side->connector.connect(address);
    return side;
  });
  if (!wait_until([&] { return client->connected.load(std::memory_order_acquire); }, settle_timeout_ns)) {
    die(program, "connect failed");
  }
  return std::pair(std::move(server), std::move(client));
}

// Closes the client's connection and the server's listener, waits (bounded) until both are
// closed, runs `before_destroy` (the loops still run) and destroys each side on its loop
// (the engine runs on).
template <typename Server, typename Client, typename BeforeDestroy>
void close_pair(engine::Engine& engine, std::unique_ptr<Server>& server, std::unique_ptr<Client>& client,
                BeforeDestroy&& before_destroy) {
  on_loop(engine, client_loop, [&] {
    client->connection->close();
    return 0;
  });
  on_loop(engine, server_loop, [&] {
    server->listener.close();
    return 0;
  });
  (void)wait_until(
      [&] {
        return on_loop(engine, client_loop, [&] { return client->connection->closed(); }) &&
               on_loop(engine, server_loop, [&] { return server->closed(); });
      },
      settle_timeout_ns);
  before_destroy();
  on_loop(engine, client_loop, [&] {
    client.reset();
    return 0;
  });
  on_loop(engine, server_loop, [&] {
    server.reset();
    return 0;
  });
}

// close_pair, then stops the engine.
template <typename Server, typename Client, typename BeforeDestroy>
void shut_down(engine::Engine& engine, std::unique_ptr<Server>& server, std::unique_ptr<Client>& client,
               BeforeDestroy&& before_destroy) {
  close_pair(engine, server, client, before_destroy);
  engine.stop();
}

}  // namespace ringmux::perf
