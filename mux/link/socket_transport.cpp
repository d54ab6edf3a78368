// The TCP transport and dialer of mux/link/transport.h: engine::Socket and engine::Connector
// under the Transport and Dialer interfaces.
#include <sys/socket.h>

#include <array>

#include "ringmux/base/assert.h"
#include "ringmux/engine/loop.h"
#include "ringmux/mux/link/transport.h"

namespace ringmux::mux {

namespace {

class SocketTransport final : public Transport, private engine::SocketHandler {
 public:
  SocketTransport(engine::Loop& loop, int fd) noexcept : socket_(loop, fd, *this) {}
  ~SocketTransport() override {
    // Never started (a dial that arrived after its connection ended): nothing is in flight
    // and the socket only has its fd to close.
    if (handler_ == nullptr && socket_.state() == engine::Socket::State::open) socket_.close();
  }

  void start(TransportHandler& handler) noexcept override {
    const bool started = handler_ != nullptr;
    handler_ = &handler;
    if (!started) socket_.start();
  }
  void send(std::span<const std::byte> first, std::span<const std::byte> second,
            std::span<const std::byte> third) noexcept override {
    socket_.send(first, second, third);
  }
  bool send_in_flight() const noexcept override { return socket_.send_in_flight(); }
  bool usable() const noexcept override {
    return handler_ != nullptr && socket_.state() == engine::Socket::State::open;
  }
  void send_last(std::span<const std::byte> bytes) noexcept override {
    if (!usable() || socket_.send_in_flight()) return;
    // Straight to the socket: no send is in flight, so this is a frame boundary.
    const int fd = socket_.fd();
    (void)::send(fd, bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    // The FIN follows, and what the peer sent that we will never read is dropped now: a
    // socket closed with unread input resets the connection, and the reset discards our
    // unsent bytes with it. Bounded: a peer still sending gets its reset after all.
    (void)::shutdown(fd, SHUT_WR);
    std::array<std::byte, 64 * 1024> sink;
    for (int i = 0; i < 16 && ::recv(fd, sink.data(), sink.size(), MSG_DONTWAIT | MSG_TRUNC) > 0; i++) {
    }
  }
  void close() noexcept override { socket_.close(); }

 private:
  void on_recv(std::span<const std::byte> bytes) noexcept override { handler_->on_transport_recv(bytes); }
  void on_send_complete() noexcept override { handler_->on_transport_sent(); }
  void on_error(engine::IoError error) noexcept override { handler_->on_transport_error(error); }
  void on_closed() noexcept override {
    if (handler_ != nullptr) handler_->on_transport_closed();
  }

  TransportHandler* handler_ = nullptr;
  engine::Socket socket_;
};

class TcpDialer final : public Dialer, private engine::ConnectHandler {
 public:
  TcpDialer(engine::Loop& loop, const engine::Address& peer, uint32_t timeout_ms) noexcept
      : loop_(loop), peer_(peer), timeout_ms_(timeout_ms), connector_(loop, *this) {}

  void dial(DialHandler& handler) noexcept override {
    RM_ASSERT(handler_ == nullptr);
    handler_ = &handler;
    connector_.connect(peer_, timeout_ms_);
  }
  bool in_progress() const noexcept override { return handler_ != nullptr; }
  void cancel() noexcept override { connector_.cancel(); }

 private:
  void on_connect(Result<int, engine::IoError> result) noexcept override {
    DialHandler& handler = *handler_;
    handler_ = nullptr;  // the handler may dial again from inside on_dialed
    if (!result) {
      handler.on_dialed(Err{result.error()});
      return;
    }
    handler.on_dialed(make_socket_transport(loop_, result.value()));
  }

  engine::Loop& loop_;
  engine::Address peer_;
  uint32_t timeout_ms_;
  DialHandler* handler_ = nullptr;
  engine::Connector connector_;
};

// Every transport of `inner` passes `handshake` before its handler gets it.
class HandshakeDialer final : public Dialer, private DialHandler {
 public:
  HandshakeDialer(engine::Loop& loop, std::unique_ptr<Dialer> inner, std::shared_ptr<Handshake> handshake) noexcept
      : loop_(loop), inner_(std::move(inner)), handshake_(std::move(handshake)) {}

  void dial(DialHandler& handler) noexcept override {
    RM_ASSERT(handler_ == nullptr);
    handler_ = &handler;
    inner_->dial(*this);
  }
  bool in_progress() const noexcept override { return handler_ != nullptr; }
  void cancel() noexcept override { inner_->cancel(); }

 private:
  void on_dialed(Result<std::unique_ptr<Transport>, engine::IoError> result) noexcept override {
    DialHandler& handler = *handler_;
    handler_ = nullptr;
    if (!result) {
      handler.on_dialed(Err{result.error()});
      return;
    }
    // The handshake runs once the connection starts the transport; its failure is the
    // transport's error, as for any transport lost early.
    handler.on_dialed(handshake_->wrap(loop_, std::move(result.value()), true));
  }

  engine::Loop& loop_;
  std::unique_ptr<Dialer> inner_;
  std::shared_ptr<Handshake> handshake_;
  DialHandler* handler_ = nullptr;
};

}  // namespace

std::unique_ptr<Transport> make_socket_transport(engine::Loop& loop, int fd) {
  return std::make_unique<SocketTransport>(loop, fd);
}

std::unique_ptr<Dialer> make_tcp_dialer(engine::Loop& loop, const engine::Address& peer, uint32_t timeout_ms) {
  return std::make_unique<TcpDialer>(loop, peer, timeout_ms);
}

}  // namespace ringmux::mux

namespace ringmux::mux {

std::unique_ptr<Dialer> make_handshake_dialer(engine::Loop& loop, std::unique_ptr<Dialer> inner,
                                              std::shared_ptr<Handshake> handshake) {
  return std::make_unique<HandshakeDialer>(loop, std::move(inner), std::move(handshake));
}

}  // namespace ringmux::mux
