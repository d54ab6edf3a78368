// The resume simulation's clock, events, connections and acceptor (sim.h).
#include "tests/mux/session/sim/sim.h"

namespace ringmux::mux::sim {

// ---- Sim -------------------------------------------------------------------------------------

Sim::Sim(uint64_t seed, bool tracing, Coverage& coverage_sum)
    : random_(seed), plan_(draw_plan(seed, random_)), trace_(tracing), coverage_(coverage_sum), faults_left_(plan_.faults) {
  for (std::size_t i = 0; i < session_id_.size(); i += 8) {
    const uint64_t word = random_.next();
    std::memcpy(session_id_.data() + i, &word, 8);
  }
  for (int side : {dialer, acceptor}) apps_[side] = std::make_unique<App>(*this, side);
}

void Sim::fail(const std::string& why) {
  if (failure_.empty()) failure_ = "at " + std::to_string(now_ns_ / us_ns) + " us: " + why;
  trace("FAILURE: %s", why.c_str());
}

void Sim::trace(const char* format, ...) {
  if (!trace_) return;
  std::printf("%12.3f ms  ", static_cast<double>(now_ns_) / ms_ns);
  va_list args;
  va_start(args, format);
  std::vprintf(format, args);
  va_end(args);
  std::printf("\n");
}

void Sim::schedule(EventKind kind, int side, uint64_t delay_ns, uint32_t tcp, TimerKind what, uint64_t token) {
  Event event;
  event.at_ns = now_ns_ + delay_ns;
  event.order = order_++;
  event.kind = kind;
  event.side = side;
  event.what = what;
  event.tcp = tcp;
  event.token = token;
  events_.push(event);
}

std::string Sim::run() {
  SessionOptions options = plan_.options;
  options.dialer = true;
  options.session_id = session_id_;
  links_[dialer] = std::make_unique<Link>(*this, *apps_[dialer], dialer, options);
  apps_[dialer]->attach(*links_[dialer]);
  const uint32_t first = new_tcp(++attempts_);
  plan_fault(first);
  links_[dialer]->start(first);
  schedule(EventKind::app_tick, dialer, 0);
  schedule(EventKind::app_tick, acceptor, 0);
  for (const uint64_t at_ns : plan_.breaks_ns) schedule(EventKind::break_current, dialer, at_ns);
  uint64_t events = 0;
  while (!failed()) {
    if (apps_[dialer]->done() && apps_[acceptor]->done()) break;
    if (events == run_events_max || events_.empty() || now_ns_ > run_time_ns_max) {
      fail("not finished after " + std::to_string(events) + " events" + describe_state());
      break;
    }
    const Event event = events_.top();
    events_.pop();
    now_ns_ = event.at_ns;
    events++;
    dispatch(event);
    after_entry();
  }
  if (!failed()) verify_streams();
  coverage_.runs++;
  coverage_.events += events;
  coverage_.simulated_ns += now_ns_;
  coverage_.events_run_max = std::max(coverage_.events_run_max, events);
  coverage_.simulated_ns_run_max = std::max(coverage_.simulated_ns_run_max, now_ns_);
  coverage_.faults += plan_.faults - faults_left_;
  bool near_bound = false;
  for (const auto& link : links_) {
    if (link == nullptr) continue;
    const replay::HeldBatches& held = link->session().held();
    near_bound |= held.bytes_held_peak() * 2 >= held.bytes_max();
    coverage_.bytes_replayed += link->session().stats().bytes_replayed;
  }
  coverage_.runs_near_bound += near_bound ? 1 : 0;
  return failure_;
}

void Sim::dispatch(const Event& event) {
  switch (event.kind) {
    case EventKind::deliver:
      return deliver(event.tcp, event.side);
    case EventKind::send_complete:
      if (links_[event.side] != nullptr) links_[event.side]->on_send_complete(event.tcp);
      return;
    case EventKind::socket_error:
      return on_socket_error(event.tcp, event.side, "reset");
    case EventKind::socket_closed:
      if (links_[event.side] != nullptr) links_[event.side]->on_socket_closed(event.tcp);
      return;
    case EventKind::connect_done: {
      if (faults_left_ > 0 && random_.one_in(4)) {
        faults_left_--;
        coverage_.connect_failures++;
        trace("connect %u refused", attempts_);
        return links_[dialer]->on_connect(std::nullopt);
      }
      const uint32_t id = new_tcp(attempts_);
      plan_fault(id);
      return links_[dialer]->on_connect(id);
    }
    case EventKind::timer:
      if (links_[event.side] != nullptr) links_[event.side]->on_timer(event.what, event.token);
      return;
    case EventKind::hello_timeout:
      if (!tcps_[event.tcp].routed) close(event.tcp, acceptor);
      return;
    case EventKind::app_tick:
      return apps_[event.side]->tick();
    case EventKind::fault:
      return break_tcp(event.tcp);
    case EventKind::break_current:
      if (links_[dialer]->transport() == no_tcp) return;
      coverage_.faults++;
      return break_tcp(links_[dialer]->transport());
  }
}

void Sim::after_entry() {
  for (const auto& link : links_) {
    if (link != nullptr) link->reap();
  }
  check_invariants();
}

void Sim::check_invariants() {
  for (int side : {dialer, acceptor}) {
    if (links_[side] == nullptr) continue;
    Session& session = links_[side]->session();
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
    if (links_[side] == nullptr) {
      out += std::string("\n  ") + side_name(side) + ": no session";
      continue;
    }
    Session& session = links_[side]->session();
    char line[256];
    std::snprintf(line, sizeof line,
                  "\n  %s: transport %d, handshake %d, generation %llu, held %llu (unsent %llu), sent %llu, "
                  "received %llu",
                  side_name(side), static_cast<int>(links_[side]->transport()), session.handshake_complete() ? 1 : 0,
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
      t.pipe[dialer].stalled_until_ns = now_ns_ + random_.between(dead_peer_timeout_ns / 2, 3 * dead_peer_timeout_ns);
      trace("connection %u: the dialer's bytes stalled until %.3f ms", id,
            static_cast<double>(t.pipe[dialer].stalled_until_ns) / ms_ns);
      return;
    case 3:
      // The acceptor's bytes (HELLO_ACK, ACKs, replay) arrive late.
      t.pipe[acceptor].stalled_until_ns = now_ns_ + random_.between(1 * ms_ns, 2 * dead_peer_timeout_ns);
      trace("connection %u: the acceptor's bytes stalled until %.3f ms", id,
            static_cast<double>(t.pipe[acceptor].stalled_until_ns) / ms_ns);
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

void Sim::send(uint32_t id, int side, std::span<const std::byte> link, const replay::HeldSpans& held) {
  Tcp& t = tcps_[id];
  RM_ASSERT(t.open[side]);  // a link sends on its current transport only
  Pipe& p = t.pipe[side];
  for (std::span<const std::byte> part : {link, held.first, held.second}) p.bytes.insert(p.bytes.end(), part.begin(), part.end());
  trace("connection %u: the %s sends %zu bytes", id, side_name(side), link.size() + held.size());
  if (t.break_at_cut && !t.broken && p.bytes.size() > p.cut) schedule(EventKind::fault, side, 0, id);
  arm_delivery(id, side, latency());
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
  const uint64_t stall_ns = p.stalled_until_ns > now_ns_ ? p.stalled_until_ns - now_ns_ : 0;
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
    on_socket_error(id, reader, "closed by the peer");
  }
}

void Sim::on_bytes(uint32_t id, int reader, std::span<const std::byte> bytes) {
  Tcp& t = tcps_[id];
  if (reader == dialer) return links_[dialer]->on_recv(id, bytes);
  if (t.routed) return links_[acceptor]->on_recv(id, bytes);
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
  if (t.routed && !rest.empty()) links_[acceptor]->on_recv(id, rest);
}

void Sim::route(uint32_t id, const wire::Hello& hello) {
  Tcp& t = tcps_[id];
  trace("acceptor reads connection %u's HELLO: generation %llu, position %llu", id,
        static_cast<unsigned long long>(hello.generation), static_cast<unsigned long long>(hello.receive_position));
  if (links_[acceptor] == nullptr) {
    // mux::Acceptor::route: an unknown session id.
    const replay::HelloAnswer answer = replay::answer_hello(hello, nullptr);
    if (answer.verdict != replay::HelloVerdict::accept_new) {
      return fail(std::string("a HELLO for an unknown session refused: ") + replay::describe(answer.error));
    }
    SessionOptions options = plan_.options;
    options.dialer = false;
    links_[acceptor] = std::make_unique<Link>(*this, *apps_[acceptor], acceptor, options);
    apps_[acceptor]->attach(*links_[acceptor]);
    t.routed = true;
    return links_[acceptor]->start(id, hello);
  }
  const replay::HelloAnswer answer = links_[acceptor]->adopt(id, hello);
  switch (answer.verdict) {
    case replay::HelloVerdict::accept_resume:
      t.routed = true;
      coverage_.resumes++;
      if (t.dialer_gave_up) coverage_.late_hello_accepted++;
      return;
    case replay::HelloVerdict::refuse:
      fail(std::string("resume refused: ") + replay::describe(answer.error));
      return close(id, acceptor);
    case replay::HelloVerdict::ignore:
    case replay::HelloVerdict::accept_new:
      coverage_.stale_hellos++;
      trace("acceptor ignores connection %u's HELLO (generation %llu, the session's %llu)", id,
            static_cast<unsigned long long>(hello.generation),
            static_cast<unsigned long long>(links_[acceptor]->session().generation()));
      return close(id, acceptor);
  }
}

void Sim::on_socket_error(uint32_t id, int side, const char* why) {
  Tcp& t = tcps_[id];
  if (!t.open[side]) return;
  if (side == acceptor && !t.routed) return close(id, acceptor);  // a pending HELLO read fails
  links_[side]->on_socket_error(id, why);
}

}  // namespace ringmux::mux::sim
