// The link's handshake stage: sessions over mutual TLS 1.3 (mux/link/tls.h) between two
// Connections on one loop over 127.0.0.1, the refusals (a certificate of another CA, an
// expired one, a name that is not the pinned one, plaintext against TLS, garbage before the
// ClientHello, a client without a certificate, a TLS 1.2 client), the KeyUpdate budget, and
// a user-supplied handshake stage.
#include "ringmux/mux/link/tls.h"

#include <netinet/in.h>
#include <pthread.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <csignal>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "ringmux/base/limits.h"
#include "ringmux/base/log.h"
#include "ringmux/engine/socket.h"
#include "ringmux/mux/link/connection.h"
#include "ringmux/mux/rpc/call.h"
#include "ringmux/mux/rpc/registry.h"
#include "tests/mux/link/tls_pair.h"
#include "tests/support.h"
#include "tests/support_tls.h"

using namespace ringmux;
using namespace ringmux::mux;
using namespace ringmux::tls_test;
using engine::IoError;
using engine::Loop;

// Proves a session runs over mutual TLS: 1,000 unary echoes of up to 48 KiB (records
// spanning receives, batches of many records) all come back intact, and each side knows the
// other's certificate as its peer identity and derives the same exported secret.
TEST_CASE("tls: calls over mutual TLS 1.3, peer identities and exported secrets") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Pki pki;
  Pair pair(*loop, tls(pki.node_a), tls(pki.node_b));
  echo_calls(pair, 1000, 48 * 1024, test::test_seed("tls calls"));
  REQUIRE(pair.client->connected());
  const std::string client_sees = pair.client_transport->peer_identity();
  const std::string server_sees = pair.server_transport->peer_identity();
  CHECK(client_sees.rfind("sha256:", 0) == 0);
  CHECK(server_sees.rfind("sha256:", 0) == 0);
  CHECK(client_sees != server_sees);  // each sees the other's certificate
  std::array<std::byte, 32> a{}, b{}, c{};
  REQUIRE(pair.client_transport->export_secret("resume", a));
  REQUIRE(pair.server_transport->export_secret("resume", b));
  REQUIRE(pair.server_transport->export_secret("other", c));
  CHECK(a == b);
  CHECK(a != c);
  // Both transports authenticate every byte: the handshake dropped payload checksums.
  CHECK_FALSE(pair.client->session().payload_checksums());
  CHECK_FALSE(pair.server->session().payload_checksums());
  CHECK(!pair.client_end);
  CHECK(!pair.server_end);
}

// Proves a client whose certificate comes from a CA the server does not trust is refused,
// and both connections end with handshake_failed (not a hang, not a plain reset).
TEST_CASE("tls: a client certificate of another CA is refused on both sides") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Pki pki;
  TlsLog log;
  Pair pair(*loop, tls(pki.stranger), tls(pki.node_b));
  REQUIRE(pair.both_ended());
  CHECK(pair.server_end->second == IoError::handshake_failed);
  CHECK(pair.client_end->second == IoError::handshake_failed);
  CHECK(log.has("server", "unable to get local issuer certificate"));
  CHECK(log.has("client", "alert"));
}

// Proves an expired server certificate is refused by the client, which names the cause:
// in the log and, once the transport is gone, in the connection's transport_failure().
TEST_CASE("tls: an expired certificate is refused") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Pki pki;
  TlsLog log;
  Pair pair(*loop, tls(pki.node_a), tls(pki.expired));
  REQUIRE(pair.both_ended());
  CHECK(pair.client_end->second == IoError::handshake_failed);
  CHECK(log.has("client", "certificate has expired"));
  CHECK(pair.client->transport_failure().find("certificate has expired") != std::string::npos);
  CHECK(pair.server_end->second == IoError::handshake_failed);
  CHECK(!pair.server->transport_failure().empty());
}

// Proves pinned peer names: a client pinning node-b talks to node-b, and refuses node-a
// although node-a's certificate comes from the trusted CA.
TEST_CASE("tls: the peer's certificate must carry a pinned name") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Pki pki;
  TlsOptions pinned = pki.node_a;
  pinned.peer_names = {"node-b"};
  {
    Pair pair(*loop, tls(pinned), tls(pki.node_b));
    echo_calls(pair, 10, 1000, 1);
  }
  TlsLog log;
  Pair pair(*loop, tls(pinned), tls(pki.node_a));
  REQUIRE(pair.both_ended());
  CHECK(pair.client_end->second == IoError::handshake_failed);
  CHECK(log.has("client", "hostname mismatch"));
}

// Proves a plaintext client against a TLS server and a TLS client against a plaintext
// server both end, on both sides, instead of exchanging garbage or hanging.
TEST_CASE("tls: plaintext against TLS is refused both ways") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Pki pki;
  TlsLog log;
  {
    Pair pair(*loop, nullptr, tls(pki.node_b));
    REQUIRE(pair.both_ended());
    CHECK(pair.server_end->second == IoError::handshake_failed);
    CHECK(pair.client_end->first != MuxError::none);
    CHECK(log.has("server", "TLS handshake failed"));
  }
  Pair pair(*loop, tls(pki.node_a), nullptr);
  REQUIRE(pair.both_ended());
  CHECK(pair.client_end->second == IoError::handshake_failed);
  CHECK(log.has("client", "does not speak TLS"));
  CHECK(pair.server_end->first != MuxError::none);
}

// TlsContext refuses what cannot authenticate both sides, and names the file at fault.
TEST_CASE("tls: contexts need a certificate, its key and a CA, and name the bad file") {
  Pki pki;
  std::string error;
  CHECK(TlsContext::create(TlsOptions{}, error) == nullptr);
  CHECK(error.find("CA file") != std::string::npos);
  TlsOptions no_ca = pki.node_a;
  no_ca.ca_file.clear();
  CHECK(TlsContext::create(no_ca, error) == nullptr);
  TlsOptions wrong_key = pki.node_a;
  wrong_key.key_file = pki.node_b.key_file;
  CHECK(TlsContext::create(wrong_key, error) == nullptr);
  CHECK(error.find(pki.node_b.key_file) != std::string::npos);
  CHECK(error.find("mismatch") != std::string::npos);
  TlsOptions missing = pki.node_a;
  missing.cert_file = pki.files.path("absent.pem");
  CHECK(TlsContext::create(missing, error) == nullptr);
  CHECK(error.find("absent.pem") != std::string::npos);
  CHECK(TlsContext::create(pki.node_a, error) != nullptr);
}

namespace {

// A hostile or foreign client on its own thread with a blocking socket: it connects to
// `port`, runs `act` and records whether the server answered with a TLS alert or closed.
struct RawClient {
  RawClient(Loop& loop, uint16_t port, std::function<void(int fd)> act) {
    thread = std::thread([&loop, port, act = std::move(act), this] {
      const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in address{};
      address.sin_family = AF_INET;
      address.sin_port = htons(port);
      address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      timeval timeout{10, 0};  // bounded: a server that never answers fails the test
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
      if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) act(fd);
      ::close(fd);
      done = true;
      loop.post_fn([] {});  // wakes the loop's run_until to see `done`
    });
  }
  ~RawClient() { thread.join(); }
  std::thread thread;
  std::atomic<bool> done{false};
};

// The TLS server side alone: accepts one socket and runs a Connection over TLS on it.
struct TlsServer final : engine::ListenerHandler, ConnectionObserver {
  TlsServer(Loop& loop_ref, const TlsOptions& options) : loop(loop_ref), listener(loop_ref, *this), wrap(tls(options)) {
    REQUIRE(listener.listen(engine::Address::loopback_v4(0)).ok());
  }
  ~TlsServer() {
    if (server && !server->closed()) server->close();
    listener.close();
    loop.run_until([&] { return (server == nullptr || server->closed()) && listener_closed; }, 10 * second_ns);
  }
  void on_accept(int fd) noexcept override {
    server = std::make_unique<Connection>(loop, wrap(loop, make_socket_transport(loop, fd), false), false, &registry,
                                          *this);
    server->start();
  }
  void on_accept_error(IoError) noexcept override {}
  void on_listener_closed() noexcept override { listener_closed = true; }
  void on_connection_closed(Connection&, MuxError, IoError io_error) noexcept override { ended = io_error; }
  uint16_t port() const { return listener.address().port(); }

  Loop& loop;
  Registry registry;
  engine::Listener listener;
  Wrap wrap;
  std::unique_ptr<Connection> server;
  bool listener_closed = false;
  std::optional<IoError> ended;
};

// Runs a blocking OpenSSL client on `fd` with `configure` applied to its context, and `act`
// on the connection once its handshake succeeded; false when it did not.
bool run_openssl_client(int fd, const std::function<void(SSL_CTX*)>& configure, const std::function<void(SSL*)>& act) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  configure(ctx);
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  const bool connected = SSL_connect(ssl) == 1;
  if (connected) act(ssl);
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  ERR_clear_error();
  return connected;
}

// Presents `identity`'s certificate.
void use_identity(SSL_CTX* ctx, const TlsOptions& identity) {
  SSL_CTX_use_certificate_chain_file(ctx, identity.cert_file.c_str());
  SSL_CTX_use_PrivateKey_file(ctx, identity.key_file.c_str(), SSL_FILETYPE_PEM);
}

// run_openssl_client, then whether the server let it exchange a record.
bool openssl_client(int fd, const std::function<void(SSL_CTX*)>& configure) {
  bool usable = false;
  (void)run_openssl_client(fd, configure, [&](SSL* ssl) {
    // TLS 1.3: the server judges our certificate after our Finished; its verdict arrives
    // as an alert on the first read.
    const char probe[8] = {};
    char answer[64];
    usable = SSL_write(ssl, probe, sizeof(probe)) > 0 && SSL_read(ssl, answer, sizeof(answer)) > 0;
  });
  return usable;
}

}  // namespace

// Proves the server refuses a client that presents no certificate at all, a client that
// offers only TLS 1.2 (where renegotiation exists: TLS 1.3 has none to attempt), and bytes
// that are not a ClientHello; each ends the server's connection with handshake_failed and
// its cause in the log.
TEST_CASE("tls: hostile clients are refused: no certificate, TLS 1.2, garbage before the ClientHello") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Pki pki;
  struct Case {
    const char* name;
    std::function<void(int fd)> act;
    const char* cause;  // in the server's log line
  };
  bool client_got_through = false;
  const std::vector<Case> cases = {
      {"no certificate",
       [&](int fd) { client_got_through = openssl_client(fd, [](SSL_CTX*) {}); },
       "certificate"},
      {"TLS 1.2 only",
       [&](int fd) {
         client_got_through = openssl_client(fd, [&](SSL_CTX* ctx) {
           SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
           use_identity(ctx, pki.node_a);
         });
       },
       "protocol"},
      {"garbage",
       [](int fd) {
         const char garbage[] = "GET / HTTP/1.1\r\nHost: storage\r\n\r\n";
         (void)::send(fd, garbage, sizeof(garbage) - 1, MSG_NOSIGNAL);
         char sink[256];
         while (::recv(fd, sink, sizeof(sink), 0) > 0) {
         }
       },
       "does not speak TLS"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    client_got_through = false;
    TlsLog log;
    TlsServer server(*loop, pki.node_b);
    RawClient client(*loop, server.port(), c.act);
    CHECK(loop->run_until([&] { return server.ended.has_value() && client.done.load(); }, 15 * second_ns));
    CHECK(!client_got_through);
    REQUIRE(server.ended.has_value());
    CHECK(*server.ended == IoError::handshake_failed);
    CHECK(log.has("server", c.cause));
  }
}

namespace {

// The KeyUpdate flood's client: a TLS 1.3 client with node-a's certificate that completes
// the handshake, then sends up to `key_updates` KeyUpdates asking for one back (no
// application data), and closes in order (close_notify) if the server let it send them
// all. Returns how many KeyUpdates went out before the server cut it off.
int key_update_client(int fd, const TlsOptions& identity, int key_updates) {
  // The server resets the connection under our writes: EPIPE, not a SIGPIPE that would end
  // the test process (blocked on this thread only).
  sigset_t pipe_signal;
  sigemptyset(&pipe_signal);
  sigaddset(&pipe_signal, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_signal, nullptr);
  int sent = 0;
  const auto configure = [&](SSL_CTX* ctx) {
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    use_identity(ctx, identity);
  };
  (void)run_openssl_client(fd, configure, [&](SSL* ssl) {
    // Each SSL_do_handshake after SSL_key_update writes one KeyUpdate record.
    while (sent < key_updates && SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED) == 1 && SSL_do_handshake(ssl) == 1) {
      sent++;
    }
    if (sent == key_updates) (void)SSL_shutdown(ssl);
    // What the server answers (its KeyUpdates, an alert, the end of the connection) is
    // read to the end, bounded by the socket's receive timeout.
    char sink[256];
    while (::recv(fd, sink, sizeof(sink), 0) > 0) {
    }
  });
  return sent;
}

}  // namespace

// Proves the KeyUpdate budget (limits::tls_key_updates_free, plus one per
// tls_key_update_received_bytes): a client that completed the handshake and sends
// KeyUpdates asking for an answer, without data, is closed once over the budget, with the
// log naming the flood, while another TLS connection on the loop goes on serving calls; a
// client that stays within the budget is not cut off (it ends its connection itself, in
// order). The budget is the user-space record layer's: the server keeps it there (where
// the kernel's record layer has the connection, the first KeyUpdate ends it).
TEST_CASE("tls: a KeyUpdate flood is cut off at its limit, other connections go on") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Pki pki;
  pki.node_b.kernel_offload = false;
  Pair bystander(*loop, tls(pki.node_a), tls(pki.node_b));
  echo_calls(bystander, 10, 1000, 3);
  // Four times the budget of a connection this short. Whether the client's writes fail
  // before its last one depends on scheduling; the server's verdict does not (it reads the
  // records in order, and the one over the budget ends the connection).
  constexpr int flood = 4 * static_cast<int>(limits::tls_key_updates_free);
  constexpr int within = static_cast<int>(limits::tls_key_updates_free);
  {
    TlsLog log;
    TlsServer server(*loop, pki.node_b);
    int sent = 0;
    RawClient client(*loop, server.port(), [&](int fd) { sent = key_update_client(fd, pki.node_a, flood); });
    CHECK(loop->run_until([&] { return server.ended.has_value() && client.done.load(); }, 15 * second_ns));
    REQUIRE(server.ended.has_value());
    CHECK(*server.ended == IoError::handshake_failed);
    CHECK(sent > within);  // the budget, then the one over it
    CHECK(log.has("server", "KeyUpdate flood"));
  }
  {
    TlsLog log;
    TlsServer server(*loop, pki.node_b);
    int sent = 0;
    RawClient client(*loop, server.port(), [&](int fd) { sent = key_update_client(fd, pki.node_a, within); });
    CHECK(loop->run_until([&] { return server.ended.has_value() && client.done.load(); }, 15 * second_ns));
    CHECK(sent == within);
    REQUIRE(server.ended.has_value());
    CHECK(*server.ended == IoError::closed);  // the client's close_notify
  }
  echo_calls(bystander, 10, 1000, 4);
  CHECK(!bystander.client_end);
  CHECK(!bystander.server_end);
}

namespace {

// A user-supplied handshake stage: each side sends an 8-byte pass phrase first and accepts
// the peer only if it sends the same one; the session's bytes follow.
class PassPhrase final : public Handshake {
 public:
  explicit PassPhrase(uint64_t phrase) : phrase_(phrase) {}
  std::unique_ptr<Transport> wrap(Loop&, std::unique_ptr<Transport> raw, bool) override {
    return std::make_unique<Stage>(std::move(raw), phrase_);
  }

 private:
  class Stage final : public Transport, private TransportHandler {
   public:
    Stage(std::unique_ptr<Transport> raw, uint64_t phrase) : raw_(std::move(raw)) {
      std::memcpy(mine_.data(), &phrase, sizeof(phrase));
    }
    void start(TransportHandler& handler) noexcept override {
      handler_ = &handler;
      raw_->start(*this);
      raw_->send(mine_, {}, {});
      phrase_in_flight_ = true;
    }
    void send(std::span<const std::byte> a, std::span<const std::byte> b,
              std::span<const std::byte> c) noexcept override {
      held_ = {a, b, c};
      app_active_ = true;
      pump();
    }
    // The session's send: not done before the pass phrase went out and the peer's matched.
    bool send_in_flight() const noexcept override { return app_active_; }
    bool usable() const noexcept override { return !failed_ && raw_->usable(); }
    void send_last(std::span<const std::byte> bytes) noexcept override {
      if (accepted_ && !phrase_in_flight_) raw_->send_last(bytes);
    }
    void close() noexcept override { raw_->close(); }

   private:
    void pump() {
      if (!app_active_ || app_passed_ || !accepted_ || phrase_in_flight_) return;
      app_passed_ = true;
      raw_->send(held_[0], held_[1], held_[2]);
    }
    void on_transport_recv(std::span<const std::byte> bytes) noexcept override {
      if (failed_) return;
      while (!accepted_ && !bytes.empty()) {
        theirs_.push_back(bytes.front());
        bytes = bytes.subspan(1);
        if (theirs_.size() == mine_.size()) {
          if (std::memcmp(theirs_.data(), mine_.data(), mine_.size()) != 0) {
            failed_ = true;
            handler_->on_transport_error(IoError::handshake_failed);
            return;
          }
          accepted_ = true;
          pump();
        }
      }
      if (!bytes.empty()) handler_->on_transport_recv(bytes);
    }
    void on_transport_sent() noexcept override {
      if (phrase_in_flight_) {
        phrase_in_flight_ = false;
        pump();
        return;
      }
      app_active_ = app_passed_ = false;
      handler_->on_transport_sent();
    }
    void on_transport_error(IoError error) noexcept override {
      if (failed_) return;
      failed_ = true;
      handler_->on_transport_error(error);
    }
    void on_transport_closed() noexcept override { handler_->on_transport_closed(); }

    std::unique_ptr<Transport> raw_;
    TransportHandler* handler_ = nullptr;
    std::array<std::byte, 8> mine_{};
    std::vector<std::byte> theirs_;
    std::array<std::span<const std::byte>, 3> held_{};
    bool app_active_ = false;
    bool app_passed_ = false;
    bool phrase_in_flight_ = false;
    bool accepted_ = false;
    bool failed_ = false;
  };
  uint64_t phrase_;
};

Wrap stage(std::shared_ptr<Handshake> handshake) {
  return [handshake](Loop& loop, std::unique_ptr<Transport> raw, bool dialer) {
    return handshake->wrap(loop, std::move(raw), dialer);
  };
}

}  // namespace

// Proves the handshake stage is pluggable: a user-supplied one carries a session when both
// sides agree and refuses it when they do not.
TEST_CASE("tls: a user-supplied handshake stage carries the session or refuses it") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  auto good = std::make_shared<PassPhrase>(0x5eed);
  {
    Pair pair(*loop, stage(good), stage(good));
    echo_calls(pair, 200, 64 * 1024, 2);
    // A stage that does not authenticate bytes keeps the payload checksums.
    CHECK(pair.client->session().payload_checksums());
    CHECK(pair.server->session().payload_checksums());
  }
  Pair pair(*loop, stage(std::make_shared<PassPhrase>(7)), stage(good));
  REQUIRE(pair.both_ended());
  CHECK(pair.server_end->second == IoError::handshake_failed);
  CHECK(pair.client_end->first != MuxError::none);
}
