#include "ringmux/mux/link/connection.h"

#include <sys/random.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

#include "ringmux/base/assert.h"
#include "ringmux/base/log.h"
#include "ringmux/mux/link/acceptor.h"

namespace ringmux::mux {

using engine::Loop;

// ---- Connection --------------------------------------------------------------------------

namespace {

// Bytes from the kernel's random source. getrandom(2) does not fail for up to 256 bytes
// once the pool is initialised except when a signal interrupts it (EINTR, retried);
// anything else means the system cannot give a session an identity (fatal).
void fill_random(std::span<std::byte> bytes) noexcept {
  std::size_t filled = 0;
  for (int attempt = 0; attempt < 100 && filled < bytes.size(); attempt++) {
    const ssize_t got = ::getrandom(bytes.data() + filled, bytes.size() - filled, 0);
    if (got > 0) filled += static_cast<std::size_t>(got);
    else RM_ASSERT(got < 0 && errno == EINTR);
  }
  RM_ASSERT(filled == bytes.size());
}

// The session options of one side: the dialer's session gets a fresh random id unless the
// caller supplied one; every session's stream table gets a random secret.
SessionOptions session_options_for(const SessionOptions& options, bool dialer) noexcept {
  SessionOptions session_options = options;
  session_options.dialer = dialer;
  if (dialer && session_options.session_id == wire::SessionId{}) fill_random(session_options.session_id);
  if (session_options.table_secret == 0) {  // a caller's own (a deterministic simulation) is kept
    std::array<std::byte, sizeof(uint64_t)> secret;
    fill_random(secret);
    std::memcpy(&session_options.table_secret, secret.data(), secret.size());
  }
  session_options.writable_deferred = true;  // delivered on the connection's turn
  return session_options;
}

}  // namespace

uint64_t Connection::next_id() noexcept {
  static std::atomic<uint64_t> last{0};
  return last.fetch_add(1, std::memory_order_relaxed) + 1;
}

Connection::Connection(Loop& loop, std::unique_ptr<Transport> transport, bool dialer, const StreamService* service,
                       ConnectionObserver& observer, const ConnectionOptions& options)
    : loop_(loop),
      service_(service),
      observer_(observer),
      options_(options),
      session_(*this, [&] {
        SessionOptions session_options = session_options_for(options.session, dialer);
        session_options.resumable = options.resume;
        session_options.authenticated_transport = transport->authenticates_bytes();  // not moved yet
        return session_options;
      }()),
      transport_(std::make_unique<Attached>(*this, std::move(transport))),
      keepalive_(&Connection::on_keepalive, this),
      resume_deadline_(&Connection::on_resume_deadline, this),
      redial_timer_(&Connection::on_redial_timer, this),
      ack_timer_(&Connection::on_ack_timer, this),
      linger_(&Connection::on_linger, this),
      // Jitter only spreads redials apart: the session id's bits are random enough for that.
      redial_backoff_(options.redial_backoff_ns_min, options.redial_backoff_ns_max, [this] {
        uint64_t seed = 0;
        std::memcpy(&seed, session_.session_id().data(), sizeof(seed));
        return seed;
      }(), true) {
  RM_ASSERT(transport_->transport != nullptr);
  if (dialer && options.resume) {
    // A resuming dialer redials somewhere: through the caller's dialer, or TCP to `peer`.
    RM_ASSERT(options.dialer != nullptr || options.peer.length != 0);
    if (options.dialer == nullptr) {
      own_dialer_ = make_tcp_dialer(loop, options.peer, options.connect_timeout_ms);
      if (options.handshake) own_dialer_ = make_handshake_dialer(loop, std::move(own_dialer_), options.handshake);
    }
    dialer_ = options.dialer != nullptr ? options.dialer : own_dialer_.get();
  }
}

Connection::Connection(Loop& loop, int fd, bool dialer, const StreamService* service, ConnectionObserver& observer,
                       const ConnectionOptions& options)
    : Connection(loop,
                 options.handshake ? options.handshake->wrap(loop, make_socket_transport(loop, fd), dialer)
                                   : make_socket_transport(loop, fd),
                 dialer, service, observer, options) {}

Connection::~Connection() {
  RM_ASSERT(closed());
  // Destroyed before its turn came: the streams whose end is due hear it now, so that each
  // observer hears it exactly once. Their callbacks find the session ended (a call made
  // from one fails, and is reported in the next round). Not on_connection_closed: the
  // owner destroying the connection knows.
  for (uint32_t round = 0; round < limits::loop_deferred_rounds_max && !finished_.empty(); round++) report_finished();
  RM_ASSERT(finished_.empty());  // a callback that keeps calling a connection being destroyed
  loop_.cancel_deferred(turn_);
  loop_.timer_cancel(linger_);
}

void Connection::start() noexcept {
  last_received_ns_ = loop_.now_ns();
  transport_started_ns_ = last_received_ns_;
  transport_->transport->start(*transport_);
  loop_.timer_start(keepalive_, options_.keepalive_interval_ns);
  // The dialer's HELLO goes out on this turn (with whatever was queued behind it), so that
  // the acceptor, whose frames wait for it, never waits for our first stream or keepalive.
  want_turn();
}

void Connection::start(const wire::Hello& hello, std::span<const std::byte> pipelined) noexcept {
  if (!session_.accept_hello(hello)) {
    end(session_.failure());
    return;
  }
  start();
  if (!pipelined.empty()) on_transport_recv(*transport_, pipelined);
  if (ended_) return;
  // The acceptor read the HELLO through the transport's handshake (if it has one).
  bind_session();
}

void Connection::close(MuxError reason) noexcept {
  // A resumable peer would otherwise take the closed socket for a broken connection and
  // wait for a resume until its timeout: an ERROR on stream 0 ends its session at once.
  // With a send in flight it goes behind that send, once it completes (retire_transport).
  // If it does not go out, the peer's resume is refused instead.
  if (options_.resume && !ended_ && connected()) say_last_words(final_error_frame(reason, "session closed"));
  end(reason);
}

bool Connection::rpc_charge(std::size_t bytes) noexcept {
  if (rpc_bytes_buffered_ + bytes > options_.rpc_bytes_max) return false;
  rpc_bytes_buffered_ += bytes;
  return true;
}

void Connection::rpc_release(std::size_t bytes) noexcept {
  RM_ASSERT(bytes <= rpc_bytes_buffered_);
  rpc_bytes_buffered_ -= bytes;
}

void Connection::arm_stream_timer(StreamId id, StreamBinding& binding) noexcept {
  uint64_t at_ns = binding.deadline_ns;
  if (binding.stop_close_ns != 0 && (at_ns == 0 || binding.stop_close_ns < at_ns)) at_ns = binding.stop_close_ns;
  if (at_ns == 0 || at_ns == UINT64_MAX) {  // none, or beyond the clock (a saturated budget)
    if (binding.timer != 0) release_stream_timer(binding);
    return;
  }
  if (binding.timer == 0) {
    // Pooled: a stream with a deadline costs no allocation once the pool has grown to the
    // most such streams open at once.
    if (free_stream_timers_.empty()) {
      auto timer = std::make_unique<StreamTimer>();
      timer->connection = this;
      timer->timer.set_callback(&Connection::on_stream_timer, timer.get());
      stream_timers_.push_back(std::move(timer));
      free_stream_timers_.push_back(static_cast<uint32_t>(stream_timers_.size() - 1));
    }
    binding.timer = free_stream_timers_.back() + 1;
    free_stream_timers_.pop_back();
  }
  StreamTimer& timer = *stream_timers_[binding.timer - 1];
  timer.id = id;
  const uint64_t now = loop_.now_ns();
  loop_.timer_start(timer.timer, at_ns > now ? at_ns - now : 0);
}

void Connection::release_stream_timer(StreamBinding& binding) noexcept {
  RM_ASSERT(binding.timer != 0 && binding.timer <= stream_timers_.size());
  StreamTimer& timer = *stream_timers_[binding.timer - 1];
  loop_.timer_cancel(timer.timer);
  timer.id = 0;
  free_stream_timers_.push_back(binding.timer - 1);
  binding.timer = 0;
}

void Connection::on_stream_timer(engine::Timer& timer) noexcept {
  auto& stream_timer = *static_cast<StreamTimer*>(timer.context());
  Connection& self = *stream_timer.connection;
  const StreamId id = stream_timer.id;
  StreamBinding* binding = self.session_.binding(id);
  RM_ASSERT(binding != nullptr);  // a finished stream's timer is released with it
  RM_ASSERT(binding->timer != 0 && self.stream_timers_[binding->timer - 1].get() == &stream_timer);
  const uint64_t now = self.loop_.now_ns();
  if (binding->deadline_ns != 0 && now >= binding->deadline_ns) {
    self.reset(id, MuxError::deadline_exceeded);  // finishes the stream
    return;
  }
  // The peer stopped the stream and our writer has neither ended nor reset it since.
  RM_ASSERT(binding->stop_close_ns != 0 && now >= binding->stop_close_ns);
  if (self.session_.local_open(id)) {
    self.reset(id, MuxError::stream_stopped,
               "the peer stopped this stream and its writer neither ended nor reset it "
               "(limits::stopped_stream_close_timeout_ns)");
    return;
  }
  binding->stop_close_ns = 0;  // our side has ended: the peer's own end closes the stream
  self.arm_stream_timer(id, *binding);
}

ResumeStats Connection::resume_stats() const noexcept {
  ResumeStats stats = resume_stats_;
  stats.resumes = session_.stats().resumes;
  stats.bytes_replayed = session_.stats().bytes_replayed;
  stats.held_bytes_peak = session_.held().bytes_held_peak();
  return stats;
}

// ---- streams ----

Result<StreamId, MuxError> Connection::open(uint32_t handler_id, uint64_t deadline_ns,
                                            std::span<const std::byte> payload, bool end_stream,
                                            StreamObserver& observer) noexcept {
  // The initial payload must fit the initial stream window (the caller's part of the
  // contract); the connection's credit, which other streams may hold, is waited for: what
  // the OPEN cannot carry now follows as DATA (StreamBinding::open_rest).
  if (payload.size() > options_.session.stream_window_bytes) {
    return Err{session_.failed() ? MuxError::stream_closed : MuxError::refused};
  }
  return open_stream(handler_id, deadline_ns, payload, end_stream, observer, false);
}

Result<StreamId, MuxError> Connection::open_owned(uint32_t handler_id, uint64_t deadline_ns,
                                                  std::span<const std::byte> payload, bool end_stream,
                                                  StreamObserver& observer) noexcept {
  auto opened = open_stream(handler_id, deadline_ns, payload, end_stream, observer, true);
  if (!opened) {
    // Ours all the same: it hears the error on the next turn, like any end of its stream.
    finished_.push_back(Finished{&observer, opened.error(), true});
    want_turn();
  }
  return opened;
}

Result<StreamId, MuxError> Connection::open_stream(uint32_t handler_id, uint64_t deadline_ns,
                                                   std::span<const std::byte> payload, bool end_stream,
                                                   StreamObserver& observer, bool owned) noexcept {
  uint64_t budget_ns = 0;
  if (deadline_ns != 0) {
    const uint64_t now = Loop::clock_ns();
    if (deadline_ns <= now) return Err{MuxError::deadline_exceeded};  // never sent
    budget_ns = deadline_ns - now;
  }
  auto opened = session_.open_some(handler_id, budget_ns, payload, end_stream);
  if (!opened) return Err{opened.error()};
  const StreamId id = opened->id;
  StreamBinding& binding = *session_.binding(id);
  binding.observer = &observer;
  binding.owned = owned;
  binding.deadline_ns = deadline_ns;
  arm_stream_timer(id, binding);
  keep_open_rest(binding, payload.subspan(opened->taken), end_stream);
  want_turn();
  return id;
}

void Connection::keep_open_rest(StreamBinding& binding, std::span<const std::byte> rest, bool end_stream) {
  if (rest.empty()) return;
  // Copy: the caller's payload is valid only during its call.
  binding.open_rest.assign(rest.begin(), rest.end());
  binding.open_rest_end = end_stream;
  open_rests_++;
}

void Connection::drop_open_rest(StreamBinding& binding) noexcept {
  RM_ASSERT(!binding.open_rest.empty() && open_rests_ > 0);
  ByteVector().swap(binding.open_rest);  // its capacity too: a stream holds no more than it must
  binding.open_rest_end = false;
  open_rests_--;
}

bool Connection::send_open_rest(StreamId id) noexcept {
  if (open_rests_ == 0) return true;  // the usual case, on every write
  StreamBinding* binding = session_.binding(id);
  if (binding == nullptr || binding->open_rest.empty()) return true;
  auto taken = session_.write(id, binding->open_rest, binding->open_rest_end);
  // The write may have ended the stream (its finish accounted for the rest).
  binding = session_.binding(id);
  if (binding == nullptr) return true;
  if (taken && taken.value() < binding->open_rest.size()) {
    ByteVector& rest = binding->open_rest;
    rest.erase(rest.begin(), rest.begin() + static_cast<std::ptrdiff_t>(taken.value()));
    return false;  // the session wakes the stream when more can go
  }
  drop_open_rest(*binding);  // all sent, or the stream failed (its finish reports that)
  return true;
}

Result<std::size_t, MuxError> Connection::write(StreamId id, std::span<const std::byte> bytes, bool end_stream) noexcept {
  want_turn();
  // The open's payload goes first; until it has, nothing else is taken (the writer hears
  // on_stream_writable once it has). An END alone (no bytes) is queued behind it.
  if (!send_open_rest(id)) {
    StreamBinding& rest = *session_.binding(id);
    if (rest.open_rest_end) return Err{MuxError::stream_closed};  // ended already
    if (bytes.empty() && end_stream) rest.open_rest_end = true;
    return std::size_t{0};
  }
  return session_.write(id, bytes, end_stream);
}

Result<void, MuxError> Connection::end(StreamId id) noexcept {
  want_turn();
  if (!send_open_rest(id)) {
    // The END follows the open's payload still waiting for credit.
    StreamBinding& rest = *session_.binding(id);
    if (rest.open_rest_end) return Err{MuxError::stream_closed};  // ended already
    rest.open_rest_end = true;
    return {};
  }
  return session_.end(id);
}

void Connection::reset(StreamId id, MuxError reason, std::string_view message) noexcept {
  session_.reset(id, reason, message);
  want_turn();
}

void Connection::stop(StreamId id) noexcept {
  session_.stop(id);
  want_turn();
}

void Connection::consume(StreamId id, std::size_t stream_bytes, std::size_t connection_bytes) noexcept {
  session_.consume(id, stream_bytes, connection_bytes, loop_.now_ns());
  // The credit leaves on this turn: with the batch the receive path sends, or called on
  // its own (a worker's release reaching the loop) in a send of its own, without which a
  // sender waiting for it would wait forever.
  want_turn();
}

void Connection::goaway(wire::StatusCode code) noexcept {
  session_.goaway(code);
  want_turn();
}

// ---- session events ----

void Connection::on_stream_opened(StreamId id, StreamBinding& binding, uint32_t handler_id,
                                  uint64_t deadline_budget_ns, std::span<const std::byte> payload,
                                  bool end_stream) noexcept {
  // A stream refused here never reaches a handler: its payload's credit goes back at once.
  auto refuse = [&](MuxError reason) {
    session_.consume(id, payload.size(), loop_.now_ns());
    session_.reset(id, reason);
  };
  if (service_ == nullptr) return refuse(MuxError::unknown_handler);
  // Its deadline has (as good as) passed: refuse it rather than start the handler.
  if (deadline_budget_ns != 0 && deadline_budget_ns < limits::deadline_budget_ns_min) {
    return refuse(MuxError::deadline_exceeded);
  }
  // The budget is the peer's: a huge one saturates to "no deadline we can reach".
  StreamStart start{this, id, handler_id,
                    deadline_budget_ns == 0 ? 0 : engine::add_saturating(loop_.now_ns(), deadline_budget_ns), payload,
                    end_stream, MuxError::unknown_handler};
  StreamObserver* observer = service_->open_stream(start);
  if (observer == nullptr) return refuse(start.refusal);
  RM_ASSERT(session_.binding(id) == &binding);  // a handler's constructor does not end its stream
  binding.observer = observer;
  binding.owned = true;
  binding.deadline_ns = start.deadline_ns;
  arm_stream_timer(id, binding);
  if (!payload.empty() || end_stream) observer->on_stream_data(payload, end_stream);
}

void Connection::on_stream_data(StreamId id, StreamBinding& binding, std::span<const std::byte> payload,
                                bool end_stream) noexcept {
  if (binding.observer == nullptr) {  // refused: nobody reads it
    session_.consume(id, payload.size(), loop_.now_ns());
    return;
  }
  binding.observer->on_stream_data(payload, end_stream);
}

void Connection::on_stream_finished(StreamId, StreamBinding& binding, MuxError error,
                                    std::string_view message) noexcept {
  if (binding.timer != 0) release_stream_timer(binding);
  if (!binding.open_rest.empty()) {
    RM_ASSERT(open_rests_ > 0);
    open_rests_--;
  }
  StreamObserver* observer = binding.observer;
  if (observer == nullptr) return;  // refused before any observer heard of it
  // The peer's text is valid only now (a span of the received frame). It comes only with
  // what the peer sent, so only on the receive path, never inside a call on us.
  if (!message.empty()) observer->on_stream_message(message);
  // The end itself is reported on the turn: this may be inside the write, reset or close
  // that ended the stream, maybe made by this very observer.
  finished_.push_back(Finished{observer, error, binding.owned});
  want_turn();
}

void Connection::on_turn(engine::Deferred& turn) noexcept {
  Connection& self = *static_cast<Connection*>(turn.context());
  RM_ASSERT(&turn == &self.turn_);
  self.report_finished();
  self.report_writable();
  self.flush();
  self.arm_ack_timer();  // an ACK the send did not carry (none went, or one in flight held it)
  // The close comes last, once every stream's end has been heard: ends reported just now
  // may have ended more streams (a callback that closed the connection), which queued
  // this turn again.
  if (self.close_due_ && self.finished_.empty()) {
    self.close_due_ = false;
    self.closed_reported_ = true;
    self.observer_.on_connection_closed(self, self.close_reason_, self.io_error_);  // last: may destroy self
  }
}

void Connection::report_finished() noexcept {
  // The streams that ended since the last turn, in order. What ends during these callbacks
  // (a call they make that fails, a stream they reset) is reported on the next round.
  std::vector<Finished>& round = finished_round_;  // capacity kept: no allocation per turn
  RM_ASSERT(round.empty());
  round.swap(finished_);
  for (const Finished& finished : round) {
    finished.observer->on_stream_finished(finished.error);
    if (finished.owned) delete finished.observer;
  }
  round.clear();
}

void Connection::report_writable() noexcept {
  // One pass: writers woken while it runs (by a send this turn starts) are on the next turn.
  std::vector<StreamId>& ids = writable_scratch_;  // capacity kept: no allocation per turn
  RM_ASSERT(ids.empty());
  ids.swap(writable_pending_);
  for (const StreamId id : ids) {
    // The open's payload first; the observer after it.
    if (!send_open_rest(id)) continue;
    const StreamBinding* binding = session_.binding(id);
    if (binding != nullptr && binding->observer != nullptr) binding->observer->on_stream_writable();
  }
  ids.clear();
  // The session woke only as many writers as their credit could fill the batch with: if
  // they left room, the next ones in turn are woken now (delivered on the next round).
  session_.writers_ran();
}

void Connection::on_stream_writable(StreamId id) noexcept {
  // Delivered on the turn, never inside a write the observer is making (a take of the
  // session's output wakes writers): a writer re-entered from its own write() would see
  // its state change under it.
  writable_pending_.push_back(id);
  want_turn();
}

void Connection::on_stream_stopped(StreamId id, StreamBinding& binding) noexcept {
  if (binding.observer == nullptr) return;
  // Our writes on it fail from now on: a writer that neither ends nor resets the stream is
  // reset for it after the close timeout, so the stream's state cannot live forever.
  binding.stop_close_ns = engine::add_saturating(loop_.now_ns(), options_.stopped_stream_close_timeout_ns);
  arm_stream_timer(id, binding);
  binding.observer->on_stream_stopped();
}

void Connection::on_goaway(uint32_t, wire::StatusCode) noexcept {}

void Connection::on_pong(uint64_t opaque) noexcept {
  if (opaque == ping_sent_ns_ && ping_sent_ns_ != 0) {
    const uint64_t rtt = loop_.now_ns() - ping_sent_ns_;
    session_.set_rtt_ns(rtt > 0 ? rtt : 1);
    ping_sent_ns_ = 0;
  }
}

}  // namespace ringmux::mux
