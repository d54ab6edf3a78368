// The resume simulation's link model: mux::Connection's calls on the Session (sim.h).
#include "tests/mux/session/sim/sim.h"

namespace ringmux::mux::sim {

// ---- Link ----------------------------------------------------------------------------------

Link::Link(Sim& sim, App& app, int side, SessionOptions options)
    : sim_(sim), app_(app), side_(side), session_(*this, options) {}

void Link::start(uint32_t tcp) {
  install_transport(tcp);
  flush();  // the HELLO and whatever was queued behind it
}

void Link::start(uint32_t tcp, const wire::Hello& hello) {
  if (!session_.accept_hello(hello)) return end_session(session_.failure(), "accept_hello refused");
  install_transport(tcp);
  flush();
}

replay::HelloAnswer Link::adopt(uint32_t tcp, const wire::Hello& hello) {
  // Connection::adopt: a HELLO of an older or the same generation comes from a superseded
  // attempt, ignored before the current transport is touched.
  if (ended_ || hello.generation <= session_.generation()) {
    replay::HelloAnswer ignored;
    ignored.verdict = replay::HelloVerdict::ignore;
    ignored.error = replay::ReplayError::superseded_generation;
    return ignored;
  }
  if (transport_ != no_tcp) {
    sim_.coverage().live_superseded++;
    lose_transport("a newer generation arrived");
  }
  replay::HelloAnswer answer = session_.answer_resume(hello);
  if (answer.verdict != replay::HelloVerdict::accept_resume) {
    if (session_.failed()) end_session(session_.failure(), "answer_resume refused");
    return answer;
  }
  install_transport(tcp);
  on_established();
  flush();
  return answer;
}

void Link::flush() {
  if (flushing_ || transport_ == no_tcp || send_in_flight_ || !session_.has_output()) return;
  flushing_ = true;  // writers woken by take_output fill the next batch, they send nothing
  replay::HeldSpans held;
  session_.take_output(sending_link_, held);
  flushing_ = false;
  if (sending_link_.empty() && held.empty()) return;
  batches_sent_++;
  send_in_flight_ = true;
  send_started_ns_ = sim_.now();
  sim_.send(transport_, side_, sending_link_, held);
  sim_.schedule(EventKind::send_complete, side_, sim_.random().below(sim_.plan().latency_ns + 1), transport_);
}

void Link::on_recv(uint32_t tcp, std::span<const std::byte> bytes) {
  if (tcp != transport_) return;  // a replaced connection's late bytes
  last_received_ns_ = sim_.now();
  const bool was_established = session_.handshake_complete();
  auto received = session_.receive(bytes, sim_.now());
  if (!received) {
    // Connection: the transport ends (and the session with it unless it can resume). The
    // simulated network damages nothing, so no receive may fail.
    sim_.fail(std::string(side_name(side_)) + ": receive failed: " + mux::describe(received.error()) + " " +
              session_.failure_message());
    return lose_transport("receive failed");
  }
  if (!was_established && session_.handshake_complete()) on_established();
  flush();
  arm_ack_timer();
}

void Link::on_send_complete(uint32_t tcp) {
  if (tcp != transport_) return;
  sending_link_.clear();
  send_in_flight_ = false;
  send_started_ns_ = 0;
  flush();
}

void Link::on_socket_error(uint32_t tcp, const char* why) {
  if (tcp != transport_) return;  // a superseded connection's errors are ignored
  lose_transport(why);
}

void Link::on_socket_closed(uint32_t) {
  if (ended_) return;
  // A dialer that lost its transport redials once the old socket is gone.
  if (side_ == dialer && transport_ == no_tcp && !armed(TimerKind::redial) && !connecting_) schedule_redial();
}

void Link::on_connect(std::optional<uint32_t> tcp) {
  connecting_ = false;
  if (ended_) {
    if (tcp) sim_.close(*tcp, side_);
    return;
  }
  if (!tcp) return schedule_redial();  // refused: again, until the resume deadline
  install_transport(*tcp);
  session_.start_resume();
  flush();
}

void Link::on_timer(TimerKind kind, uint64_t token) {
  Timer& timer = timers_[static_cast<std::size_t>(kind)];
  if (!timer.armed || timer.token != token) return;  // cancelled
  timer.armed = false;
  switch (kind) {
    case TimerKind::keepalive:
      return on_keepalive();
    case TimerKind::resume_deadline:
      if (connected() || ended_) return;
      return end_session(MuxError::session_lost, "the resume deadline passed");
    case TimerKind::redial:
      if (ended_ || transport_ != no_tcp || connecting_) return;
      redial_attempts_++;
      connecting_ = true;
      return sim_.connect();
    case TimerKind::ack:
      if (ended_) return;
      session_.on_ack_timer(sim_.now());
      flush();
      return arm_ack_timer();  // still pending when a send in flight holds the ACK back
  }
}

void Link::reap() {
  for (int round = 0; round < 16 && !writable_pending_.empty(); round++) {
    writable_scratch_.clear();
    writable_scratch_.swap(writable_pending_);
    for (const StreamId id : writable_scratch_) app_.on_writable(id);
  }
  app_.pump_due();
}

Result<Session::Opened, MuxError> Link::open(uint32_t handler_id, std::span<const std::byte> payload, bool end_stream) {
  auto opened = session_.open_some(handler_id, 0, payload, end_stream);
  flush();
  return opened;
}

Result<std::size_t, MuxError> Link::write(StreamId id, std::span<const std::byte> bytes, bool end_stream) {
  auto taken = session_.write(id, bytes, end_stream);
  flush();
  return taken;
}

Result<void, MuxError> Link::end(StreamId id) {
  auto ended = session_.end(id);
  flush();
  return ended;
}

void Link::consume(StreamId id, std::size_t bytes) {
  // Inside the receive path the credit leaves with the flush after it; the application's
  // tick flushes after its consumes.
  session_.consume(id, bytes, sim_.now());
}

void Link::on_stream_stopped(StreamId id, StreamBinding&) noexcept {
  sim_.fail(std::string(side_name(side_)) + ": STOP on stream id " + std::to_string(id) + ", never sent");
}

void Link::on_goaway(uint32_t, wire::StatusCode) noexcept {
  sim_.fail(std::string(side_name(side_)) + ": GOAWAY, never sent");
}

void Link::on_pong(uint64_t opaque) noexcept {
  if (opaque == ping_sent_ns_ && ping_sent_ns_ != 0) {
    const uint64_t rtt = sim_.now() - ping_sent_ns_;
    session_.set_rtt_ns(rtt > 0 ? rtt : 1);
    ping_sent_ns_ = 0;
  }
}

void Link::lose_transport(const char* why) {
  if (ended_) return;
  sim_.trace("%s loses transport %u: %s", side_name(side_), transport_, why);
  sim_.coverage().transports_lost++;
  session_.on_transport_lost();
  timer_cancel(TimerKind::keepalive);
  retire_transport();
  if (!armed(TimerKind::resume_deadline)) timer_start(TimerKind::resume_deadline, limits::resume_timeout_ns_default);
  if (side_ == acceptor) session_.trim();  // detached: keeps only what it holds for replay
}

void Link::end_session(MuxError reason, const std::string& why) {
  sim_.fail(std::string(side_name(side_)) + ": session ended: " + why);
  ended_ = true;
  for (const TimerKind kind : {TimerKind::keepalive, TimerKind::resume_deadline, TimerKind::redial, TimerKind::ack}) {
    timer_cancel(kind);
  }
  session_.fail(reason);
  retire_transport();
}

void Link::retire_transport() {
  if (transport_ == no_tcp) return;
  sending_link_.clear();
  send_in_flight_ = false;
  send_started_ns_ = 0;
  sim_.close(transport_, side_);
  transport_ = no_tcp;
}

void Link::install_transport(uint32_t tcp) {
  RM_ASSERT(transport_ == no_tcp);
  transport_ = tcp;
  last_received_ns_ = sim_.now();
  ping_sent_ns_ = 0;
  timer_start(TimerKind::keepalive, keepalive_interval_ns);
}

void Link::schedule_redial() {
  // Connection::schedule_redial: the first attempt after a loss at once, then exponential
  // backoff from the minimum, each delay drawn from the upper half of its ceiling.
  uint64_t delay_ns = 0;
  if (redial_attempts_ > 0) {
    const uint32_t doublings = std::min<uint32_t>(redial_attempts_ - 1, 30);
    const uint64_t ceiling = std::min(limits::redial_backoff_ns_max, limits::redial_backoff_ns_min << doublings);
    delay_ns = ceiling / 2 + sim_.random().below(ceiling / 2 + 1);
  }
  timer_start(TimerKind::redial, delay_ns);
}

void Link::on_established() {
  timer_cancel(TimerKind::resume_deadline);
  redial_attempts_ = 0;
  sim_.trace("%s established on transport %u, generation %llu", side_name(side_), transport_,
             static_cast<unsigned long long>(session_.generation()));
}

void Link::arm_ack_timer() {
  const uint64_t deadline = session_.ack_deadline_ns();
  // Only on a live connection: while resuming, the next handshake carries the position.
  if (deadline == replay::AckPolicy::no_deadline_ns || armed(TimerKind::ack) || !connected()) return;
  const uint64_t now = sim_.now();
  // A busy loop runs the timer late now and then: the ACK path is delayed.
  const uint64_t late_ns = sim_.random().one_in(4) ? sim_.random().below(2 * ms_ns) : 0;
  timer_start(TimerKind::ack, (deadline > now ? deadline - now : 0) + late_ns);
}

void Link::on_keepalive() {
  if (transport_ == no_tcp || ended_) return;
  const uint64_t now = sim_.now();
  const uint64_t silent_ns = now - last_received_ns_;
  const bool send_stuck = send_in_flight_ && now - send_started_ns_ >= dead_peer_timeout_ns;
  if (silent_ns >= dead_peer_timeout_ns || send_stuck) {
    sim_.coverage().dead_peers++;
    return lose_transport("dead peer");
  }
  const uint64_t frame_started = session_.frame_started_ns();
  if (frame_started != 0 && now - frame_started >= limits::frame_complete_timeout_ns) {
    return end_session(MuxError::limit_exceeded, "a frame was not completed in time");
  }
  // Quiet since the last tick: the capacity kept for bulk traffic goes back.
  if (batches_sent_ == batches_at_last_keepalive_ && session_.held().bytes_held() == 0 && !session_.has_output()) {
    session_.trim();
  }
  batches_at_last_keepalive_ = batches_sent_;
  if (silent_ns >= keepalive_interval_ns && ping_sent_ns_ == 0 && session_.handshake_complete()) {
    ping_sent_ns_ = now;
    session_.ping(now);
    flush();
  }
  timer_start(TimerKind::keepalive, keepalive_interval_ns / 2);
}

void Link::timer_start(TimerKind kind, uint64_t delay_ns) {
  Timer& timer = timers_[static_cast<std::size_t>(kind)];
  timer.token++;
  timer.armed = true;
  sim_.schedule(EventKind::timer, side_, delay_ns, 0, kind, timer.token);
}

void Link::timer_cancel(TimerKind kind) {
  Timer& timer = timers_[static_cast<std::size_t>(kind)];
  timer.token++;
  timer.armed = false;
}

}  // namespace ringmux::mux::sim
