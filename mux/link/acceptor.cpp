#include "ringmux/mux/link/acceptor.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "ringmux/base/assert.h"
#include "ringmux/base/log.h"
#include "ringmux/replay/handshake.h"

namespace ringmux::mux {

using engine::Completion;

namespace {

// Whether received bytes open with a TLS handshake record (content type 22, protocol major
// version 3): a client speaking TLS to an acceptor without a handshake stage, which is
// worth saying in so many words.
bool starts_like_tls(std::span<const std::byte> bytes) noexcept {
  constexpr std::byte tls_handshake_record{22};
  constexpr std::byte tls_major_version{3};
  return bytes.size() >= 2 && bytes[0] == tls_handshake_record && bytes[1] == tls_major_version;
}

}  // namespace

std::size_t Acceptor::IdHash::operator()(const wire::SessionId& id) const noexcept {
  // Session ids are random: any 8 of their bytes hash them well.
  uint64_t word = 0;
  std::memcpy(&word, id.data(), sizeof(word));
  return static_cast<std::size_t>(word);
}

Acceptor::Acceptor(engine::Loop& loop, Factory factory, const AcceptorOptions& options) noexcept
    : loop_(loop), factory_(std::move(factory)), options_(options) {}

Acceptor::~Acceptor() {
  RM_ASSERT(idle());
  RM_ASSERT(sessions_.empty());  // every session it routed to has ended (and left the table)
}

void Acceptor::accept(int fd) noexcept {
  stats_.connections++;
  if (closing_) {
    ::close(fd);
    return;
  }
  if (pending_.size() + handshaking_.size() >= options_.pending_hellos_max) {
    // A connect flood: the sockets already waiting keep their turn; this one goes at once.
    stats_.pending_refused++;
    RM_LOG(LogSeverity::warning, LogSubsystem::link, 0, 0, 0,
           "acceptor: %zu sockets already wait for their HELLO (pending_hellos_max): a new one is closed",
           pending_.size() + handshaking_.size());
    ::close(fd);
    return;
  }
  if (options_.handshake) {
    RM_ASSERT(transport_factory_ != nullptr);
    auto entry = std::make_unique<Handshaking>();
    entry->owner = this;
    entry->transport = options_.handshake->wrap(loop_, make_socket_transport(loop_, fd), false);
    entry->timeout.set_callback(&Acceptor::on_handshake_timeout, entry.get());
    Handshaking& e = *entry;
    handshaking_.push_back(std::move(entry));
    loop_.timer_start(e.timeout, options_.hello_timeout_ns);  // the handshake and the HELLO
    e.transport->start(e);
    return;
  }
  auto pending = std::make_unique<Pending>();
  pending->owner = this;
  pending->fd = fd;
  pending->recv.callback = &Acceptor::on_recv;
  pending->recv.context = pending.get();
  pending->timeout.set_callback(&Acceptor::on_timeout, pending.get());
  // A version 1 HELLO whole in one read; a longer one (a later version's extensions) is
  // completed by a second read once its header has told the length.
  pending->need = wire::frame_bytes(wire::hello_payload_bytes);
  Pending& p = *pending;
  pending_.push_back(std::move(pending));
  loop_.timer_start(p.timeout, options_.hello_timeout_ns);
  arm_recv(p);
}

void Acceptor::take(const wire::Hello& hello, Arrival arrival) noexcept {
  // Counted where it was accepted (connections, handed_over), not again here.
  if (arrival.transport == nullptr) {
    if (closing_) {
      ::close(arrival.fd);
      return;
    }
    return route(arrival.fd, hello);
  }
  if (closing_) return;  // the released transport is closed with the arrival
  // The transport lives on this loop from now on: an entry holds it, as if this acceptor
  // had run its handshake, and routes it with the HELLO the other loop read.
  auto entry = std::make_unique<Handshaking>();
  entry->owner = this;
  entry->transport = arrival.transport->adopt(loop_);
  entry->timeout.set_callback(&Acceptor::on_handshake_timeout, entry.get());
  Handshaking& e = *entry;
  handshaking_.push_back(std::move(entry));
  e.transport->start(e);  // receiving again: bytes reach the session the route gives it to
  route(e, hello, arrival.pipelined);
}

void Acceptor::close() noexcept {
  closing_ = true;
  // Each pending read completes at once with the socket shut down, and finishes there.
  for (auto& pending : pending_) ::shutdown(pending->fd, SHUT_RDWR);
  // Each transport ends with its on_transport_closed (erased there; maybe inside close()).
  std::vector<Handshaking*> entries;
  for (auto& entry : handshaking_) entries.push_back(entry.get());
  for (Handshaking* entry : entries) close_entry(*entry);
}

// ---- accepted transports with a handshake stage ---------------------------------------

void Acceptor::Handshaking::on_transport_recv(std::span<const std::byte> bytes) noexcept {
  if (closing) return;
  if (moving) {
    // Bounded: only what the receive had taken before it stopped (the loop's buffers).
    pipelined.insert(pipelined.end(), bytes.begin(), bytes.end());
    return;
  }
  Acceptor& self = *owner;
  while (!bytes.empty()) {
    auto step = decoder.next(bytes);
    if (!step) {
      self.stats_.failed++;
      RM_LOG(LogSeverity::info, LogSubsystem::link, 0, 0, 0, "acceptor: damaged bytes instead of a HELLO");
      return self.close_entry(*this);
    }
    bytes = bytes.subspan(step->consumed);
    if (!step->has_frame) continue;
    const bool is_hello = step->frame.header.frame_kind() == wire::FrameKind::hello;
    auto hello = is_hello ? wire::parse_hello(step->frame) : Result<wire::Hello, wire::WireError>(Err{wire::WireError::bad_value});
    if (!hello) {
      self.stats_.failed++;
      RM_LOG(LogSeverity::info, LogSubsystem::link, 0, 0, 0, "acceptor: the first frame is not a valid HELLO");
      return self.close_entry(*this);
    }
    // What came behind the HELLO (a new session's first frames) belongs to the session:
    // `bytes` stays valid through this call, which routes synchronously (or copies them
    // for the loop the transport moves to).
    if (self.move_elsewhere(*this, hello.value(), bytes)) return;
    return self.route(*this, hello.value(), bytes);
  }
}

void Acceptor::Handshaking::on_transport_error(engine::IoError error) noexcept {
  if (closing) return;
  Acceptor& self = *owner;
  self.stats_.failed++;
  if (!self.closing_) {
    // A refused handshake is worth a warning with its cause (a client's certificate from
    // another CA, none at all, a client not speaking TLS): what an operator looks for.
    const std::string why = transport->failure_text();
    RM_LOG(why.empty() ? LogSeverity::info : LogSeverity::warning, LogSubsystem::link, 0, 0, 0,
           "acceptor: refused a new connection: %s", why.empty() ? engine::describe(error) : why.c_str());
  }
  self.close_entry(*this);
}

void Acceptor::Handshaking::on_transport_closed() noexcept { owner->erase(*this); }

void Acceptor::Handshaking::on_transport_recv_stopped() noexcept {
  // Released on the next turn: this runs inside the transport's own callbacks.
  if (moving && !closing) owner->loop_.defer(release_turn);
}

std::optional<uint32_t> Acceptor::elsewhere(const wire::Hello& hello) const noexcept {
  if (!router_.place) return std::nullopt;
  const uint32_t loop = router_.place(hello);
  if (loop == router_.here) return std::nullopt;
  return loop;
}

bool Acceptor::move_elsewhere(Handshaking& entry, const wire::Hello& hello, std::span<const std::byte> pipelined) noexcept {
  const std::optional<uint32_t> loop = elsewhere(hello);
  if (!loop || closing_ || !entry.transport->can_release()) return false;
  entry.moving = true;
  entry.moving_to = *loop;
  entry.moving_hello = hello;
  entry.pipelined.assign(pipelined.begin(), pipelined.end());
  // The handshake timeout keeps running: a transport that never stops is closed by it.
  entry.transport->pause_recv();  // on_transport_recv_stopped follows, maybe inside this call
  return true;
}

void Acceptor::on_release_turn(engine::Deferred& deferred) noexcept {
  Handshaking& entry = *static_cast<Handshaking*>(deferred.context());
  Acceptor& self = *entry.owner;
  if (entry.closing) return;
  // The transport's fd and TLS state go to the owning loop in the posted task (the post is
  // the happens-before between this thread's last use and that loop's first).
  Arrival arrival{-1, entry.transport->release(), std::move(entry.pipelined)};
  const uint32_t loop = entry.moving_to;
  const wire::Hello hello = entry.moving_hello;
  entry.closing = true;
  self.erase(entry);  // destroys the released (closed) transport
  self.stats_.handed_over++;
  self.router_.hand_over(loop, hello, std::move(arrival));
}

void Acceptor::on_handshake_timeout(engine::Timer& timer) noexcept {
  Handshaking& entry = *static_cast<Handshaking*>(timer.context());
  Acceptor& self = *entry.owner;
  self.stats_.failed++;
  RM_LOG(LogSeverity::info, LogSubsystem::link, 0, 0, 0, "acceptor: no HELLO on a new connection (timed out)");
  self.close_entry(entry);
}

void Acceptor::close_entry(Handshaking& entry) noexcept {
  loop_.timer_cancel(entry.timeout);
  if (entry.closing) return;
  entry.closing = true;
  entry.transport->close();  // on_transport_closed erases the entry (maybe inside this call)
}

void Acceptor::erase(Handshaking& entry) noexcept {
  loop_.timer_cancel(entry.timeout);
  loop_.cancel_deferred(entry.release_turn);
  for (auto it = handshaking_.begin(); it != handshaking_.end(); ++it) {
    if (it->get() == &entry) {
      handshaking_.erase(it);
      return;
    }
  }
  RM_ASSERT(false);  // every transport the acceptor holds is in the list
}

void Acceptor::refuse(Handshaking& entry, const wire::HelloAck& ack) noexcept {
  std::array<std::byte, wire::frame_bytes(wire::hello_ack_payload_bytes)> frame{};
  wire::encode_hello_ack(frame, ack);
  entry.transport->send_last(frame);  // best effort, as for a socket
  close_entry(entry);
}

void Acceptor::route(Handshaking& entry, const wire::Hello& hello, std::span<const std::byte> pipelined) noexcept {
  loop_.timer_cancel(entry.timeout);
  if (closing_) return close_entry(entry);
  // The session takes the transport: the entry's work is done once it has (erased last,
  // with nothing of it touched after: this runs inside its callback).
  auto give_up = [this, &entry] {
    entry.closing = true;
    erase(entry);
  };
  auto known = sessions_.find(hello.session_id);
  if (known == sessions_.end()) {
    const replay::HelloAnswer answer = answer_unknown(hello);
    if (answer.verdict != replay::HelloVerdict::accept_new) return refuse(entry, answer.ack);
    Connection* connection = transport_factory_(entry.transport);
    if (connection == nullptr) {
      stats_.refused++;
      return close_entry(entry);
    }
    stats_.sessions_new++;
    connection->register_in(*this);
    sessions_.emplace(hello.session_id, connection);
    // The frames behind the HELLO live in the transport's buffer for this call only.
    const std::vector<std::byte> behind(pipelined.begin(), pipelined.end());
    give_up();
    connection->start(hello, behind);  // takes the started transport over; may end at once
    return;
  }
  if (!pipelined.empty()) {
    // A resuming dialer sends nothing behind its HELLO before our HELLO_ACK.
    stats_.failed++;
    RM_LOG(LogSeverity::info, LogSubsystem::link, 0, 0, 0, "acceptor: bytes behind a resuming HELLO");
    return close_entry(entry);
  }
  const uint64_t connection_id = known->second->id();  // adopt() may end the session and erase it
  Connection& connection = *known->second;
  const replay::HelloAnswer answer = connection.adopt(entry.transport, hello);
  switch (count_resume(answer, connection_id)) {
    case replay::HelloVerdict::accept_resume:
      undetach(connection);
      give_up();
      return;
    case replay::HelloVerdict::refuse:
      return refuse(entry, answer.ack);
    case replay::HelloVerdict::ignore:
    case replay::HelloVerdict::accept_new:
      return close_entry(entry);
  }
}

void Acceptor::arm_recv(Pending& pending) noexcept {
  io_uring_sqe* sqe = loop_.sqe();
  io_uring_prep_recv(sqe, pending.fd, pending.buffer.data() + pending.have, pending.need - pending.have, MSG_WAITALL);
  loop_.prepare(sqe, pending.recv);
}

void Acceptor::on_recv(Completion& completion, int32_t result, uint32_t) noexcept {
  Pending& pending = engine::owner_of<Pending>(completion);
  Acceptor& self = *pending.owner;
  if (result == -EINTR || result == -EAGAIN) {
    if (!pending.timed_out && !self.closing_) return self.arm_recv(pending);
  }
  if (result <= 0 || pending.timed_out || self.closing_) return self.finish(pending, nullptr);
  pending.have += static_cast<std::size_t>(result);
  if (pending.have < pending.need) return self.arm_recv(pending);
  // Feed what is new to the decoder, which checks the header (checksum first: the length
  // is not trusted before) and then the payload.
  auto step = pending.decoder.next(std::span<const std::byte>(pending.buffer.data() + pending.fed, pending.have - pending.fed));
  if (!step) return self.finish(pending, nullptr);
  pending.fed = pending.have;
  if (!step->has_frame) {
    // The header is valid and the frame longer than read so far: its length (the first
    // field) says how much follows. A frame shorter than a version 1 HELLO was never
    // read whole: the read waits for bytes that complete a HELLO, and times out.
    uint32_t length = 0;
    std::memcpy(&length, pending.buffer.data(), sizeof(length));
    length = le32toh(length);
    RM_ASSERT(length <= limits::hello_payload_bytes_max);  // the decoder's limit
    pending.need = limits::frame_header_bytes + length;
    if (pending.need <= pending.have) return self.finish(pending, nullptr);  // cannot happen: decoded whole
    return self.arm_recv(pending);
  }
  if (step->frame.header.frame_kind() != wire::FrameKind::hello) return self.finish(pending, nullptr);
  auto hello = wire::parse_hello(step->frame);
  if (!hello) return self.finish(pending, nullptr);
  self.finish(pending, &hello.value());
}

void Acceptor::on_timeout(engine::Timer& timer) noexcept {
  Pending& pending = *static_cast<Pending*>(timer.context());
  pending.timed_out = true;
  ::shutdown(pending.fd, SHUT_RDWR);  // the read completes at once, and finishes there
}

void Acceptor::finish(Pending& pending, const wire::Hello* hello) noexcept {
  RM_ASSERT(!pending.recv.submitted);
  loop_.timer_cancel(pending.timeout);
  const int fd = pending.fd;
  for (auto it = pending_.begin(); it != pending_.end(); ++it) {
    if (it->get() == &pending) {
      // The HELLO is copied out first: it points into the buffer about to be freed.
      const wire::Hello copy = hello != nullptr ? *hello : wire::Hello{};
      const bool timed_out = pending.timed_out;  // `pending` goes with the erase
      const bool tls = starts_like_tls(std::span<const std::byte>(pending.buffer.data(), pending.have));
      pending_.erase(it);
      if (hello == nullptr || closing_) {
        stats_.failed++;
        if (!closing_) {
          RM_LOG(tls ? LogSeverity::warning : LogSeverity::info, LogSubsystem::link, 0, 0, 0,
                 "acceptor: no valid HELLO on a new connection (%s)",
                 tls         ? "a TLS handshake record: the peer speaks TLS, this side has no handshake stage"
                 : timed_out ? "timed out"
                             : "closed early or damaged");
        }
        ::close(fd);
      } else if (const std::optional<uint32_t> loop = elsewhere(copy)) {
        stats_.handed_over++;
        router_.hand_over(*loop, copy, Arrival{fd, nullptr, {}});
      } else {
        route(fd, copy);
      }
      return;
    }
  }
  RM_ASSERT(false);  // every pending read is in the list
}

void Acceptor::route(int fd, const wire::Hello& hello) noexcept {
  auto known = sessions_.find(hello.session_id);
  if (known == sessions_.end()) {
    const replay::HelloAnswer answer = answer_unknown(hello);
    if (answer.verdict != replay::HelloVerdict::accept_new) return refuse(fd, answer.ack);
    Connection* connection = factory_(fd);
    if (connection == nullptr) {
      ::close(fd);
      stats_.refused++;
      return;
    }
    stats_.sessions_new++;
    connection->register_in(*this);
    sessions_.emplace(hello.session_id, connection);
    connection->start(hello);  // may end the session at once (and leave the table)
    return;
  }
  const uint64_t connection_id = known->second->id();  // adopt() may end the session and erase it
  const replay::HelloAnswer answer = known->second->adopt(fd, hello);
  switch (count_resume(answer, connection_id)) {
    case replay::HelloVerdict::accept_resume:
      undetach(*known->second);
      return;
    case replay::HelloVerdict::refuse:
      return refuse(fd, answer.ack);
    case replay::HelloVerdict::ignore:
    case replay::HelloVerdict::accept_new:
      ::close(fd);
      return;
  }
}

replay::HelloAnswer Acceptor::answer_unknown(const wire::Hello& hello) noexcept {
  replay::HelloAnswer answer = replay::answer_hello(hello, nullptr);
  if (answer.verdict != replay::HelloVerdict::accept_new) {
    stats_.refused++;
    RM_LOG(LogSeverity::info, LogSubsystem::link, 0, 0, 0, "acceptor: refused a HELLO for an unknown session: %s",
           wire::describe(answer.ack.status));
  }
  return answer;
}

replay::HelloVerdict Acceptor::count_resume(const replay::HelloAnswer& answer, uint64_t connection_id) noexcept {
  switch (answer.verdict) {
    case replay::HelloVerdict::accept_resume:
      stats_.resumes++;
      break;
    case replay::HelloVerdict::refuse:
      stats_.refused++;
      RM_LOG(LogSeverity::info, LogSubsystem::link, connection_id, 0, 0, "acceptor: refused a resume: %s",
             wire::describe(answer.ack.status));
      break;
    case replay::HelloVerdict::ignore:
    case replay::HelloVerdict::accept_new:
      stats_.ignored++;
      break;
  }
  return answer.verdict;
}

void Acceptor::refuse(int fd, const wire::HelloAck& ack) noexcept {
  std::array<std::byte, wire::frame_bytes(wire::hello_ack_payload_bytes)> frame{};
  wire::encode_hello_ack(frame, ack);
  // A fresh socket's send buffer is empty: this never blocks, and if it fails the peer
  // sees the close instead (and retries or gives up by its own deadline).
  (void)::send(fd, frame.data(), frame.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  ::close(fd);
}

void Acceptor::forget(Connection& connection) noexcept {
  auto it = sessions_.find(connection.session().session_id());
  if (it != sessions_.end() && it->second == &connection) sessions_.erase(it);
  undetach(connection);
}

void Acceptor::undetach(Connection& connection) noexcept {
  auto it = std::find_if(detached_.begin(), detached_.end(), [&](const Detached& d) { return d.connection == &connection; });
  if (it == detached_.end()) return;
  RM_ASSERT(detached_held_bytes_ >= it->held_bytes);
  detached_held_bytes_ -= it->held_bytes;
  detached_.erase(it);
}

void Acceptor::on_detached(Connection& connection) noexcept {
  undetach(connection);  // detached again before a resume completed: charged anew
  const uint64_t held = connection.session().held().bytes_held();
  detached_.push_back(Detached{&connection, held});
  detached_held_bytes_ += held;
  // Held bytes do not grow while detached (nothing is sent): checked at each detach.
  while (detached_.size() > 1 && detached_held_bytes_ > options_.detached_held_bytes_max) {
    Connection* oldest = detached_.front().connection;
    RM_ASSERT(oldest != &connection);  // the newest is last; one session's held bytes are below the cap
    undetach(*oldest);
    stats_.detached_ended++;
    RM_LOG(LogSeverity::warning, LogSubsystem::link, oldest->id(), 0, 0,
           "acceptor: detached sessions hold over %llu bytes (detached_held_bytes_max): the oldest ends",
           static_cast<unsigned long long>(options_.detached_held_bytes_max));
    oldest->close(MuxError::session_lost);  // leaves sessions_ through forget()
  }
}

}  // namespace ringmux::mux
