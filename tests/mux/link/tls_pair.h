// What the link's TLS tests share: sessions between two Connections on one loop over
// 127.0.0.1 with each side's transport wrapped (TLS, plaintext, a model of the kernel's
// record layer), random echo calls checked byte for byte, the log's TLS lines, and a PKI.
#pragma once

#include <doctest/doctest.h>

#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "ringmux/base/log.h"
#include "ringmux/engine/socket.h"
#include "ringmux/mux/link/connection.h"
#include "ringmux/mux/link/tls.h"
#include "ringmux/mux/rpc/call.h"
#include "ringmux/mux/rpc/registry.h"
#include "tests/support.h"
#include "tests/support_tls.h"

namespace ringmux::tls_test {

using namespace ringmux::mux;
using engine::IoError;
using engine::Loop;


inline constexpr uint64_t second_ns = 1'000'000'000;
inline constexpr uint32_t echo_unary = 1;
using Bytes = std::vector<std::byte>;
// Wraps a connected socket's transport for one side (nullptr: plaintext).
using Wrap = std::function<std::unique_ptr<Transport>(Loop&, std::unique_ptr<Transport>, bool dialer)>;

inline Wrap tls(const TlsOptions& options) {
  std::string error;
  std::shared_ptr<const TlsContext> shared = TlsContext::create(options, error);
  REQUIRE_MESSAGE(shared != nullptr, error);
  return [shared](Loop& loop, std::unique_ptr<Transport> raw, bool dialer) {
    return make_tls_transport(loop, shared, std::move(raw), dialer);
  };
}

// A server and a client Connection over 127.0.0.1, each side's transport wrapped by its
// Wrap. Records how each side's connection ended.
struct Pair final : engine::ListenerHandler, engine::ConnectHandler, ConnectionObserver {
  Pair(Loop& loop_ref, Wrap client_wrap, Wrap server_wrap)
      : loop(loop_ref), listener(loop_ref, *this), connector(loop_ref, *this), client_wrap_(std::move(client_wrap)),
        server_wrap_(std::move(server_wrap)) {
    registry.add_unary(echo_unary, [](std::span<const std::byte> request, std::shared_ptr<Responder> responder) {
      responder->reply(request);
    });
    REQUIRE(listener.listen(engine::Address::loopback_v4(0)).ok());
    connector.connect(listener.address());
    REQUIRE(loop.run_until([&] { return client != nullptr && server != nullptr; }, 5 * second_ns));
  }
  ~Pair() {
    if (client && !client->closed()) client->close();
    if (server && !server->closed()) server->close();
    listener.close();
    loop.run_until([&] { return closed == 2 && listener_closed; }, 10 * second_ns);
    CHECK(loop.ops_in_flight() == 1);
  }

  std::unique_ptr<Transport> transport(int fd, const Wrap& wrap, bool dialer) {
    auto raw = make_socket_transport(loop, fd);
    if (!wrap) return raw;
    return wrap(loop, std::move(raw), dialer);
  }
  void on_accept(int fd) noexcept override {
    auto t = transport(fd, server_wrap_, false);
    server_transport = t.get();
    server = std::make_unique<Connection>(loop, std::move(t), false, &registry, *this);
    server->start();
  }
  void on_accept_error(IoError) noexcept override {}
  void on_listener_closed() noexcept override { listener_closed = true; }
  void on_connect(Result<int, IoError> fd) noexcept override {
    REQUIRE(fd.ok());
    auto t = transport(fd.value(), client_wrap_, true);
    client_transport = t.get();
    client = std::make_unique<Connection>(loop, std::move(t), true, nullptr, *this);
    client->start();
  }
  void on_connection_closed(Connection& connection, MuxError error, IoError io_error) noexcept override {
    closed++;
    (&connection == client.get() ? client_end : server_end) = std::make_pair(error, io_error);
  }

  // Both ends ended (a refused handshake ends both connections).
  bool both_ended() { return loop.run_until([&] { return client_end && server_end; }, 15 * second_ns); }

  Loop& loop;
  Registry registry;
  engine::Listener listener;
  engine::Connector connector;
  Wrap client_wrap_;
  Wrap server_wrap_;
  std::unique_ptr<Connection> client;
  std::unique_ptr<Connection> server;
  Transport* client_transport = nullptr;  // owned by the connections
  Transport* server_transport = nullptr;
  int closed = 0;
  bool listener_closed = false;
  std::optional<std::pair<MuxError, IoError>> client_end;
  std::optional<std::pair<MuxError, IoError>> server_end;
};

// Calls `calls` echoes of random sizes (up to `size_max` bytes) and checks each response.
inline void echo_calls(Pair& pair, int calls, std::size_t size_max, uint64_t seed) {
  std::mt19937_64 rng(seed);
  int ok = 0, done = 0;
  std::vector<Bytes> requests(static_cast<std::size_t>(calls));
  for (int i = 0; i < calls; i++) {
    Bytes& request = requests[static_cast<std::size_t>(i)];
    request.resize(1 + rng() % size_max);
    for (auto& b : request) b = static_cast<std::byte>(rng());
    call(*pair.client, echo_unary, request, 0, [&ok, &done, &request](const CallResult& r) {
      done++;
      if (r.error == MuxError::none && r.response.size() == request.size() &&
          std::memcmp(r.response.data(), request.data(), request.size()) == 0) {
        ok++;
      } else if (done - ok <= 3) {
        MESSAGE("call of " << request.size() << " bytes: " << std::string(describe(r.error)) << " " << r.message
                            << ", " << r.response.size() << " bytes back");
      }
    });
  }
  CHECK(pair.loop.run_until([&] { return done == calls; }, 60 * second_ns));
  CHECK(ok == calls);
}

// The log hook's TLS lines while it lives ("TLS client: ..." / "TLS server: ..."): where
// an operator reads why a handshake failed, after the transport is gone.
class TlsLog {
 public:
  TlsLog() { previous_ = set_log_sink(&sink_); }
  ~TlsLog() { set_log_sink(previous_); }
  // Whether a line of `side` ("client" or "server") contains `cause`.
  bool has(const char* side, const std::string& cause) const {
    const std::string prefix = std::string("TLS ") + side + ": ";
    for (const std::string& line : lines_) {
      if (line.rfind(prefix, 0) == 0 && line.find(cause) != std::string::npos) return true;
    }
    for (const std::string& line : lines_) MESSAGE("log: " << line);
    return false;
  }

 private:
  static void log(void* context, const LogEvent& event) noexcept {
    if (event.message.rfind("TLS ", 0) == 0) static_cast<TlsLog*>(context)->lines_.emplace_back(event.message);
  }
  std::vector<std::string> lines_;  // the loop thread logs; the test reads between runs
  LogSink sink_{&TlsLog::log, this};
  const LogSink* previous_ = nullptr;
};

struct Pki {
  test::TestPki files;
  TlsOptions node_a, node_b, stranger, expired;
  Pki() {
    files.make_ca("ca");
    files.make_ca("other-ca");
    node_a = files.make_leaf("node-a", "ca");
    node_b = files.make_leaf("node-b", "ca");
    stranger = files.make_leaf("stranger", "other-ca");
    stranger.ca_file = files.path("ca.pem");  // trusts our CA; its own is foreign to us
    expired = files.make_leaf("expired", "ca", -3 * 24 * 3600, -24 * 3600);
  }
};


}  // namespace ringmux::tls_test
