// TCP on a loop: addresses, a listener with multishot accept, connect with a timeout, and
// Socket, a connected stream with multishot receive into the loop's provided buffers and
// a single-flight send.
//
// Sockets know nothing about frames. Receive: bytes are handed to the handler straight
// from the provided buffer (valid only during the call) and the buffer goes back to the
// ring right after. Send: at most one send in flight per socket (concurrent sends on one
// socket may be reordered by the kernel); short sends are resumed here; MSG_NOSIGNAL
// always. Teardown: close() cancels every operation, waits for all their completions, and
// only then closes the fd, because closing an fd does not cancel io_uring operations and
// the number would be reused.
//
// Every class here lives on one loop and is used only on that loop's thread. Each object
// must outlive its operations: destroy it only once it is closed (asserted).
#pragma once

#include <linux/time_types.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "ringmux/engine/completion.h"
#include "ringmux/engine/errors.h"
#include "ringmux/base/limits.h"
#include "ringmux/base/result.h"
#include "ringmux/engine/timer.h"

namespace ringmux::engine {

class Loop;

// An IPv4 or IPv6 socket address.
struct Address {
  sockaddr_storage storage{};
  socklen_t length = 0;

  // Parses "a.b.c.d:port" or "[v6]:port". Errors: address_invalid.
  static Result<Address, IoError> parse(std::string_view text);
  static Address loopback_v4(uint16_t port);
  uint16_t port() const noexcept;
  std::string to_string() const;
  // The same text into `out`, with no allocation; returns its length (no terminator counted).
  static constexpr std::size_t text_bytes_max = 64;  // "[" v6 (45) "]:" port (5), and a NUL
  std::size_t format(std::span<char, text_bytes_max> out) const noexcept;
  // Same family, address and port (no string built: the cluster layer compares per call).
  bool operator==(const Address& other) const noexcept;
  const sockaddr* sockaddr_ptr() const noexcept { return reinterpret_cast<const sockaddr*>(&storage); }
};

// Sets the options every ringmux TCP socket gets: TCP_NODELAY (frames are batched by the
// writer, so Nagle only adds latency). Returns false if the kernel refused.
bool set_default_socket_options(int fd) noexcept;

// ---- Listener --------------------------------------------------------------------------

class ListenerHandler {
 public:
  // A new connection; the handler owns `fd` (wrap it in a Socket or close it).
  virtual void on_accept(int fd) noexcept = 0;
  // Accepting failed (for example too_many_files). The listener keeps accepting.
  virtual void on_accept_error(IoError error) noexcept = 0;
  // close() has finished: no more callbacks; the listener may be destroyed.
  virtual void on_listener_closed() noexcept = 0;

 protected:
  ~ListenerHandler() = default;
};

class Listener {
 public:
  enum class State : uint8_t { idle, listening, closing, closed };

  Listener(Loop& loop, ListenerHandler& handler) noexcept;
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // Binds (SO_REUSEADDR), listens and arms a multishot accept. Port 0 picks a free port;
  // address() then tells which. Errors: address_in_use, address_invalid,
  // permission_denied, too_many_files.
  Result<void, IoError> listen(const Address& address);
  const Address& address() const noexcept { return address_; }
  State state() const noexcept { return state_; }
  uint64_t accepted() const noexcept { return accepted_; }
  // Stops accepting; on_listener_closed() follows once the accept is cancelled.
  void close() noexcept;

 private:
  static void on_accept_complete(Completion& completion, int32_t result, uint32_t flags) noexcept;
  static void on_rearm_timer(Timer& timer) noexcept;
  void arm_accept() noexcept;
  void maybe_finish_close() noexcept;

  Loop& loop_;
  ListenerHandler& handler_;
  State state_ = State::idle;
  int fd_ = -1;
  Address address_{};
  uint64_t accepted_ = 0;
  Completion accept_;
  // After an accept error (out of fds, say) the multishot accept is re-armed after a
  // pause instead of at once, which would spin on the same error.
  Timer rearm_timer_;
};

// ---- Connector -------------------------------------------------------------------------

class ConnectHandler {
 public:
  // The connect finished: a connected fd (owned by the handler from now) or an error
  // (refused, timed_out, unreachable, address_invalid, canceled, too_many_files).
  virtual void on_connect(Result<int, IoError> result) noexcept = 0;

 protected:
  ~ConnectHandler() = default;
};

// One connect attempt at a time: IORING_OP_CONNECT linked to an IORING_OP_LINK_TIMEOUT, so
// the kernel enforces the timeout with no timer of ours.
class Connector {
 public:
  Connector(Loop& loop, ConnectHandler& handler) noexcept;
  ~Connector();
  Connector(const Connector&) = delete;
  Connector& operator=(const Connector&) = delete;

  // Starts connecting; exactly one on_connect() follows. Asserts no attempt is running.
  void connect(const Address& address, uint32_t timeout_ms = limits::connect_timeout_ms_default) noexcept;
  bool in_progress() const noexcept { return fd_ >= 0; }
  // Cancels a running attempt; on_connect(canceled) follows.
  void cancel() noexcept;

 private:
  static void on_connect_complete(Completion& completion, int32_t result, uint32_t flags) noexcept;
  static void on_timeout_complete(Completion& completion, int32_t result, uint32_t flags) noexcept;
  void maybe_finish() noexcept;

  Loop& loop_;
  ConnectHandler& handler_;
  int fd_ = -1;
  int32_t connect_result_ = 0;
  bool cancel_requested_ = false;
  Address address_{};
  __kernel_timespec timeout_{};  // read by the kernel while the link timeout is armed
  Completion connect_;
  Completion timeout_completion_;
};

// ---- Socket ----------------------------------------------------------------------------

class SocketHandler {
 public:
  // Received bytes, valid only during the call: copy what must outlive it.
  virtual void on_recv(std::span<const std::byte> bytes) noexcept = 0;
  // The whole span given to the last send() has been written to the kernel.
  virtual void on_send_complete() noexcept = 0;
  // The connection is unusable: closed by the peer, reset, or failed. Delivered once, and
  // the socket stops receiving; the handler then calls close().
  virtual void on_error(IoError error) noexcept = 0;
  // close() has finished: no operation is in flight, the fd is closed, no callback follows.
  virtual void on_closed() noexcept = 0;
  // After pause_recv(): the receive has ended, every byte it took from the socket was
  // delivered, and no on_recv comes before resume_recv(). What the peer sends now stays in
  // the socket (kTLS is installed at this point: mux/link/tls.cpp).
  virtual void on_recv_stopped() noexcept {}

 protected:
  ~SocketHandler() = default;
};

class Socket {
 public:
  // open: receiving and sending; failed: an error was reported, waiting for close();
  // closing: cancelling and waiting for completions; closed: the fd is closed.
  enum class State : uint8_t { open, failed, closing, closed };

  // Adopts the connected `fd` (closed by this socket) and applies the default options.
  Socket(Loop& loop, int fd, SocketHandler& handler) noexcept;
  ~Socket();
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  // Arms the multishot receive. Call once, after construction.
  void start() noexcept;
  // Sends all of `bytes`; they must stay valid and unchanged until on_send_complete() or
  // on_error(). Asserts that no send is in flight and that the socket is open.
  void send(std::span<const std::byte> bytes) noexcept;
  // Gather send: the parts in order in one operation (sendmsg), same contract as send.
  // Any may be empty, not all.
  void send(std::span<const std::byte> first, std::span<const std::byte> second) noexcept;
  void send(std::span<const std::byte> first, std::span<const std::byte> second,
            std::span<const std::byte> third) noexcept;
  bool send_in_flight() const noexcept { return send_.submitted || send_remaining_ != 0; }
  // Stops receiving (cancels the multishot receive) until resume_recv(): a consumer that
  // cannot keep up bounds its memory this way and the kernel's window pushes back on the
  // peer. A few CQEs already in the ring may still be delivered after the call;
  // on_recv_stopped follows the last of them (inside this call if no receive is armed).
  void pause_recv() noexcept;
  void resume_recv() noexcept;
  bool recv_paused() const noexcept { return recv_paused_; }
  // Starts teardown; on_closed() follows (possibly before close() returns when nothing
  // is in flight). Idempotent.
  void close() noexcept;
  // Like close(), but the peer sees a reset (SO_LINGER 0) instead of an orderly close.
  void abort() noexcept;
  // Gives up the fd without closing it, for a socket on another loop to adopt (a server's
  // hand-over of a connection to the loop that owns its session). Only with nothing in
  // flight, so that nothing is left to cancel or wait for: receiving stopped (pause_recv,
  // then on_recv_stopped) and no send; not from inside one of this socket's callbacks
  // (asserted). The socket is then closed (no on_closed follows) and may be destroyed;
  // the caller owns the fd.
  int release() noexcept;

  State state() const noexcept { return state_; }
  int fd() const noexcept { return fd_; }
  uint64_t bytes_received() const noexcept { return bytes_received_; }
  uint64_t bytes_sent() const noexcept { return bytes_sent_; }
  uint64_t recv_rearms() const noexcept { return recv_rearms_; }

 private:
  static void on_recv_complete(Completion& completion, int32_t result, uint32_t flags) noexcept;
  static void on_send_complete(Completion& completion, int32_t result, uint32_t flags) noexcept;
  void arm_recv() noexcept;
  void recv_ended() noexcept;
  void submit_send() noexcept;
  void fail(IoError error) noexcept;
  void maybe_finish_close() noexcept;

  Loop& loop_;
  SocketHandler& handler_;
  State state_ = State::open;
  // True while a handler callback runs: a close() from inside it must not finish (and
  // let the handler destroy this socket) before the callback has returned.
  bool dispatching_ = false;
  bool recv_paused_ = false;
  bool recv_ending_ = false;  // the receive's last CQE is being handled
  int fd_;
  // The unsent rest of the current send: up to two parts, sent in order.
  static constexpr std::size_t send_parts_max = 3;
  std::span<const std::byte> send_parts_[send_parts_max];
  std::size_t send_part_count_ = 0;
  std::size_t send_remaining_ = 0;
  iovec send_iov_[send_parts_max] = {};
  msghdr send_msg_ = {};  // read by the kernel while a sendmsg is in flight
  uint64_t bytes_received_ = 0;
  uint64_t bytes_sent_ = 0;
  uint64_t recv_rearms_ = 0;
  Completion recv_;
  Completion send_;
};

}  // namespace ringmux::engine
