// The TCP transport and dialer of mux/link/transport.h: engine::Socket and engine::Connector
// under the Transport and Dialer interfaces.
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

#include "ringmux/base/assert.h"
#include "ringmux/engine/loop.h"
#include "ringmux/mux/link/tls.h"
#include "ringmux/mux/link/transport.h"

namespace ringmux::mux {

namespace {

// The kernel's crypto_info for one TLS 1.3 direction: the traffic IV's first 4 bytes are the
// salt, the other 8 the per-connection IV; the sequence goes big-endian.
template <typename Info>
int set_kernel_tls_info(int fd, bool transmit, const KernelTlsKeys& keys, uint16_t cipher_type) {
  Info info{};
  info.info.version = TLS_1_3_VERSION;
  info.info.cipher_type = cipher_type;
  static_assert(sizeof(info.salt) + sizeof(info.iv) == sizeof(keys.iv));
  std::memcpy(info.key, keys.key.data(), sizeof(info.key));
  std::memcpy(info.salt, keys.iv.data(), sizeof(info.salt));
  std::memcpy(info.iv, keys.iv.data() + sizeof(info.salt), sizeof(info.iv));
  for (std::size_t i = 0; i < sizeof(info.rec_seq); i++) {
    info.rec_seq[i] = static_cast<unsigned char>(keys.sequence >> (8 * (sizeof(info.rec_seq) - 1 - i)));
  }
  const int rc = ::setsockopt(fd, SOL_TLS, transmit ? TLS_TX : TLS_RX, &info, sizeof(info));
  const int error = rc == 0 ? 0 : errno;
  OPENSSL_cleanse(&info, sizeof(info));
  return error;
}

int set_kernel_tls_keys(int fd, bool transmit, const KernelTlsKeys& keys) {
  switch (keys.cipher) {
    case KernelTlsKeys::Cipher::aes_128_gcm:
      return set_kernel_tls_info<tls12_crypto_info_aes_gcm_128>(fd, transmit, keys, TLS_CIPHER_AES_GCM_128);
    case KernelTlsKeys::Cipher::aes_256_gcm:
      return set_kernel_tls_info<tls12_crypto_info_aes_gcm_256>(fd, transmit, keys, TLS_CIPHER_AES_GCM_256);
    case KernelTlsKeys::Cipher::chacha20_poly1305:
      return set_kernel_tls_info<tls12_crypto_info_chacha20_poly1305>(fd, transmit, keys,
                                                                      TLS_CIPHER_CHACHA20_POLY1305);
  }
  return EINVAL;
}

class SocketTransport final : public Transport, private engine::SocketHandler {
 public:
  SocketTransport(engine::Loop& loop, int fd, bool tls_ulp = false) noexcept
      : socket_(loop, fd, *this), tls_ulp_(tls_ulp) {}
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

  bool can_release() const noexcept override { return true; }
  std::unique_ptr<ReleasedTransport> release() noexcept override;

  bool kernel_tls_capable() const noexcept override { return tls_kernel_offload_available(); }
  void pause_recv() noexcept override { socket_.pause_recv(); }
  void resume_recv() noexcept override { socket_.resume_recv(); }
  int install_kernel_tls(bool transmit, const KernelTlsKeys& keys) noexcept override {
    RM_ASSERT(!socket_.send_in_flight());
    const int fd = socket_.fd();
    if (!tls_ulp_) {
      if (::setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")) != 0) return errno;
      tls_ulp_ = true;  // until a direction is set the socket behaves as plain TCP
    }
    return set_kernel_tls_keys(fd, transmit, keys);
  }

 private:
  void on_recv(std::span<const std::byte> bytes) noexcept override { handler_->on_transport_recv(bytes); }
  void on_recv_stopped() noexcept override { handler_->on_transport_recv_stopped(); }
  void on_send_complete() noexcept override { handler_->on_transport_sent(); }
  void on_error(engine::IoError error) noexcept override { handler_->on_transport_error(error); }
  void on_closed() noexcept override {
    if (handler_ != nullptr) handler_->on_transport_closed();
  }

  TransportHandler* handler_ = nullptr;
  engine::Socket socket_;
  bool tls_ulp_ = false;  // the `tls` ULP is attached
};

// A socket transport's fd (and whether the `tls` ULP is on it) between two loops.
class ReleasedSocket final : public ReleasedTransport {
 public:
  ReleasedSocket(int fd, bool tls_ulp) noexcept : fd_(fd), tls_ulp_(tls_ulp) {}
  ~ReleasedSocket() override {
    if (fd_ >= 0) ::close(fd_);
  }
  std::unique_ptr<Transport> adopt(engine::Loop& loop) override {
    RM_ASSERT(fd_ >= 0);
    const int fd = fd_;
    fd_ = -1;
    return std::make_unique<SocketTransport>(loop, fd, tls_ulp_);
  }

 private:
  int fd_;
  bool tls_ulp_;
};

std::unique_ptr<ReleasedTransport> SocketTransport::release() noexcept {
  RM_ASSERT(handler_ != nullptr);
  return std::make_unique<ReleasedSocket>(socket_.release(), tls_ulp_);
}

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

const char* describe(RecordLayer layer) noexcept {
  switch (layer) {
    case RecordLayer::none:
      return "none";
    case RecordLayer::user_space:
      return "user space";
    case RecordLayer::kernel_rx:
      return "kernel receives (kTLS rx), user space sends";
    case RecordLayer::kernel:
      return "kernel (kTLS rx and tx)";
  }
  return "?";
}

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
