// The link's transports: the sends of the double buffer, the socket callbacks, keepalive,
// and what happens when a transport breaks (resume: redial or adopt, replay; or the end of
// the session). Connection's other half (mux/link/connection.cpp has the streams).
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <string_view>

#include "ringmux/base/assert.h"
#include "ringmux/base/log.h"
#include "ringmux/mux/link/acceptor.h"
#include "ringmux/mux/link/connection.h"

namespace ringmux::mux {

using engine::Loop;

std::vector<std::byte> Connection::final_error_frame(MuxError reason, std::string_view message) {
  if (message.size() > limits::frame_text_bytes_max) message = message.substr(0, limits::frame_text_bytes_max);
  std::vector<std::byte> frame(wire::frame_bytes(4 + message.size()));  // status, then the text
  frame.resize(wire::encode_error(frame, 0, status_of(reason), message));
  return frame;
}

void Connection::say_last_words(std::vector<std::byte> frame) noexcept {
  if (transport_ == nullptr || !transport_->transport->usable()) return;
  if (!transport_->transport->send_in_flight()) {
    transport_->transport->send_last(frame);  // the session's own output ends with it
    return;
  }
  // They must not cut into the frames in flight: they follow them.
  transport_->last_words = std::move(frame);
}

std::vector<std::byte> Connection::why_frame() const {
  const std::string& why = session_.failure_message();
  return final_error_frame(session_.failure(), why.empty() ? std::string_view(describe(session_.failure())) : why);
}

// ---- I/O ----

void Connection::flush() noexcept {
  // Once per turn (on_turn): what every entry point of the turn wrote goes out in one send,
  // not the first write alone and the rest in a second send.
  if (!can_send() || !session_.has_output()) return;
  RM_ASSERT(sending_link_.empty());
  // take_output wakes writers cut short by the batch: they write on the next turn
  // (on_stream_writable queues them), into the session's new batch.
  replay::HeldSpans held;
  session_.take_output(sending_link_, held);
  if (sending_link_.empty() && held.empty()) return;
  batches_sent_++;
  bytes_sent_ += sending_link_.size() + held.size();
  send_started_ns_ = loop_.now_ns();
  transport_->transport->send(sending_link_, held.first, held.second);
}

void Connection::on_transport_recv(Attached& attached, std::span<const std::byte> bytes) noexcept {
  if (&attached != transport_.get()) return;  // a replaced connection's late bytes
  RM_ASSERT(!ended_);  // an ended session has no current transport
  last_received_ns_ = loop_.now_ns();
  bytes_received_ += bytes.size();
  const bool was_established = session_.handshake_complete();
  auto received = session_.receive(bytes, last_received_ns_);
  if (!received) {
    // The reader decides transport health: a protocol error ends the connection, and the
    // session too unless it can resume (the session says which by failing or not). A
    // session that fails for what the peer did tells it why first.
    if (session_.failed() && scope_of(session_.failure()) == Scope::connection &&
        session_.failure() != MuxError::peer_error) {
      say_last_words(why_frame());
    }
    lose_transport(received.error(), engine::IoError::none);
    return;
  }
  if (!was_established && session_.handshake_complete()) on_established();
  want_turn();  // the answers (credit, PONG, ACK, the handlers' replies) go in one send
}

void Connection::arm_ack_timer() noexcept {
  const uint64_t deadline = session_.ack_deadline_ns();
  // Only on a live connection: while resuming, the next handshake carries the position.
  if (deadline == replay::AckPolicy::no_deadline_ns || ack_timer_.armed() || !connected()) return;
  const uint64_t now = loop_.now_ns();
  loop_.timer_start(ack_timer_, deadline > now ? deadline - now : 0);
}

void Connection::on_ack_timer(engine::Timer& timer) noexcept {
  auto& self = *static_cast<Connection*>(timer.context());
  if (self.ended_) return;
  self.session_.on_ack_timer(self.loop_.now_ns());
  self.want_turn();  // sends it, and arms the timer again when a send in flight holds it back
}

void Connection::on_transport_sent(Attached& attached) noexcept {
  if (&attached != transport_.get()) {
    if (attached.last_words.empty()) return;
    attached.in_flight = {};
    if (!attached.last_words_sent) {
      // A closed session's send completed: its last words follow as a send of their own
      // (the socket's buffer may be full just now: a non-blocking write could fail).
      attached.last_words_sent = true;
      attached.transport->send(attached.last_words, {}, {});
      return;
    }
    // They went out: the FIN (TLS: close_notify) follows, then the socket closes.
    attached.last_words.clear();
    attached.transport->send_last({});
    attached.transport->close();
    return;
  }
  RM_ASSERT(!ended_);
  RM_ASSERT(send_started_ns_ != 0);  // a send of flush() was in flight
  sending_link_.clear();  // capacity kept: the next swap reuses it
  send_started_ns_ = 0;
  want_turn();  // what was written meanwhile
}

void Connection::on_transport_error(Attached& attached, engine::IoError error) noexcept {
  if (&attached != transport_.get()) {  // a superseded connection's errors are ignored
    if (!attached.last_words.empty()) {  // a closed session's last send failed: no last words
      attached.last_words.clear();
      attached.transport->close();
    }
    return;
  }
  RM_ASSERT(!ended_);
  if (std::string why = attached.transport->failure_text(); !why.empty()) transport_failure_ = std::move(why);
  lose_transport(MuxError::connection_lost, error);  // io_error_ says how
}

void Connection::on_transport_closed(Attached& attached) noexcept {
  if (&attached == transport_.get()) {
    transport_.reset();  // closed without an error reaching us (close() of the session)
  } else {
    for (auto it = retired_.begin(); it != retired_.end(); ++it) {
      if (it->get() == &attached) {
        retired_.erase(it);  // its operations are all complete: safe to destroy now
        break;
      }
    }
  }
  if (ended_) {
    maybe_report_closed();
    return;
  }
  // A dialer that lost its transport redials once the old socket is gone.
  if (transport_ == nullptr && session_.dialer() && !redial_timer_.armed() && !dialing()) {
    schedule_redial();
  }
}

void Connection::lose_transport(MuxError reason, engine::IoError io_error) noexcept {
  if (ended_) return;
  io_error_ = io_error;
  if (!resumable()) {
    end(session_.failed() ? session_.failure() : reason);
    return;
  }
  // Resume: the session keeps its streams; this TCP connection is done.
  RM_ASSERT(!session_.failed() && options_.resume);
  resume_stats_.transports_lost++;
  RM_LOG(LogSeverity::warning, LogSubsystem::link, id_, 0, 0, "transport lost (%s, %s); the session waits for a resume",
         describe(reason), engine::describe(io_error));
  session_.on_transport_lost();
  loop_.timer_cancel(keepalive_);
  retire_transport();
  RM_ASSERT(transport_ == nullptr && !connected());
  if (!resume_deadline_.armed()) loop_.timer_start(resume_deadline_, options_.resume_timeout_ns);
  if (registry_ != nullptr) {
    // Detached: what it holds for the dialer's return counts against the acceptor's cap
    // (limits::detached_held_bytes_max), which may end the oldest detached session.
    session_.trim();
    registry_->on_detached(*this);
  }
  // The dialer redials when the retired socket has closed (on_transport_closed), so that no
  // operation of the old connection is left in flight; the acceptor waits for adopt().
}

void Connection::end(MuxError reason) noexcept {
  if (!ended_) {
    ended_ = true;
    if (close_reason_ == MuxError::none) close_reason_ = reason;
    log_end();
  }
  loop_.timer_cancel(keepalive_);
  loop_.timer_cancel(resume_deadline_);
  loop_.timer_cancel(redial_timer_);
  loop_.timer_cancel(ack_timer_);
  if (dialing()) dialer_->cancel();  // its on_dialed closes what it may still bring
  if (registry_ != nullptr) {
    registry_->forget(*this);
    registry_ = nullptr;
  }
  session_.fail(reason);  // finishes every stream
  retire_transport();
  RM_ASSERT(ended_ && transport_ == nullptr && registry_ == nullptr);
  RM_ASSERT(session_.failed() && session_.streams_open() == 0);
  maybe_report_closed();
}

void Connection::log_end() const noexcept {
  // A local close (cancelled) is routine; anything else is the session failing.
  const bool routine = close_reason_ == MuxError::cancelled || close_reason_ == MuxError::none;
  const std::string_view detail =
      session_.failed() && !session_.failure_message().empty() ? session_.failure_message() : std::string_view{};
  RM_LOG(routine ? LogSeverity::info : LogSeverity::warning, LogSubsystem::link, id_, 0, 0,
         "session ended: %s%s%.*s (transport: %s)", describe(close_reason_), detail.empty() ? "" : ": ",
         static_cast<int>(detail.size()), detail.data(), engine::describe(io_error_));
}

void Connection::retire_transport() noexcept {
  if (transport_ == nullptr) return;
  send_started_ns_ = 0;
  Attached& attached = *transport_;
  retired_.push_back(std::move(transport_));
  RM_ASSERT(transport_ == nullptr);
  if (!attached.last_words.empty() && attached.transport->send_in_flight()) {
    // Closed with a send in flight: the last words follow it (on_transport_sent), within
    // the bound of a send that makes no progress (at most closed_send_linger_ns_max). The
    // send reads its bytes until then.
    attached.in_flight = std::move(sending_link_);
    sending_link_ = {};
    loop_.timer_start(linger_, std::min(options_.dead_peer_timeout_ns, limits::closed_send_linger_ns_max));
    return;
  }
  sending_link_.clear();
  attached.last_words.clear();
  attached.transport->close();  // on_transport_closed removes it from retired_
}

void Connection::on_linger(engine::Timer& timer) noexcept {
  auto& self = *static_cast<Connection*>(timer.context());
  // The peer took none of the last send: it hears of the close from the socket alone.
  std::vector<Transport*> stuck;
  for (auto& attached : self.retired_) {
    if (attached->last_words.empty()) continue;
    attached->last_words.clear();
    stuck.push_back(attached->transport.get());
  }
  for (Transport* transport : stuck) transport->close();  // on_transport_closed may erase its entry
}

void Connection::install_transport(std::unique_ptr<Transport> transport) noexcept {
  // Only a resume brings a new transport (the first came with the constructor).
  RM_ASSERT(transport_ == nullptr && !ended_ && options_.resume && transport != nullptr);
  transport_ = std::make_unique<Attached>(*this, std::move(transport));
  last_received_ns_ = loop_.now_ns();
  transport_started_ns_ = last_received_ns_;
  ping_sent_ns_ = 0;
  transport_->transport->start(*transport_);
  loop_.timer_start(keepalive_, options_.keepalive_interval_ns);
}

void Connection::schedule_redial() noexcept {
  // The first attempt after a loss goes at once; then exponential backoff with jitter.
  loop_.timer_start(redial_timer_, redial_backoff_.next_delay_ns());
}

void Connection::on_redial_timer(engine::Timer& timer) noexcept {
  auto& self = *static_cast<Connection*>(timer.context());
  RM_ASSERT(self.session_.dialer());  // only the dialing side redials
  if (self.ended_ || self.transport_ != nullptr || self.dialing()) return;
  self.resume_stats_.redials++;
  self.dialer_->dial(self);
}

void Connection::on_dialed(Result<std::unique_ptr<Transport>, engine::IoError> result) noexcept {
  if (ended_) {
    // A transport that arrived anyway is dropped unstarted (nothing of it is in flight).
    if (result) std::move(result).value().reset();
    maybe_report_closed();
    return;
  }
  if (!result) {
    schedule_redial();  // refused, timed out, ...: try again until the resume deadline
    return;
  }
  RM_ASSERT(session_.dialer() && transport_ == nullptr);  // one redial at a time, none while connected
  install_transport(std::move(result).value());
  session_.start_resume();
  want_turn();  // the HELLO that resumes
}

replay::HelloAnswer Connection::adopt(int fd, const wire::Hello& hello) noexcept {
  const replay::HelloAnswer answer = judge_adoption(hello, nullptr);
  // Otherwise the fd stays the caller's.
  if (answer.verdict == replay::HelloVerdict::accept_resume) finish_adoption(make_socket_transport(loop_, fd));
  return answer;
}

replay::HelloAnswer Connection::adopt(std::unique_ptr<Transport>& transport, const wire::Hello& hello) noexcept {
  RM_ASSERT(transport != nullptr);
  const replay::HelloAnswer answer = judge_adoption(hello, transport.get());
  if (answer.verdict == replay::HelloVerdict::accept_resume) finish_adoption(std::move(transport));
  return answer;
}

replay::HelloAnswer Connection::judge_adoption(const wire::Hello& hello, const Transport* transport) noexcept {
  RM_ASSERT(!session_.dialer());
  if (ended_) return replay::answer_hello(hello, nullptr);  // unknown by now: refused as such
  // A HELLO of an older or the same generation comes from a superseded attempt: ignored
  // before the current transport is touched; so is a resume that does not prove the
  // session's secret or comes from another identity, which is refused (the refusal is the
  // resumer's: the session and its transport go on).
  replay::HelloAnswer verdict = session_.judge_resume(hello);
  if (verdict.verdict == replay::HelloVerdict::ignore) return verdict;
  const std::string identity = transport != nullptr ? transport->peer_identity() : std::string();
  if (verdict.error == replay::ReplayError::resume_unauthenticated || identity != peer_identity_) {
    RM_LOG(LogSeverity::warning, LogSubsystem::link, id_, 0, 0,
           "refused a resume of this session: %s (identity '%s', the session's '%s')",
           verdict.error == replay::ReplayError::resume_unauthenticated ? "no valid proof of the session's secret"
                                                                       : "another peer identity",
           identity.c_str(), peer_identity_.c_str());
    verdict.verdict = replay::HelloVerdict::refuse;
    verdict.error = replay::ReplayError::resume_unauthenticated;
    verdict.ack.status = wire::StatusCode::resume_unauthenticated;
    verdict.ack.receive_position = 0;
    return verdict;
  }
  // The dialer is on a new connection: whatever we still hold of the old one is stale
  // (often we have not even seen it break yet).
  if (transport_ != nullptr) lose_transport(MuxError::connection_lost, engine::IoError::none);
  if (ended_) return replay::answer_hello(hello, nullptr);
  replay::HelloAnswer answer = session_.answer_resume(hello);
  if (answer.verdict != replay::HelloVerdict::accept_resume && session_.failed()) {
    end(session_.failure());  // refused for good: the session is lost
  }
  return answer;
}

void Connection::finish_adoption(std::unique_ptr<Transport> transport) noexcept {
  install_transport(std::move(transport));
  on_established();
  RM_ASSERT(connected());  // the HELLO_ACK is queued: position-space output may go
  want_turn();
}

void Connection::bind_session() noexcept {
  const Transport& transport = *transport_->transport;
  replay::ResumeKey key{};
  // A key of an earlier binding must not outlive it: the peer binds to this transport too.
  if (transport.export_secret("resume", key)) {
    session_.set_resume_key(key);
  } else {
    session_.clear_resume_key();
  }
  peer_identity_ = transport.peer_identity();
}

void Connection::on_established() noexcept {
  RM_ASSERT(transport_ != nullptr && session_.handshake_complete() && !ended_);
  if (session_.new_session_handshake()) {
    bind_session();  // the first transport both sides established the session on
  } else if (session_.dialer() && transport_->transport->peer_identity() != peer_identity_) {
    // Our resume was accepted by a peer that is not the session's: nothing may be replayed
    // to it (the replay is queued, not sent: it goes on this turn at the earliest).
    RM_LOG(LogSeverity::error, LogSubsystem::link, id_, 0, 0,
           "a resume was answered by another peer identity ('%s', the session's '%s'): the session ends",
           transport_->transport->peer_identity().c_str(), peer_identity_.c_str());
    end(MuxError::session_lost);
    return;
  }
  const uint64_t now = loop_.now_ns();
  loop_.timer_cancel(resume_deadline_);
  redial_backoff_.reset();
  if (session_.generation() <= 1) {
    observer_.on_connection_established(*this);
  } else {
    resume_stats_.last_resume_ns = now;
    resume_stats_.last_resume_duration_ns = now - transport_started_ns_;
    RM_LOG(LogSeverity::info, LogSubsystem::link, id_, 0, 0, "session resumed (generation %llu) in %llu us",
           static_cast<unsigned long long>(session_.generation()),
           static_cast<unsigned long long>(resume_stats_.last_resume_duration_ns / 1000));
    observer_.on_connection_resumed(*this, resume_stats_.last_resume_duration_ns);
  }
}

void Connection::on_resume_deadline(engine::Timer& timer) noexcept {
  auto& self = *static_cast<Connection*>(timer.context());
  if (self.connected() || self.ended_) return;
  self.end(MuxError::session_lost);
}

void Connection::maybe_report_closed() noexcept {
  if (!closed() || dialing() || closed_reported_ || close_due_) return;
  // On the turn, after the streams' ends: the observer may destroy the connection, which
  // must not happen under a running member function (close() itself, say).
  close_due_ = true;
  want_turn();
}

void Connection::on_keepalive(engine::Timer& timer) noexcept {
  auto& self = *static_cast<Connection*>(timer.context());
  if (self.transport_ == nullptr || self.ended_) return;
  const uint64_t now = self.loop_.now_ns();
  const uint64_t silent_ns = now - self.last_received_ns_;
  // A silent peer, or a send that makes no progress (the peer stopped reading, or the path
  // is a black hole): the transport is dead. The session resumes if it can.
  const bool send_stuck = self.send_started_ns_ != 0 && now - self.send_started_ns_ >= self.options_.dead_peer_timeout_ns;
  if (silent_ns >= self.options_.dead_peer_timeout_ns || send_stuck) {
    if (self.resumable()) self.resume_stats_.transports_timed_out++;
    self.lose_transport(MuxError::connection_lost, engine::IoError::timed_out);
    return;
  }
  // Slowloris: a frame whose bytes trickle in keeps the peer from being silent, but not
  // from this bound.
  const uint64_t frame_started = self.session_.frame_started_ns();
  if (frame_started != 0 && now - frame_started >= self.options_.frame_complete_timeout_ns) {
    std::string why = "a frame was not completed within " +
                      std::to_string(self.options_.frame_complete_timeout_ns / 1'000'000) +
                      " ms (limits::frame_complete_timeout_ns)";
    self.say_last_words(final_error_frame(MuxError::limit_exceeded, why));
    self.session_.fail(MuxError::limit_exceeded, std::move(why));
    self.lose_transport(MuxError::limit_exceeded, engine::IoError::none);
    return;
  }
  // Quiet since the last tick (nothing sent, nothing held): give back the capacity the
  // session kept for bulk traffic, so that an idle connection costs its state only.
  if (self.batches_sent_ == self.batches_at_last_keepalive_ && self.session_.held().bytes_held() == 0 &&
      !self.session_.has_output()) {
    self.session_.trim();
  } else {
    self.session_.decay();  // busy: only what went unused since the last tick
  }
  self.batches_at_last_keepalive_ = self.batches_sent_;
  if (silent_ns >= self.options_.keepalive_interval_ns && self.ping_sent_ns_ == 0 &&
      self.session_.handshake_complete()) {
    self.ping_sent_ns_ = now;
    self.session_.ping(now);
    self.want_turn();
  }
  self.loop_.timer_start(self.keepalive_, self.options_.keepalive_interval_ns / 2);
}

}  // namespace ringmux::mux
