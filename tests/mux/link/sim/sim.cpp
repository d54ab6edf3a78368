// The resume simulation's clock, events, connections and acceptor (sim.h).
#include "tests/mux/link/sim/sim.h"

namespace ringmux::mux::sim {

// ---- Sim -------------------------------------------------------------------------------------

Sim::Sim(uint64_t seed, bool tracing, Coverage& coverage_sum)
    : random_(seed),
      plan_(draw_plan(seed, random_)),
      trace_(tracing),
      coverage_(coverage_sum),
      loop_(engine::Loop::create_simulated(start_ns)),
      faults_left_(plan_.faults) {
  for (std::size_t i = 0; i < session_id_.size(); i += 8) {
    const uint64_t word = random_.next();
    std::memcpy(session_id_.data() + i, &word, 8);
  }
  for (uint64_t& secret : table_secrets_) secret = random_.next() | 1;  // not 0: the link's own draw
  for (int side : {dialer, acceptor}) apps_[side] = std::make_unique<App>(*this, side);
}

Sim::~Sim() {
  // The connections go first (they hold transports, timers and the loop's deferred work),
  // then the network, then the loop.
  for (auto& connection : connections_) connection.reset();
}

void Sim::fail(const std::string& why) {
  // The teardown closes both sessions: what the network still delivers then (a HELLO for a
  // session just closed, say) is refused as it should be.
  if (tearing_down_) return;
  if (failure_.empty()) failure_ = "at " + std::to_string(elapsed() / us_ns) + " us: " + why;
  trace("FAILURE: %s", why.c_str());
}

void Sim::trace(const char* format, ...) {
  if (!trace_) return;
  std::printf("%12.3f ms  ", static_cast<double>(elapsed()) / ms_ns);
  va_list args;
  va_start(args, format);
  std::vprintf(format, args);
  va_end(args);
  std::printf("\n");
}

void Sim::schedule(EventKind kind, int side, uint64_t delay_ns, uint32_t tcp) {
  Event event;
  event.at_ns = now() + delay_ns;
  event.order = order_++;
  event.kind = kind;
  event.side = side;
  event.tcp = tcp;
  events_.push(event);
}

ConnectionOptions Sim::options_for(int side) {
  ConnectionOptions options;
  options.session = plan_.options;
  options.session.session_id = session_id_;  // the acceptor's comes with the HELLO
  options.session.table_secret = table_secrets_[side];
  options.keepalive_interval_ns = keepalive_interval_ns;
  options.dead_peer_timeout_ns = dead_peer_timeout_ns;
  options.resume = true;
  if (side == dialer) options.dialer = &dialer_;
  return options;
}

bool Sim::step() {
  // The earlier of the next network event and the loop's next timer; a timer due at the
  // same time as an event fires first (the loop fires timers before it waits again).
  const uint64_t timer_ns = loop_->next_timer_ns();
  const uint64_t event_ns = events_.empty() ? UINT64_MAX : events_.top().at_ns;
  if (timer_ns == UINT64_MAX && event_ns == UINT64_MAX) return false;
  if (timer_ns <= event_ns) {
    loop_->advance_to(std::max(timer_ns, now()));  // the timers, then the deferred work
    return true;
  }
  const Event event = events_.top();
  events_.pop();
  loop_->advance_to(event.at_ns);
  dispatch(event);
  loop_->advance_to(event.at_ns);  // the turn: what the event's callbacks deferred
  return true;
}

std::string Sim::run() {
  const uint32_t first = new_tcp(++attempts_);
  plan_fault(first);
  connections_[dialer] = std::make_unique<Connection>(*loop_, std::make_unique<SimTransport>(*this, first, dialer),
                                                      true, apps_[dialer].get(), *apps_[dialer], options_for(dialer));
  apps_[dialer]->attach(*connections_[dialer]);
  connections_[dialer]->start();
  schedule(EventKind::app_tick, dialer, 0);
  schedule(EventKind::app_tick, acceptor, 0);
  for (const uint64_t at_ns : plan_.breaks_ns) schedule(EventKind::break_current, dialer, at_ns);
  uint64_t events = 0;
  while (!failed()) {
    if (apps_[dialer]->done() && apps_[acceptor]->done()) break;
    if (events == run_events_max || elapsed() > run_time_ns_max || !step()) {
      fail("not finished after " + std::to_string(events) + " events" + describe_state());
      break;
    }
    events++;
    after_entry();
  }
  if (!failed()) verify_streams();
  coverage_.runs++;
  coverage_.events += events;
  coverage_.simulated_ns += elapsed();
  coverage_.events_run_max = std::max(coverage_.events_run_max, events);
  coverage_.simulated_ns_run_max = std::max(coverage_.simulated_ns_run_max, elapsed());
  coverage_.faults += plan_.faults - faults_left_;
  bool near_bound = false;
  for (const auto& connection : connections_) {
    if (connection == nullptr) continue;
    const replay::HeldBatches& held = connection->session().held();
    near_bound |= held.bytes_held_peak() * 2 >= held.bytes_max();
    const ResumeStats stats = connection->resume_stats();
    coverage_.bytes_replayed += stats.bytes_replayed;
    coverage_.transports_lost += stats.transports_lost;
    coverage_.dead_peers += stats.transports_timed_out;
  }
  coverage_.runs_near_bound += near_bound ? 1 : 0;
  teardown();
  return failure_;
}

void Sim::teardown() {
  tearing_down_ = true;
  for (int side : {dialer, acceptor}) {
    apps_[side]->closing();
    if (connections_[side] != nullptr) connections_[side]->close();
  }
  // Closing needs the sockets' close completions, the dialer's attempt and a turn: a few
  // events. Every event of the run may still be queued; a bound keeps a broken close from
  // looping.
  for (uint64_t i = 0; i < run_events_max; i++) {
    const bool closed = std::all_of(std::begin(connections_), std::end(connections_), [](const auto& connection) {
      return connection == nullptr || (connection->closed() && !connection->loop().deferred_pending());
    });
    if (closed && apps_[dialer]->connection_closed() &&
        (connections_[acceptor] == nullptr || apps_[acceptor]->connection_closed())) {
      return;
    }
    if (!step()) break;
  }
  // The connections cannot be destroyed safely: end the process's test with the reason.
  std::fprintf(stderr, "resume sim: the connections did not close after the run%s\n", describe_state().c_str());
  std::abort();
}

void Sim::dispatch(const Event& event) {
  Tcp* t = event.kind == EventKind::app_tick || event.kind == EventKind::connect_done ||
                   event.kind == EventKind::break_current
               ? nullptr
               : &tcps_[event.tcp];
  switch (event.kind) {
    case EventKind::deliver:
      return deliver(event.tcp, event.side);
    case EventKind::send_complete:
      if (t->end[event.side] != nullptr) t->end[event.side]->on_send_complete();
      return;
    case EventKind::socket_error:
      return on_socket_error(event.tcp, event.side, engine::IoError::reset);
    case EventKind::socket_closed:
      if (t->end[event.side] != nullptr) t->end[event.side]->on_closed();
      return;
    case EventKind::connect_done:
      return dialer_.on_connect_done();
    case EventKind::hello_timeout:
      if (!t->routed) close(event.tcp, acceptor);
      return;
    case EventKind::app_tick:
      return apps_[event.side]->tick();
    case EventKind::fault:
      return break_tcp(event.tcp);
    case EventKind::break_current:
      if (current(dialer) == no_tcp) return;
      coverage_.faults++;
      return break_tcp(current(dialer));
  }
}

void Sim::after_entry() {
  for (const auto& app : apps_) app->pump_due();
  loop_->advance_to(now());  // what the applications' writes deferred
  check_invariants();
}

uint32_t Sim::current(int side) const {
  for (uint32_t id = static_cast<uint32_t>(tcps_.size()); id-- > 0;) {
    const SimTransport* end = tcps_[id].end[side];
    if (end != nullptr && end->usable()) return id;
  }
  return no_tcp;
}

void Sim::on_detached(Connection&) noexcept {}

void Sim::forget(Connection&) noexcept {}

void Sim::check_invariants() {
  for (int side : {dialer, acceptor}) {
    if (connections_[side] == nullptr) continue;
    Session& session = connections_[side]->session();
    if (session.failed()) {
      return fail(std::string(side_name(side)) + ": session failed: " + mux::describe(session.failure()) + " " +
                  session.failure_message());
    }
    const replay::HeldBatches& held = session.held();
    if (!held.invariant()) return fail(std::string(side_name(side)) + ": held batches break their invariant");
    // The bound holds unless one batch alone is larger (replay/held.h).
    if (held.bytes_held() > held.bytes_max() && held.batches() > 1) {
      return fail(std::string(side_name(side)) + ": " + std::to_string(held.bytes_held()) + " bytes held, bound " +
                  std::to_string(held.bytes_max()));
    }
  }
}

void Sim::verify_streams() {
  const auto& streams = plan_.streams;
  for (std::size_t k = 0; k < streams.size(); k++) {
    for (int side : {dialer, acceptor}) {
      const App::Half& sent = apps_[side]->half(k);
      const App::Half& received = apps_[1 - side]->half(k);
      const std::string where = "stream " + std::to_string(k) + " from the " + side_name(side);
      if (sent.sent != streams[k].bytes[side] || received.received != sent.sent) {
        return fail(where + ": " + std::to_string(sent.sent) + " bytes sent, " + std::to_string(received.received) +
                    " received, " + std::to_string(streams[k].bytes[side]) + " planned");
      }
      if (XXH3_64bits_digest(&sent.sent_hash) != XXH3_64bits_digest(&received.received_hash)) {
        return fail(where + ": the hash of the bytes received differs from the sender's");
      }
    }
  }
}

std::string Sim::describe_state() {
  std::string out;
  for (int side : {dialer, acceptor}) {
    if (connections_[side] == nullptr) {
      out += std::string("\n  ") + side_name(side) + ": no session";
      continue;
    }
    Session& session = connections_[side]->session();
    char line[256];
    std::snprintf(line, sizeof line,
                  "\n  %s: transport %d, handshake %d, generation %llu, held %llu (unsent %llu), sent %llu, "
                  "received %llu",
                  side_name(side), static_cast<int>(current(side)), session.handshake_complete() ? 1 : 0,
                  static_cast<unsigned long long>(session.generation()),
                  static_cast<unsigned long long>(session.held().bytes_held()),
                  static_cast<unsigned long long>(session.held().bytes_unsent()),
                  static_cast<unsigned long long>(session.send_position()),
                  static_cast<unsigned long long>(session.receive_position()));
    out += line;
    out += apps_[side]->describe();
  }
  return out;
}

uint32_t Sim::new_tcp(uint32_t attempt) {
  const auto id = static_cast<uint32_t>(tcps_.size());
  tcps_.emplace_back().attempt = attempt;
  schedule(EventKind::hello_timeout, acceptor, limits::hello_timeout_ns, id);
  trace("connection %u (attempt %u) up", id, attempt);
  return id;
}

void Sim::connect() {
  ++attempts_;
  schedule(EventKind::connect_done, dialer, 2 * latency());
}

uint32_t Sim::connect_result() {
  if (faults_left_ > 0 && random_.one_in(4)) {
    faults_left_--;
    coverage_.connect_failures++;
    trace("connect %u refused", attempts_);
    return no_tcp;
  }
  const uint32_t id = new_tcp(attempts_);
  plan_fault(id);
  return id;
}

void Sim::plan_fault(uint32_t id) {
  if (faults_left_ == 0 || random_.one_in(3)) return;
  faults_left_--;
  Tcp& t = tcps_[id];
  switch (random_.below(8)) {
    case 0: {
      // One direction is cut at a byte offset; half the time crossing it resets both ends,
      // else it is a black hole that the keepalive finds.
      const int side = static_cast<int>(random_.below(2));
      t.pipe[side].cut = random_.below(48 * kib);
      t.break_at_cut = random_.one_in(2);
      trace("connection %u: %s's bytes cut at %zu%s", id, side_name(side), t.pipe[side].cut,
            t.break_at_cut ? ", then reset" : "");
      return;
    }
    case 1: {
      const uint64_t delay_ns = random_.below(40 * ms_ns);
      trace("connection %u: breaks in %llu us", id, static_cast<unsigned long long>(delay_ns / us_ns));
      return schedule(EventKind::fault, dialer, delay_ns, id);
    }
    case 2:
    case 7:
      // The dialer's bytes (its HELLO) arrive late: before, during or after the dialer gave
      // up on this connection and its next attempt was accepted.
      t.pipe[dialer].stalled_until_ns = now() + random_.between(dead_peer_timeout_ns / 2, 3 * dead_peer_timeout_ns);
      trace("connection %u: the dialer's bytes stalled until %.3f ms", id,
            static_cast<double>(t.pipe[dialer].stalled_until_ns - start_ns) / ms_ns);
      return;
    case 3:
      // The acceptor's bytes (HELLO_ACK, ACKs, replay) arrive late.
      t.pipe[acceptor].stalled_until_ns = now() + random_.between(1 * ms_ns, 2 * dead_peer_timeout_ns);
      trace("connection %u: the acceptor's bytes stalled until %.3f ms", id,
            static_cast<double>(t.pipe[acceptor].stalled_until_ns - start_ns) / ms_ns);
      return;
    case 4:
    case 5: {
      // One end gives up on its own (a local error); the other sees its FIN after its bytes.
      const int side = random_.below(2) == 0 ? dialer : acceptor;
      trace("connection %u: the %s's end fails soon", id, side_name(side));
      return schedule(EventKind::socket_error, side, random_.below(5 * ms_ns), id);
    }
    case 6: {
      // One direction is slow for the connection's life: ACKs, CREDITs or data lag.
      const int side = random_.below(2) == 0 ? dialer : acceptor;
      t.pipe[side].slow_ns = random_.between(1 * ms_ns, 20 * ms_ns);
      trace("connection %u: the %s's bytes slowed by %llu us", id, side_name(side),
            static_cast<unsigned long long>(t.pipe[side].slow_ns / us_ns));
      return;
    }
  }
}

void Sim::break_tcp(uint32_t id) {
  Tcp& t = tcps_[id];
  if (t.broken) return;
  t.broken = true;
  trace("connection %u breaks", id);
  for (Pipe& p : t.pipe) {
    // The tail of what was in flight is dropped; a random part of it still arrives.
    const std::size_t limit = std::min(p.bytes.size(), p.cut);
    p.cut = p.delivered + random_.below(limit - p.delivered + 1);
  }
  for (int side : {dialer, acceptor}) {
    // Each end hears a reset, or (a quarter of the time) only its keepalive finds out.
    if (t.open[side] && !random_.one_in(4)) schedule(EventKind::socket_error, side, random_.below(2 * ms_ns), id);
  }
}

void Sim::send(uint32_t id, int side, std::span<const std::byte> bytes) {
  Tcp& t = tcps_[id];
  RM_ASSERT(t.open[side] && !t.pipe[side].fin);  // a link sends on its current transport only
  Pipe& p = t.pipe[side];
  p.bytes.insert(p.bytes.end(), bytes.begin(), bytes.end());
  trace("connection %u: the %s sends %zu bytes", id, side_name(side), bytes.size());
  if (t.break_at_cut && !t.broken && p.bytes.size() > p.cut) schedule(EventKind::fault, side, 0, id);
  arm_delivery(id, side, latency());
}

void Sim::shutdown(uint32_t id, int side) {
  tcps_[id].pipe[side].fin = true;
  arm_delivery(id, side, latency());
  trace("%s shuts connection %u down for writing", side_name(side), id);
}

void Sim::close(uint32_t id, int side) {
  Tcp& t = tcps_[id];
  if (!t.open[side]) return;
  t.open[side] = false;
  t.pipe[side].fin = true;
  if (side == dialer && !t.routed) t.dialer_gave_up = true;
  arm_delivery(id, side, latency());  // the FIN
  schedule(EventKind::socket_closed, side, random_.between(1 * us_ns, 50 * us_ns), id);
  trace("%s closes connection %u", side_name(side), id);
}

void Sim::arm_delivery(uint32_t id, int writer, uint64_t delay_ns) {
  Pipe& p = tcps_[id].pipe[writer];
  if (p.armed) return;
  p.armed = true;
  const uint64_t stall_ns = p.stalled_until_ns > now() ? p.stalled_until_ns - now() : 0;
  schedule(EventKind::deliver, writer, std::max(delay_ns + p.slow_ns, stall_ns), id);
}

std::size_t Sim::slice(std::size_t available) {
  switch (random_.below(8)) {
    case 0:
      return random_.between(1, std::min<std::size_t>(available, 64));  // a trickle
    case 1:
    case 2:
    case 3:
      return random_.between(1, available);
    default:
      return available;
  }
}

void Sim::deliver(uint32_t id, int writer) {
  Tcp& t = tcps_[id];
  Pipe& p = t.pipe[writer];
  const int reader = 1 - writer;
  p.armed = false;
  if (!t.open[reader]) return;  // the reader closed: nothing reaches it any more
  const std::size_t limit = std::min(p.bytes.size(), p.cut);
  if (p.delivered < limit) {
    const std::size_t n = slice(limit - p.delivered);
    delivery_.assign(p.bytes.begin() + static_cast<std::ptrdiff_t>(p.delivered),
                     p.bytes.begin() + static_cast<std::ptrdiff_t>(p.delivered + n));
    p.delivered += n;
    trace("connection %u: %zu bytes to the %s (%zu of %zu)", id, n, side_name(reader), p.delivered, p.bytes.size());
    on_bytes(id, reader, delivery_);
    // Later bytes, or the FIN, follow (the pipe may have grown meanwhile).
    if (p.delivered < std::min(p.bytes.size(), p.cut) || p.fin) arm_delivery(id, writer, random_.below(plan_.latency_ns / 4 + 1));
    return;
  }
  if (p.fin && p.cut == SIZE_MAX && p.delivered == p.bytes.size()) {
    trace("connection %u: the %s reads the FIN", id, side_name(reader));
    on_socket_error(id, reader, engine::IoError::closed);
  }
}

void Sim::on_bytes(uint32_t id, int reader, std::span<const std::byte> bytes) {
  Tcp& t = tcps_[id];
  if (reader == dialer || t.routed) {
    if (t.end[reader] != nullptr) t.end[reader]->on_bytes(bytes);
    return;
  }
  // mux::Acceptor: the HELLO is read on its own; what follows stays for the session.
  t.hello.insert(t.hello.end(), bytes.begin(), bytes.end());
  if (t.hello.size() < wire::header_bytes) return;
  uint32_t length = 0;
  std::memcpy(&length, t.hello.data(), sizeof(length));
  if (length > limits::hello_payload_bytes_max) return fail("connection " + std::to_string(id) + ": no HELLO");
  const std::size_t need = wire::header_bytes + length;
  if (t.hello.size() < need) return;
  wire::Decoder decoder(limits::hello_payload_bytes_max);
  auto step = decoder.next(std::span<const std::byte>(t.hello).first(need));
  if (!step || !step->has_frame || step->frame.header.frame_kind() != wire::FrameKind::hello) {
    return fail("connection " + std::to_string(id) + ": its first frame is no HELLO");
  }
  auto hello = wire::parse_hello(step->frame);
  if (!hello) return fail("connection " + std::to_string(id) + ": its HELLO does not parse");
  const Bytes rest(t.hello.begin() + static_cast<std::ptrdiff_t>(need), t.hello.end());
  t.hello = Bytes();
  route(id, hello.value());
  // What followed the HELLO stays in the kernel for the session's first receive.
  if (t.routed && !rest.empty() && t.end[acceptor] != nullptr) t.end[acceptor]->on_bytes(rest);
}

void Sim::route(uint32_t id, const wire::Hello& hello) {
  Tcp& t = tcps_[id];
  trace("acceptor reads connection %u's HELLO: generation %llu, position %llu", id,
        static_cast<unsigned long long>(hello.generation), static_cast<unsigned long long>(hello.receive_position));
  if (connections_[acceptor] == nullptr) {
    // mux::Acceptor::route: an unknown session id makes a new session.
    const replay::HelloAnswer answer = replay::answer_hello(hello, nullptr);
    if (answer.verdict != replay::HelloVerdict::accept_new) {
      return fail(std::string("a HELLO for an unknown session refused: ") + replay::describe(answer.error));
    }
    connections_[acceptor] =
        std::make_unique<Connection>(*loop_, std::make_unique<SimTransport>(*this, id, acceptor), false,
                                     apps_[acceptor].get(), *apps_[acceptor], options_for(acceptor));
    apps_[acceptor]->attach(*connections_[acceptor]);
    connections_[acceptor]->register_in(*this);
    t.routed = true;
    return connections_[acceptor]->start(hello);
  }
  // Connection::adopt, as the acceptor calls it.
  const bool live = current(acceptor) != no_tcp;
  std::unique_ptr<Transport> transport = std::make_unique<SimTransport>(*this, id, acceptor);
  const replay::HelloAnswer answer = connections_[acceptor]->adopt(transport, hello);
  switch (answer.verdict) {
    case replay::HelloVerdict::accept_resume:
      t.routed = true;
      coverage_.resumes++;
      if (live) coverage_.live_superseded++;
      if (t.dialer_gave_up) coverage_.late_hello_accepted++;
      return;
    case replay::HelloVerdict::refuse:
      return fail(std::string("resume refused: ") + replay::describe(answer.error));  // the transport closes
    case replay::HelloVerdict::ignore:
    case replay::HelloVerdict::accept_new:
      coverage_.stale_hellos++;
      trace("acceptor ignores connection %u's HELLO (generation %llu, the session's %llu)", id,
            static_cast<unsigned long long>(hello.generation),
            static_cast<unsigned long long>(connections_[acceptor]->session().generation()));
      return;  // the transport, never started, closes its socket
  }
}

void Sim::on_socket_error(uint32_t id, int side, engine::IoError error) {
  Tcp& t = tcps_[id];
  if (!t.open[side]) return;
  if (side == acceptor && !t.routed) return close(id, acceptor);  // a pending HELLO read fails
  if (t.end[side] != nullptr) t.end[side]->on_error(error);
}

}  // namespace ringmux::mux::sim
