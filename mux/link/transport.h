// What carries a session's bytes under the link, and what makes a new one.
//
// Transport: one byte stream under a session (a TCP connection today; a TLS stream over
// one, or a simulated pipe in the resume simulation). The link (mux::Connection) replaces
// it when it breaks. The contract is engine::Socket's: received bytes are lent for the
// duration of the callback, at most one send is in flight and it completes whole, an error
// is reported once and then the transport only waits for close(), and close() ends with
// on_transport_closed once nothing of it is in flight (possibly inside close()).
//
// Dialer: how the dialing side gets a new transport for a resume (TCP connect to the peer
// by default; a user-supplied one may add a handshake, a proxy, another route). One attempt
// at a time, each ending in exactly one on_dialed.
//
// Threads: both live on the connection's loop and are used on its thread only.
#pragma once

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "ringmux/base/result.h"
#include "ringmux/engine/errors.h"
#include "ringmux/engine/socket.h"

namespace ringmux::engine {
class Loop;
}

namespace ringmux::mux {

// One direction's keys of a TLS 1.3 connection, for a record layer in the kernel (kTLS).
struct KernelTlsKeys {
  enum class Cipher : uint8_t { aes_128_gcm, aes_256_gcm, chacha20_poly1305 };
  Cipher cipher = Cipher::aes_128_gcm;
  std::array<std::byte, 32> key{};  // key_bytes() of them
  std::array<std::byte, 12> iv{};   // the traffic IV: the record nonce is it XOR the sequence
  uint64_t sequence = 0;            // the next record's sequence number in this direction
  std::size_t key_bytes() const noexcept { return cipher == Cipher::aes_128_gcm ? 16 : 32; }
};

// Where a transport's TLS records are sealed and opened.
enum class RecordLayer : uint8_t {
  none,        // no TLS
  user_space,  // OpenSSL in this process, both directions
  kernel_rx,   // the kernel opens received records; this process seals
  kernel,      // the kernel both ways (kTLS)
};
const char* describe(RecordLayer layer) noexcept;

class Transport;

// A transport taken off its loop whole (Transport::release), to be made again on another
// loop (adopt): the socket's fd and what the layers above it keep (a TLS connection's
// OpenSSL object with whatever it buffered, the peer's identity). It crosses threads inside
// a task posted to the adopting loop (Engine::post): the post orders the releasing loop's
// last use before the adopting loop's first, and nothing of it is shared meanwhile.
class ReleasedTransport {
 public:
  virtual ~ReleasedTransport() = default;  // closes what was never adopted
  // The transport again, on `loop` and used on its thread from now on; not started:
  // start() resumes receiving where the released one stopped.
  virtual std::unique_ptr<Transport> adopt(engine::Loop& loop) = 0;
};

class TransportHandler {
 public:
  // Bytes received, valid only during the call.
  virtual void on_transport_recv(std::span<const std::byte> bytes) noexcept = 0;
  // The last send() has been handed whole to the transport below.
  virtual void on_transport_sent() noexcept = 0;
  // The transport is unusable (closed by the peer, reset, failed): once; close() follows.
  virtual void on_transport_error(engine::IoError error) noexcept = 0;
  // close() has finished: nothing is in flight, no callback follows.
  virtual void on_transport_closed() noexcept = 0;
  // After pause_recv(): no byte more is delivered before resume_recv().
  virtual void on_transport_recv_stopped() noexcept {}

 protected:
  ~TransportHandler() = default;
};

class Transport {
 public:
  virtual ~Transport() = default;  // only once closed (or never started)

  // Starts receiving into `handler`, which receives every callback from now on. Once; or,
  // on a transport another handler started (an acceptor that read the HELLO through the
  // handshake), moves every later callback to `handler`.
  virtual void start(TransportHandler& handler) noexcept = 0;
  // Sends the parts in order, as one write (any may be empty, not all); they stay valid
  // and unchanged until on_transport_sent or on_transport_error. One send at a time.
  virtual void send(std::span<const std::byte> first, std::span<const std::byte> second,
                    std::span<const std::byte> third) noexcept = 0;
  virtual bool send_in_flight() const noexcept = 0;
  // Started, no error reported, not closing.
  virtual bool usable() const noexcept = 0;
  // The session's last words (an ERROR frame) when no send is in flight: written at once
  // if the transport can take them (best effort, never blocks), then the transport is
  // closed for writing and what the peer sent that will never be read is dropped, so that
  // the peer reads our bytes rather than a reset.
  virtual void send_last(std::span<const std::byte> bytes) noexcept = 0;
  // Starts teardown; on_transport_closed follows. Idempotent.
  virtual void close() noexcept = 0;

  // What a handshake stage established, for a resume's proof (wire/SPEC.md, "Authenticated
  // resume"). The peer's authenticated identity (for TLS, the SHA-256 of its certificate);
  // empty when the transport authenticates nobody (plain TCP).
  virtual std::string peer_identity() const { return {}; }
  // Fills `out` with keying material bound to this transport and `label`, which both ends
  // derive and nobody else sees; false when the transport has none (plain TCP).
  virtual bool export_secret(std::string_view label, std::span<std::byte> out) const noexcept {
    (void)label;
    (void)out;
    return false;
  }
  // Whether every byte received was authenticated by the transport (TLS records): the
  // session then leaves payload checksums unchecked if the peer agrees (SPEC §4.1).
  virtual bool authenticates_bytes() const noexcept { return false; }
  // Why the transport failed, when it knows more than its IoError (a handshake's cause).
  virtual std::string failure_text() const { return {}; }
  virtual RecordLayer record_layer() const noexcept { return RecordLayer::none; }

  // ---- moving a started transport to another loop (a per-core server's hand-over) ----
  // Whether release() can work: the transport and every layer below it can move.
  virtual bool can_release() const noexcept { return false; }
  // Gives up what the transport is made of, for another loop to adopt. Only after
  // pause_recv() and its on_transport_recv_stopped (which a transport that can release
  // reports once nothing is being sent either), not from inside a callback of it, with no
  // send of the handler's in flight. The transport is then closed: no callback follows and
  // it may be destroyed.
  virtual std::unique_ptr<ReleasedTransport> release() noexcept { return nullptr; }

  // ---- for a TLS transport above this one that moves its record layer into the kernel ----
  // Whether install_kernel_tls can work (a TCP socket, on a kernel with the `tls` ULP).
  virtual bool kernel_tls_capable() const noexcept { return false; }
  // Stops receiving until resume_recv(); the handler's on_transport_recv_stopped follows
  // once every byte taken from the socket was delivered (possibly inside this call).
  virtual void pause_recv() noexcept {}
  virtual void resume_recv() noexcept {}
  // From now on one direction's records are sealed (`transmit`) or opened by the layer
  // below with `keys`: sends and receives carry plaintext. Only with no send in flight and,
  // for receiving, while receiving is stopped at a record boundary. 0, or the errno.
  virtual int install_kernel_tls(bool transmit, const KernelTlsKeys& keys) noexcept {
    (void)transmit;
    (void)keys;
    return EOPNOTSUPP;
  }
};

// A handshake stage: what every new transport (first connection, redial, accepted socket)
// passes before the session sees a byte. TLS is one (mux/link/tls.h); an application may
// bring its own.
class Handshake {
 public:
  virtual ~Handshake() = default;
  // Wraps `raw` (not started) for the dialing side (`dialer`) or the accepting side. The
  // returned transport runs the handshake once started, holds the session's first send
  // until it is done, and delivers received bytes only after it; a failed handshake is its
  // on_transport_error (IoError::handshake_failed).
  virtual std::unique_ptr<Transport> wrap(engine::Loop& loop, std::unique_ptr<Transport> raw, bool dialer) = 0;
};

// A connected TCP socket as a transport (engine::Socket: multishot receive from the loop's
// provided buffers, gather sends).
std::unique_ptr<Transport> make_socket_transport(engine::Loop& loop, int fd);

class DialHandler {
 public:
  // The attempt is over: a transport (not started; the handler owns it) or why not
  // (refused, timed_out, unreachable, canceled, ...).
  virtual void on_dialed(Result<std::unique_ptr<Transport>, engine::IoError> result) noexcept = 0;

 protected:
  ~DialHandler() = default;
};

class Dialer {
 public:
  virtual ~Dialer() = default;  // only with no attempt in progress
  // Starts an attempt; exactly one on_dialed follows (inside this call when the attempt
  // cannot even start, e.g. out of file descriptors).
  virtual void dial(DialHandler& handler) noexcept = 0;
  virtual bool in_progress() const noexcept = 0;
  // Ends a running attempt early: its on_dialed follows (canceled, or a transport that
  // arrived meanwhile, which the handler then closes).
  virtual void cancel() noexcept = 0;
};

// TCP connect to `peer` within `timeout_ms` (engine::Connector), as a socket transport.
std::unique_ptr<Dialer> make_tcp_dialer(engine::Loop& loop, const engine::Address& peer, uint32_t timeout_ms);

// `inner`'s transports, each wrapped by `handshake` for the dialing side.
std::unique_ptr<Dialer> make_handshake_dialer(engine::Loop& loop, std::unique_ptr<Dialer> inner,
                                              std::shared_ptr<Handshake> handshake);

}  // namespace ringmux::mux
