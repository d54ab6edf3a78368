// The resume simulation's applications (sim.h).
#include "tests/mux/link/sim/sim.h"

namespace ringmux::mux::sim {

// ---- App -----------------------------------------------------------------------------------

namespace {

// A stream's observer: forwards its events to the application with the stream's index in
// the plan. Owned by the connection (open_owned, or a stream the peer opened).
class Observer final : public StreamObserver {
 public:
  Observer(App& app, std::size_t k) : app_(app), k_(k) {}
  void on_stream_message(std::string_view message) noexcept override { app_.on_message(k_, message); }
  void on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept override {
    app_.on_data(k_, bytes, end_stream);
  }
  void on_stream_writable() noexcept override { app_.on_writable(k_); }
  void on_stream_finished(MuxError error) noexcept override { app_.on_finished(k_, error); }

 private:
  App& app_;
  std::size_t k_;
};

}  // namespace

App::App(Sim& sim, int side)
    : sim_(sim), side_(side), halves_(sim.plan().streams.size()), messages_(sim.plan().streams.size()) {
  for (Half& h : halves_) {
    XXH3_64bits_reset(&h.sent_hash);
    XXH3_64bits_reset(&h.received_hash);
  }
}

void App::tick() {
  if (connection_ != nullptr && !connection_->ended()) {
    const auto& streams = sim_.plan().streams;
    for (std::size_t k = 0; k < streams.size(); k++) {
      if (streams[k].opener == side_ && !halves_[k].known && sim_.elapsed() >= streams[k].open_ns) open(k);
    }
    for (Half& h : halves_) {
      // Deferred consumption: the peer's credit comes back late (flow control under resume).
      // A finished stream's bytes too: the connection's credit comes back only so.
      if (h.unconsumed > 0 && sim_.random().one_in(2)) {
        connection_->consume(h.id, h.unconsumed);
        h.unconsumed = 0;
      }
    }
    for (std::size_t k = 0; k < streams.size(); k++) pump(k);
  }
  if (!done()) sim_.schedule(EventKind::app_tick, side_, sim_.random().between(100 * us_ns, 3 * ms_ns));
}

void App::pump_due() {
  due_scratch_.clear();
  due_scratch_.swap(due_);
  for (const std::size_t k : due_scratch_) pump(k);
}

bool App::done() const {
  if (connection_ == nullptr) return false;
  return std::all_of(halves_.begin(), halves_.end(), [](const Half& h) { return h.closed && h.unconsumed == 0; });
}

void App::open(std::size_t k) {
  const StreamPlan& s = sim_.plan().streams[k];
  Half& h = halves_[k];
  scratch_.resize(s.initial);
  fill_content(s.key[side_], 0, scratch_);
  const bool end_stream = s.end_with_open && s.initial == s.bytes[side_];
  // The whole payload is taken: what the OPEN cannot carry follows as DATA, ahead of later
  // writes (which take nothing until it has gone, then on_stream_writable comes).
  auto opened = connection_->open_owned(static_cast<uint32_t>(k + 1), 0, scratch_, end_stream, *new Observer(*this, k));
  if (!opened) return sim_.fail("stream " + std::to_string(k) + ": open failed: " + mux::describe(opened.error()));
  h.id = opened.value();
  h.known = true;
  XXH3_64bits_update(&h.sent_hash, scratch_.data(), scratch_.size());
  h.sent = s.initial;
  h.end_sent = end_stream;
  sim_.trace("%s opens stream %zu as %u with %llu of %llu bytes", side_name(side_), k, h.id,
             static_cast<unsigned long long>(s.initial), static_cast<unsigned long long>(s.bytes[side_]));
}

void App::pump(std::size_t k) {
  const StreamPlan& s = sim_.plan().streams[k];
  Half& h = halves_[k];
  if (!h.known || h.end_sent || h.blocked || h.closed || connection_->ended()) return;
  if (s.unary && side_ != s.opener && !h.remote_ended) return;  // the response follows the request
  const uint64_t total = s.bytes[side_];
  uint64_t budget = sim_.random().between(1, 64 * kib);
  while (h.sent < total && budget > 0) {
    const uint64_t n = std::min({total - h.sent, sim_.random().between(1, 16 * kib), budget});
    scratch_.resize(n);
    fill_content(s.key[side_], h.sent, scratch_);
    const bool end_stream = h.sent + n == total && sim_.random().one_in(2);
    auto taken = connection_->write(h.id, scratch_, end_stream);
    if (!taken) return sim_.fail("stream " + std::to_string(k) + ": write failed: " + mux::describe(taken.error()));
    XXH3_64bits_update(&h.sent_hash, scratch_.data(), taken.value());
    h.sent += taken.value();
    budget -= std::min<uint64_t>(budget, taken.value());
    if (taken.value() < n) {
      h.blocked = true;  // on_stream_writable comes
      return;
    }
    if (end_stream) {
      h.end_sent = true;
      return;
    }
  }
  if (h.sent == total) {
    auto ended = connection_->end(h.id);
    if (!ended) return sim_.fail("stream " + std::to_string(k) + ": end failed: " + mux::describe(ended.error()));
    h.end_sent = true;
  }
}

StreamObserver* App::open_stream(const StreamStart& start) const noexcept {
  // The service interface is const (a registry serves many connections); this one keeps
  // the state of its side of the plan.
  return const_cast<App*>(this)->opened_by_peer(start);
}

StreamObserver* App::opened_by_peer(const StreamStart& start) {
  const std::size_t k = start.handler_id - 1;
  if (start.handler_id == 0 || k >= halves_.size() || sim_.plan().streams[k].opener == side_ || halves_[k].known) {
    sim_.fail(std::string(side_name(side_)) + ": unexpected OPEN " + std::to_string(start.id) + " for handler " +
              std::to_string(start.handler_id));
    return nullptr;
  }
  halves_[k].id = start.id;
  halves_[k].known = true;
  due_.push_back(k);  // the payload comes as on_stream_data right after
  return new Observer(*this, k);
}

void App::on_data(std::size_t k, std::span<const std::byte> payload, bool end_stream) {
  receive(k, payload, end_stream);
  if (end_stream) due_.push_back(k);
}

void App::receive(std::size_t k, std::span<const std::byte> payload, bool end_stream) {
  const StreamPlan& s = sim_.plan().streams[k];
  Half& h = halves_[k];
  const int sender = 1 - side_;
  auto where = [&] { return "stream " + std::to_string(k) + " from the " + side_name(sender); };
  if (h.remote_ended) return sim_.fail(where() + ": bytes after its END");
  if (h.received + payload.size() > s.bytes[sender]) {
    return sim_.fail(where() + ": " + std::to_string(h.received + payload.size()) + " bytes, " +
                     std::to_string(s.bytes[sender]) + " were sent");
  }
  expected_.resize(payload.size());
  fill_content(s.key[sender], h.received, expected_);
  if (!payload.empty() && std::memcmp(payload.data(), expected_.data(), payload.size()) != 0) {
    std::size_t at = 0;
    while (payload[at] == expected_[at]) at++;
    return sim_.fail(where() + ": byte " + std::to_string(h.received + at) + " differs (a gap, a repeat or damage)");
  }
  XXH3_64bits_update(&h.received_hash, payload.data(), payload.size());
  h.received += payload.size();
  sim_.coverage().payload_bytes += payload.size();
  if (end_stream) {
    h.remote_ended = true;
    if (h.received != s.bytes[sender]) {
      return sim_.fail(where() + ": END after " + std::to_string(h.received) + " of " + std::to_string(s.bytes[sender]) +
                       " bytes");
    }
  }
  if (payload.empty()) return;
  if (sim_.random().one_in(2)) {
    connection_->consume(h.id, payload.size());  // at once, inside the callback (as observers do)
  } else {
    h.unconsumed += payload.size();  // at a later tick
  }
}

void App::on_message(std::size_t k, std::string_view message) { messages_[k] = std::string(message); }

void App::on_finished(std::size_t k, MuxError error) {
  Half& h = halves_[k];
  if (error != MuxError::none) {
    // After the run, the teardown's close ends what is left (cancelled): not a failure.
    if (!sim_.failed() && !connection_closing_) {
      sim_.fail(std::string(side_name(side_)) + ": stream " + std::to_string(k) + " reset: " + mux::describe(error) +
                " " + messages_[k]);
    }
    h.closed = true;
    return;
  }
  // Reported on the turn after the stream ended: what was sent is checked at the end of
  // the run, against what the peer received.
  if (!h.remote_ended) {
    return sim_.fail(std::string(side_name(side_)) + ": stream " + std::to_string(k) + " closed before the peer's END");
  }
  h.closed = true;
}

void App::on_writable(std::size_t k) {
  halves_[k].blocked = false;
  pump(k);
}

void App::on_connection_closed(Connection&, MuxError error, engine::IoError io_error) noexcept {
  connection_closed_ = true;
  if (!connection_closing_ && !sim_.failed()) {
    sim_.fail(std::string(side_name(side_)) + ": connection closed: " + mux::describe(error) + " (" +
              engine::describe(io_error) + ")");
  }
}

std::string App::describe() const {
  std::string out;
  const auto& streams = sim_.plan().streams;
  for (std::size_t k = 0; k < halves_.size(); k++) {
    const Half& h = halves_[k];
    if (h.closed && h.unconsumed == 0) continue;
    char line[256];
    std::snprintf(line, sizeof line,
                  "\n  %s stream %zu (id %u%s): sent %llu/%llu%s%s, received %llu/%llu%s, unconsumed %llu",
                  side_name(side_), k, h.id, h.known ? "" : ", not open", static_cast<unsigned long long>(h.sent),
                  static_cast<unsigned long long>(streams[k].bytes[side_]), h.end_sent ? " ended" : "",
                  h.blocked ? " blocked" : "", static_cast<unsigned long long>(h.received),
                  static_cast<unsigned long long>(streams[k].bytes[1 - side_]), h.remote_ended ? " ended" : "",
                  static_cast<unsigned long long>(h.unconsumed));
    out += line;
  }
  return out;
}

}  // namespace ringmux::mux::sim
