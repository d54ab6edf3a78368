#include "ringmux/engine/socket.h"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>

#include "ringmux/base/assert.h"
#include "ringmux/engine/loop.h"

namespace ringmux::engine {

namespace {

// Pause before re-arming an accept that failed, so an exhausted fd table is not spun on.
constexpr uint64_t accept_rearm_delay_ns = 10'000'000;

// One send SQE never asks for more than this; larger spans go out in several sends
// (the length field of an SQE is 32 bits).
constexpr std::size_t send_bytes_per_op_max = 1u << 30;

}  // namespace

// ---- Address -----------------------------------------------------------------------------

Result<Address, IoError> Address::parse(std::string_view text) {
  Address address;
  std::string host;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return Err{IoError::address_invalid};
    }
    host = std::string(text.substr(1, close - 1));
    port_text = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return Err{IoError::address_invalid};
    host = std::string(text.substr(0, colon));
    port_text = text.substr(colon + 1);
  }
  unsigned port = 0;
  const auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port > 65535 || port_text.empty()) {
    return Err{IoError::address_invalid};
  }
  auto* v4 = reinterpret_cast<sockaddr_in*>(&address.storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&address.storage);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    address.length = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    address.length = sizeof(sockaddr_in6);
  } else {
    return Err{IoError::address_invalid};
  }
  return address;
}

Address Address::loopback_v4(uint16_t port) {
  Address address;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&address.storage);
  v4->sin_family = AF_INET;
  v4->sin_port = htons(port);
  v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.length = sizeof(sockaddr_in);
  return address;
}

bool Address::operator==(const Address& other) const noexcept {
  if (storage.ss_family != other.storage.ss_family) return false;
  if (storage.ss_family == AF_INET) {
    const auto& a = reinterpret_cast<const sockaddr_in&>(storage);
    const auto& b = reinterpret_cast<const sockaddr_in&>(other.storage);
    return a.sin_port == b.sin_port && a.sin_addr.s_addr == b.sin_addr.s_addr;
  }
  if (storage.ss_family == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6&>(storage);
    const auto& b = reinterpret_cast<const sockaddr_in6&>(other.storage);
    return a.sin6_port == b.sin6_port && a.sin6_scope_id == b.sin6_scope_id &&
           std::memcmp(&a.sin6_addr, &b.sin6_addr, sizeof(a.sin6_addr)) == 0;
  }
  return length == other.length && std::memcmp(&storage, &other.storage, length) == 0;
}

uint16_t Address::port() const noexcept {
  if (storage.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage)->sin_port);
  if (storage.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_port);
  return 0;
}

std::size_t Address::format(std::span<char, text_bytes_max> out) const noexcept {
  char host[INET6_ADDRSTRLEN] = {};
  int written = 0;
  // snprintf rather than string concatenation: GCC 12 at -O3 reports a false -Wrestrict
  // on the latter.
  if (storage.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage)->sin_addr, host, sizeof(host));
    written = std::snprintf(out.data(), out.size(), "%s:%u", host, static_cast<unsigned>(port()));
  } else if (storage.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_addr, host, sizeof(host));
    written = std::snprintf(out.data(), out.size(), "[%s]:%u", host, static_cast<unsigned>(port()));
  } else {
    written = std::snprintf(out.data(), out.size(), "(no address)");
  }
  RM_ASSERT(written > 0 && static_cast<std::size_t>(written) < out.size());
  return static_cast<std::size_t>(written);
}

std::string Address::to_string() const {
  std::array<char, text_bytes_max> text;
  return std::string(text.data(), format(text));
}

bool set_default_socket_options(int fd) noexcept {
  const int one = 1;
  return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0;
}

// ---- Listener ----------------------------------------------------------------------------

Listener::Listener(Loop& loop, ListenerHandler& handler) noexcept
    : loop_(loop), handler_(handler), rearm_timer_(&Listener::on_rearm_timer, this) {
  accept_.callback = &Listener::on_accept_complete;
  accept_.context = this;
}

Listener::~Listener() {
  RM_ASSERT(state_ == State::idle || state_ == State::closed);
  RM_ASSERT(!accept_.submitted);
}

Result<void, IoError> Listener::listen(const Address& address) {
  RM_ASSERT(state_ == State::idle);
  const int fd = ::socket(address.storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Err{io_error_from_errno_logged(errno, "socket", -1)};
  const int one = 1;
  (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd, address.sockaddr_ptr(), address.length) != 0 || ::listen(fd, limits::listen_backlog) != 0) {
    const int err = errno;
    ::close(fd);
    return Err{io_error_from_errno_logged(err, "bind/listen", fd)};
  }
  address_ = address;
  address_.length = sizeof(address_.storage);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&address_.storage), &address_.length) != 0) {
    address_ = address;
  }
  fd_ = fd;
  state_ = State::listening;
  arm_accept();
  return {};
}

void Listener::arm_accept() noexcept {
  RM_ASSERT(state_ == State::listening && !accept_.submitted);
  io_uring_sqe* sqe = loop_.sqe();
  io_uring_prep_multishot_accept(sqe, fd_, nullptr, nullptr, SOCK_CLOEXEC);
  loop_.prepare(sqe, accept_);
}

void Listener::on_accept_complete(Completion& completion, int32_t result, uint32_t flags) noexcept {
  Listener& self = owner_of<Listener>(completion);
  const bool more = (flags & IORING_CQE_F_MORE) != 0;
  if (result >= 0) {
    if (self.state_ != State::listening) {
      ::close(result);  // accepted just before the cancellation took effect
    } else {
      self.accepted_++;
      set_default_socket_options(result);
      self.handler_.on_accept(result);
    }
    if (!more && self.state_ == State::listening) self.arm_accept();
  } else if (self.state_ == State::listening) {
    if (result != -EINTR && result != -EAGAIN && result != -ECANCELED) {
      self.handler_.on_accept_error(io_error_from_errno_logged(-result, "accept", self.fd_));
    }
    if (!more && self.state_ == State::listening) {
      self.loop_.timer_start(self.rearm_timer_, accept_rearm_delay_ns);
    }
  }
  self.maybe_finish_close();
}

void Listener::on_rearm_timer(Timer& timer) noexcept {
  auto& self = *static_cast<Listener*>(timer.context());
  if (self.state_ == State::listening && !self.accept_.submitted) self.arm_accept();
}

void Listener::close() noexcept {
  if (state_ == State::closing || state_ == State::closed) return;
  if (state_ == State::idle) {
    state_ = State::closed;
    handler_.on_listener_closed();
    return;
  }
  state_ = State::closing;
  loop_.timer_cancel(rearm_timer_);
  if (accept_.submitted) {
    io_uring_prep_cancel(loop_.sqe_unowned(), &accept_, 0);
  }
  maybe_finish_close();
}

void Listener::maybe_finish_close() noexcept {
  if (state_ != State::closing || accept_.submitted) return;
  ::close(fd_);
  fd_ = -1;
  state_ = State::closed;
  handler_.on_listener_closed();
}

// ---- Connector ---------------------------------------------------------------------------

Connector::Connector(Loop& loop, ConnectHandler& handler) noexcept : loop_(loop), handler_(handler) {
  connect_.callback = &Connector::on_connect_complete;
  connect_.context = this;
  timeout_completion_.callback = &Connector::on_timeout_complete;
  timeout_completion_.context = this;
}

Connector::~Connector() { RM_ASSERT(!connect_.submitted && !timeout_completion_.submitted); }

void Connector::connect(const Address& address, uint32_t timeout_ms) noexcept {
  RM_ASSERT(!in_progress());
  const int fd = ::socket(address.storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    handler_.on_connect(Err{io_error_from_errno_logged(errno, "socket", -1)});
    return;
  }
  set_default_socket_options(fd);
  fd_ = fd;
  address_ = address;
  connect_result_ = 0;
  cancel_requested_ = false;
  timeout_.tv_sec = timeout_ms / 1000;
  timeout_.tv_nsec = static_cast<long long>(timeout_ms % 1000) * 1'000'000;
  // Both SQEs must go to the kernel in the same submission for the link to hold.
  loop_.reserve_sqes(2);
  io_uring_sqe* sqe = loop_.sqe();
  io_uring_prep_connect(sqe, fd_, address_.sockaddr_ptr(), address_.length);
  sqe->flags |= IOSQE_IO_LINK;
  loop_.prepare(sqe, connect_);
  sqe = loop_.sqe();
  io_uring_prep_link_timeout(sqe, &timeout_, 0);
  loop_.prepare(sqe, timeout_completion_);
}

void Connector::cancel() noexcept {
  if (!in_progress() || !connect_.submitted) return;
  cancel_requested_ = true;
  io_uring_prep_cancel(loop_.sqe_unowned(), &connect_, 0);
}

void Connector::on_connect_complete(Completion& completion, int32_t result, uint32_t) noexcept {
  auto& self = owner_of<Connector>(completion);
  self.connect_result_ = result;
  self.maybe_finish();
}

void Connector::on_timeout_complete(Completion& completion, int32_t, uint32_t) noexcept {
  owner_of<Connector>(completion).maybe_finish();
}

void Connector::maybe_finish() noexcept {
  // The link timeout always completes too (-ETIME when it fired, -ECANCELED or -ENOENT
  // when the connect won): the attempt is over only when both CQEs are in.
  if (connect_.submitted || timeout_completion_.submitted) return;
  const int fd = fd_;
  fd_ = -1;
  if (connect_result_ == 0) {
    handler_.on_connect(fd);
    return;
  }
  ::close(fd);
  IoError error = IoError::other;
  if (connect_result_ == -ECANCELED) {
    error = cancel_requested_ ? IoError::canceled : IoError::timed_out;
  } else {
    error = io_error_from_errno_logged(-connect_result_, "connect", fd);
  }
  handler_.on_connect(Err{error});
}

// ---- Socket ------------------------------------------------------------------------------

Socket::Socket(Loop& loop, int fd, SocketHandler& handler) noexcept : loop_(loop), handler_(handler), fd_(fd) {
  RM_ASSERT(fd >= 0);
  set_default_socket_options(fd);
  recv_.callback = &Socket::on_recv_complete;
  recv_.context = this;
  send_.callback = &Socket::on_send_complete;
  send_.context = this;
}

Socket::~Socket() {
  RM_ASSERT(state_ == State::closed);
  RM_ASSERT(!recv_.submitted && !send_.submitted);
}

void Socket::start() noexcept {
  RM_ASSERT(state_ == State::open);
  arm_recv();
}

void Socket::arm_recv() noexcept {
  RM_ASSERT(!recv_.submitted);
  io_uring_sqe* sqe = loop_.sqe();
  io_uring_prep_recv_multishot(sqe, fd_, nullptr, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = loop_.buffers().group_id();
  loop_.prepare(sqe, recv_);
}

void Socket::on_recv_complete(Completion& completion, int32_t result, uint32_t flags) noexcept {
  Socket& self = owner_of<Socket>(completion);
  const bool more = (flags & IORING_CQE_F_MORE) != 0;
  self.dispatching_ = true;
  // The loop has marked the receive not submitted already: a pause or resume from inside
  // this CQE's callback leaves the report and the re-arm to recv_ended below.
  self.recv_ending_ = !more;
  if (result > 0) {
    RM_ASSERT(flags & IORING_CQE_F_BUFFER);
    const auto id = static_cast<uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
    BufferRing& buffers = self.loop_.buffers();
    const std::span<const std::byte> bytes = buffers.take(id, static_cast<uint32_t>(result));
    if (self.state_ == State::open) {
      self.bytes_received_ += static_cast<uint64_t>(result);
      self.handler_.on_recv(bytes);
    }
    buffers.recycle(id);
    if (!more) self.recv_ended();
  } else if (result == 0) {
    self.fail(IoError::closed);
  } else if (result == -ENOBUFS || result == -EINTR || result == -EAGAIN) {
    // The buffer ring ran dry (every buffer is in a CQE not yet handled): transient. The
    // data stays in the socket; the new receive is submitted after this batch of CQEs,
    // which hands those buffers back first.
    if (result == -ENOBUFS) self.loop_.note_recv_no_buffers();
    if (!more) self.recv_ended();
  } else if (result == -ECANCELED && self.state_ == State::open) {
    // Cancelled by pause_recv(); a resume_recv() that came meanwhile re-arms here.
    self.recv_ended();
  } else if (result != -ECANCELED) {
    self.fail(io_error_from_errno_logged(-result, "recv", self.fd_));
  }
  self.recv_ending_ = false;
  self.dispatching_ = false;
  self.maybe_finish_close();  // last: it may let the handler destroy the socket
}

// The multishot receive posted its last CQE: armed again, or, paused, it stays down and
// the handler hears that nothing more arrives.
void Socket::recv_ended() noexcept {
  recv_ending_ = false;
  if (state_ != State::open || recv_.submitted) return;
  if (!recv_paused_) {
    recv_rearms_++;
    arm_recv();
    return;
  }
  handler_.on_recv_stopped();
}

void Socket::pause_recv() noexcept {
  if (recv_paused_ || state_ != State::open) return;
  recv_paused_ = true;
  if (recv_.submitted) {
    io_uring_prep_cancel(loop_.sqe_unowned(), &recv_, 0);
  } else if (!recv_ending_) {  // else recv_ended reports it, after the CQE's callback
    handler_.on_recv_stopped();
  }
}

void Socket::resume_recv() noexcept {
  if (!recv_paused_) return;
  recv_paused_ = false;
  // If the cancelled receive has not completed yet (or its last CQE is being handled), its
  // final CQE re-arms it.
  if (state_ == State::open && !recv_.submitted && !recv_ending_) arm_recv();
}

void Socket::send(std::span<const std::byte> bytes) noexcept { send(bytes, {}, {}); }

void Socket::send(std::span<const std::byte> first, std::span<const std::byte> second) noexcept {
  send(first, second, {});
}

void Socket::send(std::span<const std::byte> first, std::span<const std::byte> second,
                  std::span<const std::byte> third) noexcept {
  RM_ASSERT(!send_in_flight());
  RM_ASSERT(state_ == State::open);
  send_part_count_ = 0;
  send_remaining_ = 0;
  for (std::span<const std::byte> part : {first, second, third}) {
    if (part.empty()) continue;  // the kernel need not see empty parts
    send_parts_[send_part_count_++] = part;
    send_remaining_ += part.size();
  }
  RM_ASSERT(send_remaining_ > 0);
  submit_send();
}

void Socket::submit_send() noexcept {
  io_uring_sqe* sqe = loop_.sqe();
  if (send_part_count_ == 1) {
    const std::size_t length = std::min(send_parts_[0].size(), send_bytes_per_op_max);
    io_uring_prep_send(sqe, fd_, send_parts_[0].data(), length, MSG_NOSIGNAL);
  } else {
    // Several parts: one sendmsg, so the peer gets them in one segment train and we pay
    // one operation. The iovecs and msghdr are members: the kernel reads them until the CQE.
    for (std::size_t i = 0; i < send_part_count_; i++) {
      send_iov_[i].iov_base = const_cast<std::byte*>(send_parts_[i].data());
      send_iov_[i].iov_len = send_parts_[i].size();
    }
    send_msg_ = {};
    send_msg_.msg_iov = send_iov_;
    send_msg_.msg_iovlen = send_part_count_;
    io_uring_prep_sendmsg(sqe, fd_, &send_msg_, MSG_NOSIGNAL);
  }
  loop_.prepare(sqe, send_);
}

void Socket::on_send_complete(Completion& completion, int32_t result, uint32_t) noexcept {
  Socket& self = owner_of<Socket>(completion);
  self.dispatching_ = true;
  if (result > 0) {
    const auto sent = static_cast<std::size_t>(result);
    RM_ASSERT(sent <= self.send_remaining_);
    self.bytes_sent_ += sent;
    self.send_remaining_ -= sent;
    // Advance over the parts: a short send may stop inside any one.
    std::size_t left = sent;
    std::size_t done = 0;
    while (done < self.send_part_count_ && left >= self.send_parts_[done].size()) {
      left -= self.send_parts_[done].size();
      done++;
    }
    for (std::size_t i = done; i < self.send_part_count_; i++) self.send_parts_[i - done] = self.send_parts_[i];
    self.send_part_count_ -= done;
    if (self.send_part_count_ > 0) self.send_parts_[0] = self.send_parts_[0].subspan(left);
    if (self.state_ == State::open) {
      if (self.send_remaining_ > 0) {
        self.submit_send();  // short send: resume where the kernel stopped
      } else {
        self.handler_.on_send_complete();
      }
    }
  } else if ((result == -EINTR || result == -EAGAIN) && self.state_ == State::open) {
    self.submit_send();
  } else {
    self.send_remaining_ = 0;
    if (result != -ECANCELED || self.state_ == State::open) {
      self.fail(result == 0 ? IoError::closed : io_error_from_errno_logged(-result, "send", self.fd_));
    }
  }
  if (self.state_ != State::open) self.send_remaining_ = 0;
  self.dispatching_ = false;
  self.maybe_finish_close();
}

void Socket::fail(IoError error) noexcept {
  if (state_ != State::open) return;
  state_ = State::failed;
  handler_.on_error(error);
}

void Socket::close() noexcept {
  if (state_ == State::closing || state_ == State::closed) return;
  state_ = State::closing;
  if (recv_.submitted || send_.submitted) {
    io_uring_prep_cancel_fd(loop_.sqe_unowned(), fd_, IORING_ASYNC_CANCEL_ALL);
  }
  maybe_finish_close();
}

void Socket::abort() noexcept {
  if (state_ == State::closing || state_ == State::closed) return;
  const linger reset{1, 0};
  (void)setsockopt(fd_, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
  close();
}

int Socket::release() noexcept {
  RM_ASSERT(state_ == State::open && !dispatching_);
  RM_ASSERT(recv_paused_ && !recv_.submitted && !send_in_flight() && !send_.submitted);
  const int fd = fd_;
  fd_ = -1;
  state_ = State::closed;
  return fd;
}

void Socket::maybe_finish_close() noexcept {
  if (state_ != State::closing || dispatching_ || recv_.submitted || send_.submitted) return;
  ::close(fd_);
  fd_ = -1;
  state_ = State::closed;
  handler_.on_closed();  // last: the handler may destroy this socket
}

}  // namespace ringmux::engine
