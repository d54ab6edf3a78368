// The resume simulation's applications (sim.h).
#include "tests/mux/session/sim/sim.h"

namespace ringmux::mux::sim {

// ---- App -----------------------------------------------------------------------------------

App::App(Sim& sim, int side) : sim_(sim), side_(side), halves_(sim.plan().streams.size()) {
  for (Half& h : halves_) {
    XXH3_64bits_reset(&h.sent_hash);
    XXH3_64bits_reset(&h.received_hash);
  }
}

void App::tick() {
  if (link_ != nullptr && !link_->ended()) {
    const auto& streams = sim_.plan().streams;
    for (std::size_t k = 0; k < streams.size(); k++) {
      if (streams[k].opener == side_ && !halves_[k].known && sim_.now() >= streams[k].open_ns) open(k);
    }
    for (Half& h : halves_) {
      // Deferred consumption: the peer's credit comes back late (flow control under resume).
      if (h.unconsumed > 0 && sim_.random().one_in(2)) {
        link_->consume(h.id, h.unconsumed);
        h.unconsumed = 0;
      }
    }
    for (std::size_t k = 0; k < streams.size(); k++) pump(k);
    link_->flush();
  }
  if (!done()) sim_.schedule(EventKind::app_tick, side_, sim_.random().between(100 * us_ns, 3 * ms_ns));
}

void App::pump_due() {
  due_scratch_.clear();
  due_scratch_.swap(due_);
  for (const std::size_t k : due_scratch_) pump(k);
}

bool App::done() const {
  if (link_ == nullptr) return false;
  return std::all_of(halves_.begin(), halves_.end(), [](const Half& h) { return h.closed && h.unconsumed == 0; });
}

void App::open(std::size_t k) {
  const StreamPlan& s = sim_.plan().streams[k];
  Half& h = halves_[k];
  scratch_.resize(s.initial);
  fill_content(s.key[side_], 0, scratch_);
  const bool end_stream = s.end_with_open && s.initial == s.bytes[side_];
  auto opened = link_->open(static_cast<uint32_t>(k + 1), scratch_, end_stream);
  if (!opened) return sim_.fail("stream " + std::to_string(k) + ": open failed: " + mux::describe(opened.error()));
  h.id = opened->id;
  h.known = true;
  index_[h.id] = k;
  XXH3_64bits_update(&h.sent_hash, scratch_.data(), opened->taken);
  h.sent = opened->taken;
  if (opened->taken < s.initial) {
    h.blocked = true;  // the session wakes it when credit lets the rest go
  } else if (end_stream) {
    h.end_sent = true;
  }
  sim_.trace("%s opens stream %zu as %u with %zu of %llu bytes", side_name(side_), k, h.id, opened->taken,
             static_cast<unsigned long long>(s.bytes[side_]));
}

void App::pump(std::size_t k) {
  const StreamPlan& s = sim_.plan().streams[k];
  Half& h = halves_[k];
  if (!h.known || h.end_sent || h.blocked || link_->ended()) return;
  if (s.unary && side_ != s.opener && !h.remote_ended) return;  // the response follows the request
  const uint64_t total = s.bytes[side_];
  uint64_t budget = sim_.random().between(1, 64 * kib);
  while (h.sent < total && budget > 0) {
    const uint64_t n = std::min({total - h.sent, sim_.random().between(1, 16 * kib), budget});
    scratch_.resize(n);
    fill_content(s.key[side_], h.sent, scratch_);
    const bool end_stream = h.sent + n == total && sim_.random().one_in(2);
    auto taken = link_->write(h.id, scratch_, end_stream);
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
    auto ended = link_->end(h.id);
    if (!ended) return sim_.fail("stream " + std::to_string(k) + ": end failed: " + mux::describe(ended.error()));
    h.end_sent = true;
  }
}

std::size_t App::index_of(StreamId id, const char* event) {
  auto it = index_.find(id);
  if (it != index_.end()) return it->second;
  sim_.fail(std::string(side_name(side_)) + ": " + event + " on stream id " + std::to_string(id) + ", not open");
  return SIZE_MAX;
}

void App::on_opened(StreamId id, uint32_t handler_id, std::span<const std::byte> payload, bool end_stream) {
  const std::size_t k = handler_id - 1;
  if (k >= halves_.size() || sim_.plan().streams[k].opener == side_ || halves_[k].known) {
    return sim_.fail(std::string(side_name(side_)) + ": unexpected OPEN " + std::to_string(id) + " for handler " +
                     std::to_string(handler_id));
  }
  halves_[k].id = id;
  halves_[k].known = true;
  index_[id] = k;
  receive(k, payload, end_stream);
  due_.push_back(k);
}

void App::on_data(StreamId id, std::span<const std::byte> payload, bool end_stream) {
  const std::size_t k = index_of(id, "data");
  if (k == SIZE_MAX) return;
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
    link_->consume(h.id, payload.size());  // at once, inside the callback (as observers do)
  } else {
    h.unconsumed += payload.size();  // at a later tick
  }
}

void App::on_reset(StreamId id, MuxError error, std::string_view message) {
  auto it = index_.find(id);
  sim_.fail(std::string(side_name(side_)) + ": stream " +
            (it == index_.end() ? "id " + std::to_string(id) : std::to_string(it->second)) +
            " reset: " + mux::describe(error) + " " + std::string(message));
}

void App::on_closed(StreamId id) {
  // May come inside our own write or end (the one that completed the stream): what was
  // sent is checked at the end of the run, against what the peer received.
  const std::size_t k = index_of(id, "close");
  if (k == SIZE_MAX) return;
  if (!halves_[k].remote_ended) {
    return sim_.fail(std::string(side_name(side_)) + ": stream " + std::to_string(k) + " closed before the peer's END");
  }
  halves_[k].closed = true;
  index_.erase(id);
}

void App::on_writable(StreamId id) {
  auto it = index_.find(id);
  if (it == index_.end()) return;  // closed meanwhile
  halves_[it->second].blocked = false;
  pump(it->second);
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
