#include "ringmux/mux/session/session.h"

#include <algorithm>
#include <cstring>

#include "ringmux/base/assert.h"

namespace ringmux::mux {

using wire::Frame;
using wire::FrameKind;
using wire::StatusCode;

Session::Session(SessionHandler& handler, const SessionOptions& options)
    : handler_(handler),
      options_(options),
      dialer_(options.dialer),
      streams_(options.table_secret),
      next_local_id_(options.dialer ? 1 : 2),
      connection_send_(limits::connection_window_bytes_min),
      connection_recv_(options.connection_window_bytes, options.connection_window_bytes),
      flood_(options.flood),
      dial_(options.session_id, options.authenticated_transport ? wire::feature_unchecked_payloads : 0),
      output_open_(options.dialer),
      held_(options.replay_bytes_max) {
  // Windows we announce must be ones a pipelining peer may assume (SPEC §4.1).
  RM_ASSERT(options.stream_window_bytes >= limits::stream_window_bytes_min &&
            options.connection_window_bytes >= limits::connection_window_bytes_min &&
            options.stream_window_bytes <= options.connection_window_bytes);
  // Nothing is reserved up front: an idle session costs its fixed members only (the stream
  // table and the batch buffers grow with use, and the held batches recycle them).
  if (dialer_) {
    // HELLO is the first frame of the dialer's direction: queued before anything else can
    // be, and sent with the first batch; frames queued later go right behind it.
    wire::Hello hello = dial_.start_attempt(0);
    hello.route_key = options_.route_key;
    announce_windows(hello);
    session_id_ = hello.session_id;
    generation_ = hello.generation;
    new_session_handshake_ = true;
    wire::encode_hello(grow(link_, wire::frame_bytes(wire::hello_payload_size(hello))), hello);
    stats_.frames_sent++;
  }
}

Err<MuxError> Session::violation(MuxError error, std::string message) noexcept {
  if (failure_message_.empty()) failure_message_ = std::move(message);
  return Err{error};
}

Err<MuxError> Session::damaged() noexcept {
  damaged_ = true;
  return Err{MuxError::protocol_violation};
}

Result<void, MuxError> Session::admit(FloodKind kind, uint64_t now_ns, uint32_t count) noexcept {
  if (flood_.admit(kind, now_ns, count)) return {};
  stats_.floods++;
  return violation(MuxError::flood, flood_message(kind, flood_.limits()[kind]));
}

void Session::announce_windows(wire::Hello& hello) const noexcept {
  hello.stream_window_bytes = options_.stream_window_bytes;
  hello.connection_window_bytes = options_.connection_window_bytes;
}

void Session::announce_windows(wire::HelloAck& ack) const noexcept {
  ack.stream_window_bytes = options_.stream_window_bytes;
  ack.connection_window_bytes = options_.connection_window_bytes;
}

void Session::apply_peer_windows(uint32_t stream_bytes, uint32_t connection_bytes) noexcept {
  if (peer_windows_known_) return;  // a resume announces the same windows again
  peer_windows_known_ = true;
  // A peer that predates the fields grants the version 1 defaults.
  if (stream_bytes == 0) stream_bytes = limits::stream_window_bytes_initial;
  if (connection_bytes == 0) connection_bytes = limits::connection_window_bytes_initial;
  RM_ASSERT(stream_bytes >= limits::stream_window_bytes_min && connection_bytes >= limits::connection_window_bytes_min);
  // Streams opened so far were given the minimum: they get the rest of the window now
  // (once per session, while at most the streams of one round trip exist).
  const uint32_t stream_extra = stream_bytes - limits::stream_window_bytes_min;
  peer_stream_window_ = stream_bytes;
  if (stream_extra > 0) {
    streams_.for_each([&](StreamId id, Stream& stream) {
      if (!is_local(id)) return;
      (void)stream.send_credit.add(stream_extra);
      credit_arrived(stream);
    });
  }
  (void)connection_send_.add(connection_bytes - limits::connection_window_bytes_min);
  notify_writable();
}

uint64_t Session::stream_buffered(StreamId id) const noexcept {
  const Stream* stream = streams_.find(id);
  return stream == nullptr ? 0 : stream->recv_window.buffered();
}

std::span<std::byte> Session::grow(ByteVector& buffer, std::size_t bytes) noexcept {
  const std::size_t old_size = buffer.size();
  // A buffer's first growth reserves 16 KiB (address space: only the pages written become
  // resident): a batch of small frames then never reallocates, and the held batches
  // recycle buffers of at least that capacity, so that a message costs no allocation once
  // warm whatever the size of its batch (with 4 KiB, batches of 64 calls' OPENs grew a
  // recycled buffer now and then). An idle session's trim() gives them back.
  if (buffer.capacity() < batch_buffer_bytes_min) buffer.reserve(std::max(batch_buffer_bytes_min, old_size + bytes));
  buffer.resize(old_size + bytes);
  return {buffer.data() + old_size, bytes};
}

// ---- streams ---------------------------------------------------------------------------

Result<StreamId, MuxError> Session::open(uint32_t handler_id, uint64_t deadline_budget_ns,
                                         std::span<const std::byte> payload, bool end_stream) noexcept {
  // The initial payload goes whole, against the peer's initial stream window.
  if (payload.size() > peer_stream_window_ || payload.size() > connection_send_.available()) {
    if (failed()) return Err{MuxError::stream_closed};
    return Err{MuxError::refused};
  }
  auto opened = open_some(handler_id, deadline_budget_ns, payload, end_stream);
  if (!opened) return Err{opened.error()};
  return opened->id;
}

Result<Session::Opened, MuxError> Session::open_some(uint32_t handler_id, uint64_t deadline_budget_ns,
                                                     std::span<const std::byte> payload, bool end_stream) noexcept {
  if (failed()) return Err{MuxError::stream_closed};
  if (goaway_received_ || streams_.size() >= options_.streams_concurrent_max) return Err{MuxError::refused};
  // What the credit allows now goes with the OPEN; the rest waits for credit like any write.
  const std::size_t take =
      std::min<std::size_t>(payload.size(), std::min<uint64_t>(peer_stream_window_, connection_send_.available()));
  const bool cut_short = take < payload.size();
  const bool end_now = end_stream && !cut_short;
  payload = payload.first(take);
  const StreamId id = next_local_id_;
  next_local_id_ += 2;
  Stream& stream =
      streams_.emplace(id, id, peer_stream_window_, options_.stream_window_bytes, options_.stream_window_bytes_max);
  shared_seen_ |= streams_.size() > 1;
  (void)stream.machine.send_open(end_now);
  stream.open_batch = batch_number_;
  stream.send_credit.consume(payload.size());
  connection_send_.consume(payload.size());
  // Copy: the initial payload goes from the caller's memory into the batch. A small OPEN
  // rides with the control frames, ahead of bulk data (the stream's own DATA and END go
  // to data_, behind it, so its order holds).
  // Stream ids must reach the peer in increasing order: once a large OPEN waits among
  // the data of this batch, later OPENs of the batch queue behind it too.
  const bool priority = payload.size() <= limits::open_priority_bytes_max && data_open_batch_ != batch_number_;
  ByteVector& out = priority ? control_ : data_;
  if (!priority) data_open_batch_ = batch_number_;
  wire::encode_open(grow(out, wire::frame_bytes(wire::open_prefix_bytes + payload.size())), id,
                    end_now ? wire::flag_end_stream : 0, handler_id, deadline_budget_ns, payload, payload_checksums_);
  stats_.frames_sent++;
  stats_.streams_opened_local++;
  if (cut_short) wait_writable(stream);  // on_stream_writable() follows when more can go
  return Opened{id, take};
}

void Session::append_data(StreamId id, std::span<const std::byte> payload, bool end_stream) noexcept {
  // The first data of a session sizes its batch once (an idle session reserves nothing;
  // growing by doubling would both copy and overshoot a batch's size).
  if (data_.capacity() == 0) data_.reserve(limits::send_batch_bytes_target + limits::data_chunk_bytes);
  // Copy: the caller's payload into the batch, in chunks so that other streams' frames
  // can pass between them (bounded head-of-line delay).
  do {
    const std::size_t chunk = std::min<std::size_t>(payload.size(), limits::data_chunk_bytes);
    const bool last = chunk == payload.size();
    wire::encode_frame(grow(data_, wire::frame_bytes(chunk)), FrameKind::data,
                       last && end_stream ? wire::flag_end_stream : 0, id, payload.first(chunk), payload_checksums_);
    stats_.frames_sent++;
    payload = payload.subspan(chunk);
  } while (!payload.empty());
}

Result<std::size_t, MuxError> Session::write(StreamId id, std::span<const std::byte> bytes, bool end_stream) noexcept {
  Stream* stream = find(id);
  if (stream == nullptr || failed()) return Err{MuxError::stream_closed};
  if (!stream->machine.can_send()) {
    auto refused = stream->machine.send_data(false);
    RM_ASSERT(!refused.ok());
    return Err{refused.error()};
  }
  if (stream->batch_number != batch_number_) {
    stream->batch_number = batch_number_;
    stream->batch_bytes = 0;
  }
  const std::size_t batch_room = this->batch_room();
  // Writing now fulfils the stream's promise (writable_deferred): the room it was woken
  // for is what it takes, or free for others. (A promise of 2^32 rounds ago that matches
  // by wrap-around costs at most a turn's miscount until the next round.)
  const uint32_t promised = stream->promise_round == promise_round_ ? stream->promised : 0;
  stream->promised = 0;
  promised_bytes_ -= std::min<uint64_t>(promised, promised_bytes_);
  // A stream's turn in a batch is bounded while other streams write too (round robin: a
  // small frame of theirs waits behind at most one turn of each; woken writers that have
  // not written yet count); a stream that writes alone may fill the batch: one send per
  // batch target (W3, and W5's bulk stream beside a call that waits for its answer). Other
  // streams' head-of-line delay in the kernel's queues is bounded by the shared window cap
  // (consume()).
  const bool others_writing = batch_writers_ > (stream->batch_bytes > 0 ? 1u : 0u) ||
                              writable_.size() > (WritableQueue::queued(*stream) ? 1u : 0u) || promised_bytes_ > 0;
  // The turn the queue gave it, else (writing unasked) one turn per batch.
  std::size_t turn_room = batch_room;
  if (others_writing) {
    turn_room = stream->turn_left > 0 ? stream->turn_left
                                      : turn_bytes() - std::min<std::size_t>(stream->batch_bytes, turn_bytes());
  }
  const std::size_t take = std::min({bytes.size(), static_cast<std::size_t>(stream->send_credit.available()),
                                     static_cast<std::size_t>(connection_send_.available()), turn_room, batch_room});
  const bool end_now = end_stream && take == bytes.size();
  if (take < bytes.size() &&
      (take == stream->send_credit.available() || take == connection_send_.available())) {
    stats_.flow_control_stalls++;
  }
  if (take == 0 && !end_now) {
    cut_short(*stream, others_writing);
    return std::size_t{0};
  }
  if (take > 0 && stream->batch_bytes == 0) batch_writers_++;
  append_data(id, bytes.first(take), end_now);
  stream->send_credit.consume(take);
  connection_send_.consume(take);
  stream->batch_bytes += static_cast<uint32_t>(take);
  // The queue's turn is used up by what it took (alone, the stream has no turn).
  stream->turn_left = others_writing ? stream->turn_left - std::min(static_cast<uint32_t>(take), stream->turn_left) : 0;
  auto sent = stream->machine.send_data(end_now);
  RM_ASSERT(sent.ok());
  if (take < bytes.size()) cut_short(*stream, others_writing);
  finish_if_done(id, *stream);
  return take;
}

Result<void, MuxError> Session::end(StreamId id) noexcept {
  Stream* stream = find(id);
  if (stream == nullptr || failed()) return Err{MuxError::stream_closed};
  auto ended = stream->machine.send_end();
  if (!ended) return ended;
  wire::encode_end(grow(data_, wire::frame_bytes(0)), id);  // behind the stream's data
  stats_.frames_sent++;
  finish_if_done(id, *stream);
  return {};
}

void Session::reset(StreamId id, MuxError reason, std::string_view message) noexcept {
  Stream* stream = find(id);
  // A stream that is done but still in the table (both sides ended it, and its last event
  // is being delivered: a handler resetting it from there) closes cleanly right after.
  if (stream == nullptr || failed() || stream->machine.done()) return;
  if (message.size() > limits::frame_text_bytes_max) message = message.substr(0, limits::frame_text_bytes_max);
  const std::size_t frame_bytes = wire::frame_bytes(message.empty() ? 4 : 4 + message.size());
  if (stream->machine.send_reset(reason) && queue_control(frame_bytes)) {
    auto out = grow(control_for(*stream), frame_bytes);
    if (message.empty()) {
      wire::encode_reset(out, id, status_of(reason));
    } else {
      wire::encode_error(out, id, status_of(reason), message);  // a RESET that explains itself
    }
    stats_.frames_sent++;
  }
  RM_ASSERT(stream->machine.done());
  finish(id, *stream, reason, {});
}

void Session::stop(StreamId id) noexcept {
  Stream* stream = find(id);
  if (stream == nullptr || failed()) return;
  if (stream->machine.send_stop() && queue_control(wire::frame_bytes(4))) {
    wire::encode_stop(grow(control_for(*stream), wire::frame_bytes(4)), id, StatusCode::stream_stopped);
    stats_.frames_sent++;
  }
}

void Session::consume(StreamId id, std::size_t stream_bytes, std::size_t connection_bytes, uint64_t now_ns) noexcept {
  // The connection's credit comes back whatever became of the stream: every delivered
  // byte is consumed exactly once, even after its stream ended.
  credit_connection(connection_bytes, now_ns);
  const std::size_t bytes = stream_bytes;
  Stream* stream = find(id);
  if (stream == nullptr || failed()) return;
  // Sharing the connection caps the window: what it lets in queues ahead of the others.
  if (shared_seen_) {
    shared_seen_ = false;
    shared_until_ns_ = now_ns + limits::stream_window_shared_hold_ns;
  }
  const bool shared = streams_.size() > 1 || now_ns < shared_until_ns_;
  const uint32_t cap = shared ? options_.stream_window_bytes_shared_max : UINT32_MAX;
  const uint32_t increment = stream->recv_window.on_consumed(bytes, now_ns, rtt_ns_, cap);
  if (increment == 0 || !stream->machine.can_receive()) return;
  if (!queue_control(wire::frame_bytes(4))) return;
  wire::encode_credit(grow(control_, wire::frame_bytes(4)), id, increment);
  stats_.frames_sent++;
}

// ---- connection ------------------------------------------------------------------------

void Session::ping(uint64_t opaque) noexcept {
  if (failed() || !queue_control(wire::frame_bytes(8), true)) return;
  wire::encode_ping(grow(link_, wire::frame_bytes(8)), opaque);
  stats_.frames_sent++;
}

void Session::goaway(StatusCode code) noexcept {
  if (failed() || goaway_sent_ || !queue_control(wire::frame_bytes(8))) return;
  goaway_sent_ = true;
  wire::encode_goaway(grow(control_, wire::frame_bytes(8)), last_peer_id_, code, {});
  stats_.frames_sent++;
}

bool Session::local_open(StreamId id) const noexcept {
  const Stream* stream = streams_.find(id);
  if (stream == nullptr) return false;
  const StreamState state = stream->machine.state();
  return state == StreamState::open || state == StreamState::remote_closed;
}

void Session::trim() noexcept {
  held_.release_spares();
  decoder_.trim();
  if (control_.empty()) ByteVector().swap(control_);
  if (data_.empty()) ByteVector().swap(data_);
  if (link_.empty()) ByteVector().swap(link_);
  streams_.trim();
}

void Session::fail(MuxError error, std::string message) noexcept {
  if (failed()) return;
  if (!message.empty() && failure_message_.empty()) failure_message_ = std::move(message);
  failed_ = error;
  // Every stream ends with the connection's error; the handler may not touch the session
  // for these streams afterwards.
  std::vector<StreamId> ids;
  ids.reserve(streams_.size());
  streams_.for_each([&](StreamId id, Stream&) { ids.push_back(id); });
  for (const StreamId id : ids) {
    Stream* stream = find(id);
    if (stream == nullptr) continue;  // the handlers of a failed session cannot end streams; checked anyway
    StreamBinding binding = std::move(stream->binding);
    forget_writable(*stream);
    streams_.erase(id);
    handler_.on_stream_finished(id, binding, error, {});
  }
  peer_streams_open_ = 0;
  control_.clear();
  data_.clear();
  link_.clear();
  link_ack_offset_ = no_ack_offset;
  RM_ASSERT(writable_.empty());
}

// ---- bytes out -------------------------------------------------------------------------

bool Session::link_open() const noexcept {
  // The dialer's HELLO leads its link frames; the acceptor's HELLO_ACK must lead its own,
  // so they wait for the handshake (or for the refusal, which fails the session).
  return dialer_ || output_open_ || failed();
}

bool Session::has_output() const noexcept {
  if (!link_.empty() && link_open()) return true;
  if (!output_open_ || failed()) return false;
  if (held_.bytes_unsent() > 0) return true;
  const std::size_t batch_bytes = control_.size() + data_.size();
  return batch_bytes > 0 && held_.fits(batch_bytes);
}

void Session::take_output(ByteVector& link, replay::HeldSpans& held) noexcept {
  RM_ASSERT(link.empty());
  held = {};
  const bool positioned = output_open_ && !failed();
  if (positioned && held_.bytes_unsent() == 0) {
    const std::size_t batch_bytes = control_.size() + data_.size();
    if (batch_bytes > 0 && held_.fits(batch_bytes)) {
      // The batch becomes held: moved, not copied (the held batches hand back recycled
      // buffers, whose capacity the session keeps using).
      held_.push(control_, data_);
      control_frames_ = 0;
      batch_writers_ = 0;
      batch_number_++;
      stats_.batches++;
    }
  }
  if (positioned) held = held_.take_unsent();
  // The ACK rides along with bytes that go out anyway: no send of its own.
  if ((!held.empty() || !link_.empty()) && ack_policy_.ack_due(0, true)) queue_ack();
  if (link_open()) {
    link.swap(link_);
    link_ack_offset_ = no_ack_offset;
    link_frames_ = 0;  // on their way out: no longer queued
  }
  // Streams cut short by the batch limits may write again into the new batch.
  if (!held.empty()) notify_writable();
}

void Session::notify_writable() noexcept {
  // Not re-entered from a handler's callback: the outer call goes on serving the queue.
  if (notifying_ || writable_.empty() || failed()) return;
  notifying_ = true;
  // Each waiting stream is looked at most once per call (a stream cut short again goes to
  // the back, behind those that waited): the steps are bounded by the streams served, plus
  // the few that already had their turn in this batch (at most a batch over the turn).
  for (std::size_t steps = writable_.size(); steps > 0 && !writable_.empty(); steps--) {
    const uint64_t room = std::min<uint64_t>(batch_room(), connection_send_.available());
    // Full, or the writers woken already will fill it (writable_deferred).
    if (room <= promised_bytes_) break;
    stats_.writable_steps++;
    Stream& stream = writable_.pop_front();
    RM_ASSERT(stream.wants_writable);
    if (stream.send_credit.available() == 0) {  // waits for its CREDIT (credit_arrived)
      stream.turn_left = 0;
      continue;
    }
    if (stream.turn_left == 0) {
      // A new turn, unless it wrote a whole one unasked in this batch already.
      const uint32_t turn_used = stream.batch_number == batch_number_ ? stream.batch_bytes : 0;
      if (turn_used >= turn_bytes()) {
        writable_.push_back(stream);  // the next batch serves it
        continue;
      }
      stream.turn_left = turn_bytes();
    }
    stream.wants_writable = false;
    if (options_.writable_deferred) {
      stream.promised = static_cast<uint32_t>(std::min<uint64_t>(stream.send_credit.available(), stream.turn_left));
      stream.promise_round = promise_round_;
      promised_bytes_ += stream.promised;
    }
    handler_.on_stream_writable(stream.id);  // may write, and may queue itself again
  }
  notifying_ = false;
}

void Session::wait_writable(Stream& stream, bool turn_missed) noexcept {
  if (stream.wants_writable) return;
  stream.wants_writable = true;
  // Without credit of its own the stream cannot use a turn: its CREDIT queues it.
  if (stream.send_credit.available() == 0) return;
  if (turn_missed) {
    writable_.push_front(stream);
  } else {
    writable_.push_back(stream);
  }
}

void Session::cut_short(Stream& stream, bool others_writing) noexcept {
  if (stream.send_credit.available() == 0) {
    stream.turn_left = 0;  // waits off the queue for its CREDIT, then queues at the back
    wait_writable(stream);
    return;
  }
  // Cut by the batch's end or the connection's credit in the middle of a turn the queue
  // gave it: the rest of the turn comes first (a stream cut at the batch's end every
  // round fell behind the others). A whole turn taken, or a write unasked: the back.
  wait_writable(stream, others_writing && stream.turn_left > 0);
}

void Session::credit_arrived(Stream& stream) noexcept {
  if (stream.wants_writable && !WritableQueue::queued(stream) && stream.send_credit.available() > 0) {
    writable_.push_back(stream);
  }
}

void Session::forget_writable(Stream& stream) noexcept {
  if (WritableQueue::queued(stream)) writable_.remove(stream);
}

}  // namespace ringmux::mux
