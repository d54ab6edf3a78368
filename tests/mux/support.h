// Loopback fixtures of the mux tests: a resumable server (listener, acceptor, connections)
// and a resumable client connection, both on the test's loop.
#pragma once

#include <doctest/doctest.h>

#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "ringmux/engine/loop.h"
#include "ringmux/engine/socket.h"
#include "ringmux/mux/link/acceptor.h"
#include "ringmux/mux/link/connection.h"
#include "ringmux/mux/rpc/call.h"
#include "ringmux/mux/rpc/registry.h"

namespace ringmux::mux::loopback {

using engine::Loop;

inline constexpr uint64_t ms_ns = 1'000'000;
inline constexpr uint64_t second_ns = 1000 * ms_ns;
inline constexpr uint32_t echo_unary = 1;  // every Server answers it with the request

inline std::vector<std::byte> bytes_of(std::string_view text) {
  const auto* data = reinterpret_cast<const std::byte*>(text.data());
  return {data, data + text.size()};
}

// The accepting side: a listener, the acceptor (session table) and the connections.
struct Server : engine::ListenerHandler, ConnectionObserver {
  // With `acceptor_options.handshake` (TLS), sessions get the acceptor's transports.
  Server(Loop& loop_ref, ConnectionOptions options_ref, uint16_t port = 0, const AcceptorOptions& acceptor_options = {})
      : loop(loop_ref), options(options_ref), listener(loop_ref, *this),
        acceptor(loop_ref, [this](int fd) {
          connections.push_back(std::make_unique<Connection>(loop, fd, false, &registry, *this, options));
          sockets.emplace_back(connections.back().get(), fd);
          return connections.back().get();
        }, acceptor_options) {
    acceptor.set_transport_factory([this](std::unique_ptr<Transport>& transport) {
      connections.push_back(std::make_unique<Connection>(loop, std::move(transport), false, &registry, *this, options));
      return connections.back().get();
    });
    options.resume = true;
    registry.add_unary(echo_unary, [](std::span<const std::byte> request, std::shared_ptr<Responder> responder) {
      responder->reply(request);
    });
    REQUIRE(listener.listen(engine::Address::loopback_v4(port)).ok());
  }
  virtual ~Server() = default;
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
  // A crash (a restart, as the peers see it): every plain-TCP session's socket is shut down
  // under it, so that none of the sessions' last words reach the peers; then as shut_down.
  // For sessions still on their first transport (a resume brings another socket).
  void crash() {
    for (auto& [connection, fd] : sockets) {
      if (!connection->closed()) (void)::shutdown(fd, SHUT_RDWR);
    }
    shut_down();
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
  std::vector<std::pair<Connection*, int>> sockets;  // the connections made from an fd, with it
  std::size_t closed = 0;
  bool listener_closed = false;
  MuxError last_error = MuxError::none;
};

// The dialing side: one resumable connection to `port`; `registry` (may be null) serves
// the server's calls back.
struct Client final : engine::ConnectHandler, ConnectionObserver {
  Client(Loop& loop_ref, uint16_t port, ConnectionOptions options_ref, const Registry* registry_ref = nullptr)
      : loop(loop_ref), registry(registry_ref), connector(loop_ref, *this) {
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
    connection = std::make_unique<Connection>(loop, fd.value(), true, registry, *this, options);
    connection->start();
  }
  void on_connection_closed(Connection&, MuxError error, engine::IoError) noexcept override {
    closed = true;
    close_error = error;
  }

  Loop& loop;
  const Registry* registry;
  ConnectionOptions options;
  engine::Connector connector;
  std::unique_ptr<Connection> connection;
  bool failed = false;
  bool closed = false;
  MuxError close_error = MuxError::none;
};

}  // namespace ringmux::mux::loopback
