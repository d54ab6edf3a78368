// The session's receive side: bytes in, frames dispatched, the handshake and resume
// verdicts, per-stream and per-connection accounting of what arrives.
#include <algorithm>
#include <cstring>

#include "ringmux/base/assert.h"
#include "ringmux/mux/session/session.h"

namespace ringmux::mux {

using wire::Frame;
using wire::FrameKind;
using wire::StatusCode;

namespace {

// Largest control frame the session writes (GOAWAY / ERROR with full text).
constexpr std::size_t control_frame_bytes_max = wire::frame_bytes(8 + limits::frame_text_bytes_max);

constexpr uint32_t kind_bit(FrameKind kind) noexcept { return uint32_t{1} << static_cast<uint8_t>(kind); }

// The kinds whose bytes are numbered by positions (wire/SPEC.md §4, §8), as a bit set
// indexed by kind: the receive path counts a frame with one shift and mask, no branch.
constexpr uint32_t position_space_kinds = kind_bit(FrameKind::open) | kind_bit(FrameKind::data) |
                                          kind_bit(FrameKind::end) | kind_bit(FrameKind::reset) |
                                          kind_bit(FrameKind::stop) | kind_bit(FrameKind::credit) |
                                          kind_bit(FrameKind::goaway) | kind_bit(FrameKind::error);
static_assert(static_cast<uint8_t>(FrameKind::error) < 32, "every known kind fits the bit set");
static_assert((position_space_kinds & (kind_bit(FrameKind::hello) | kind_bit(FrameKind::hello_ack) |
                                       kind_bit(FrameKind::ping) | kind_bit(FrameKind::pong) |
                                       kind_bit(FrameKind::ack))) == 0,
              "connection-only frames are outside the position space");

// The session-level error of a failed handshake: a session-scoped refusal means the
// session cannot go on anywhere; anything else ends this connection only.
MuxError error_of(replay::ReplayError error) noexcept {
  if (scope_of(error) == Scope::session) return MuxError::session_lost;
  if (error == replay::ReplayError::handshake_refused) return MuxError::peer_error;
  return MuxError::protocol_violation;
}

}  // namespace

// ---- bytes in --------------------------------------------------------------------------

Result<void, MuxError> Session::receive(std::span<const std::byte> bytes, uint64_t now_ns) noexcept {
  if (failed()) return Err{failed_};
  const uint64_t skipped_before = decoder_.frames_skipped();
  bool frame_completed = false;
  while (!bytes.empty()) {
    auto step = decoder_.next(bytes);
    if (!step) {
      // A wire error: the bytes cannot be trusted. With resume, the damage belongs to this
      // connection (corruption is caught here, before any frame of it is handled) and the
      // session goes on over the next one; otherwise the session ends with it.
      if (options_.resumable) return Err{MuxError::protocol_violation};
      fail(MuxError::protocol_violation);
      return Err{failed_};
    }
    bytes = bytes.subspan(step->consumed);
    if (!step->has_frame) continue;
    frame_completed = true;
    stats_.frames_received++;
    if (!handshake_complete_) [[unlikely]] {
      auto handshake = handle_handshake(step->frame);
      if (!handshake) {
        fail(handshake.error());
        return Err{failed_};
      }
      continue;
    }
    const uint8_t kind = step->frame.header.kind;
    RM_DEBUG_ASSERT(kind < 32);  // the decoder passes on known kinds only
    const uint64_t position_bytes =
        ((position_space_kinds >> (kind & 31u)) & 1u) * wire::frame_bytes(step->frame.payload.size());
    receive_position_ += position_bytes;
    auto handled = handle(step->frame, now_ns);
    if (!handled) {
      if (damaged_ && options_.resumable) {
        // A payload whose fields do not parse (SPEC §2.1 check 9) is damage like a bad
        // checksum: this connection ends, and the frame was never received (the peer
        // sends it again from our position).
        damaged_ = false;
        receive_position_ -= position_bytes;
        return handled;
      }
      if (handled.error() == MuxError::ack_beyond_sent && options_.resumable) return handled;  // this connection only
      fail(handled.error());
      return Err{failed_};
    }
  }
  // Ignorable frames are skipped by the decoder; their rate is still limited.
  if (const uint64_t skipped = decoder_.frames_skipped() - skipped_before; skipped > 0) {
    auto admitted = admit(FloodKind::ignorable, now_ns, static_cast<uint32_t>(std::min<uint64_t>(skipped, UINT32_MAX)));
    if (!admitted) {
      fail(admitted.error());
      return Err{failed_};
    }
  }
  // A frame left partly received: its clock starts with the call that began it (a frame
  // begun in an earlier call keeps that call's time, however many bytes trickle in since).
  if (!decoder_.mid_frame()) {
    frame_started_ns_ = 0;
  } else if (frame_started_ns_ == 0 || frame_completed) {
    frame_started_ns_ = now_ns;
  }
  // Once per call, not per frame: the policy sees the position the call ended at.
  if (receive_position_ != ack_policy_.received_position()) {
    ack_policy_.on_received(receive_position_, now_ns);
    if (ack_policy_.ack_due(now_ns, false)) queue_ack();
  }
  return {};
}

Result<void, MuxError> Session::handle_handshake(const Frame& frame) noexcept {
  // SPEC §1: the first frame from the dialer is HELLO, from the acceptor HELLO_ACK.
  if (dialer_) {
    if (frame.header.frame_kind() != FrameKind::hello_ack) return Err{MuxError::protocol_violation};
    return handle_hello_ack(frame);
  }
  if (frame.header.frame_kind() != FrameKind::hello) return Err{MuxError::protocol_violation};
  return handle_hello(frame);
}

Result<void, MuxError> Session::handle_hello(const Frame& frame) noexcept {
  auto hello = wire::parse_hello(frame);
  if (!hello) return Err{MuxError::protocol_violation};
  // No session table yet: every HELLO asks for a new session or resumes one we cannot know.
  const replay::HelloAnswer answer = replay::answer_hello(hello.value(), nullptr, features());
  switch (answer.verdict) {
    case replay::HelloVerdict::accept_new:
      break;
    case replay::HelloVerdict::refuse: {
      // The refusal is the only frame that goes out: fail first (which drops whatever the
      // application queued), then queue the HELLO_ACK that says why.
      const MuxError error = error_of(answer.error);
      fail(error);
      wire::encode_hello_ack(grow(link_, wire::frame_bytes(wire::hello_ack_payload_size(answer.ack))), answer.ack);
      stats_.frames_sent++;
      return Err{error};
    }
    case replay::HelloVerdict::accept_resume:
    case replay::HelloVerdict::ignore:
      // Only a known session resumes or is superseded; answer_hello was told of none.
      RM_ASSERT(false);
      return Err{MuxError::protocol_violation};
  }
  accept_new(hello.value(), answer.ack);
  return {};
}

void Session::accept_new(const wire::Hello& hello, const wire::HelloAck& answer) noexcept {
  session_id_ = hello.session_id;
  generation_ = hello.generation;
  new_session_handshake_ = true;
  handshake_complete_ = true;
  apply_features(answer.features);
  apply_peer_windows(hello.stream_window_bytes, hello.connection_window_bytes);
  wire::HelloAck ack = answer;
  announce_windows(ack);
  // The HELLO_ACK goes ahead of everything the application queued while we waited (a PING
  // may be waiting in the link frames already).
  const std::size_t bytes = wire::frame_bytes(wire::hello_ack_payload_size(ack));
  link_.insert(link_.begin(), bytes, std::byte{0});
  wire::encode_hello_ack(std::span<std::byte>(link_.data(), bytes), ack);
  stats_.frames_sent++;
  output_open_ = true;
}

Result<void, MuxError> Session::accept_hello(const wire::Hello& hello) noexcept {
  RM_ASSERT(!dialer_ && !handshake_complete_ && generation_ == 0);
  const replay::HelloAnswer answer = replay::answer_hello(hello, nullptr, features());
  if (answer.verdict != replay::HelloVerdict::accept_new) {
    fail(error_of(answer.error));
    return Err{failed_};
  }
  accept_new(hello, answer.ack);
  return {};
}

// ---- resume ----------------------------------------------------------------------------

void Session::on_transport_lost() noexcept {
  RM_ASSERT(options_.resumable);
  if (failed()) return;
  // What belonged to that connection goes: a partly received frame (the peer sends it again
  // from our receive position), link frames not sent, the handshake. Streams, the batch
  // being built, the held batches and both positions stay.
  decoder_ = wire::Decoder();
  decoder_.set_payload_checksums(payload_checksums_);  // agreed once for the session
  link_.clear();
  link_ack_offset_ = no_ack_offset;
  handshake_complete_ = false;
  output_open_ = false;
  if (dialer_) dial_.on_connection_lost();
  // Everything sent on that connection may have been lost: the next handshake says where
  // the peer stands, and the cursor moves there.
  (void)held_.rewind(held_.acked());
}

void Session::start_resume() noexcept {
  RM_ASSERT(dialer_ && options_.resumable && !handshake_complete_ && !failed());
  // Only the HELLO goes out until the HELLO_ACK says where the peer stands: new bytes
  // sent before the replay would leave a gap at the peer.
  wire::Hello hello = dial_.start_attempt(dial_.resumable() ? receive_position_ : 0);
  hello.route_key = options_.route_key;
  announce_windows(hello);
  if (has_resume_key_ && dial_.resumable()) {
    hello.has_resume_proof = true;
    hello.resume_proof = replay::resume_proof(resume_key_, hello);
  }
  generation_ = hello.generation;
  new_session_handshake_ = (hello.hello_flags & wire::hello_flag_resume) == 0;
  ack_policy_.on_handshake(receive_position_);
  wire::encode_hello(grow(link_, wire::frame_bytes(wire::hello_payload_size(hello))), hello);
  stats_.frames_sent++;
  // Even a retry of a new session waits: the peer may have received bytes of the attempt
  // that broke, and its HELLO_ACK says from where to go on.
  output_open_ = false;
}

replay::HelloAnswer Session::judge_resume(const wire::Hello& hello) const noexcept {
  RM_ASSERT(!dialer_ && options_.resumable);
  // The dialer has our HELLO_ACK once it resumed with RESUME or sent an ACK (it sends one
  // as soon as a new session's HELLO_ACK is in).
  const replay::KnownSession known{generation_, held_.held(), receive_position_,
                                   has_resume_key_ ? &resume_key_ : nullptr, dialer_confirmed_};
  return replay::answer_hello(hello, failed() ? nullptr : &known, features());
}

replay::HelloAnswer Session::answer_resume(const wire::Hello& hello) noexcept {
  replay::HelloAnswer answer = judge_resume(hello);
  if (answer.verdict == replay::HelloVerdict::refuse && scope_of(answer.error) == Scope::session) {
    fail(MuxError::session_lost);
  }
  if (answer.verdict != replay::HelloVerdict::accept_resume) return answer;
  // The caller has dropped the old connection (on_transport_lost); this one takes over.
  RM_ASSERT(!handshake_complete_);
  generation_ = hello.generation;
  new_session_handshake_ = (hello.hello_flags & wire::hello_flag_resume) == 0;
  if (!new_session_handshake_) dialer_confirmed_ = true;
  (void)held_.ack(answer.replay_from);  // checked against held_ by answer_hello
  (void)held_.rewind(answer.replay_from);
  stats_.resumes++;
  stats_.bytes_replayed += held_.bytes_unsent();
  ack_policy_.on_handshake(receive_position_);
  handshake_complete_ = true;
  announce_windows(answer.ack);
  wire::encode_hello_ack(grow(link_, wire::frame_bytes(wire::hello_ack_payload_size(answer.ack))), answer.ack);
  stats_.frames_sent++;
  output_open_ = true;
  return answer;
}

Result<void, MuxError> Session::handle_hello_ack(const Frame& frame) noexcept {
  auto ack = wire::parse_hello_ack(frame);
  if (!ack) return Err{MuxError::protocol_violation};
  auto established = dial_.on_hello_ack(ack.value(), held_.held());
  if (!established) return Err{error_of(established.error())};
  // The peer's receive position acknowledges every byte before it (0 for a new session),
  // and our replay starts there.
  (void)held_.ack(established->replay_from);  // within held_: checked by on_hello_ack
  apply_features(established->features);
  apply_peer_windows(ack->stream_window_bytes, ack->connection_window_bytes);
  if (!output_open_) {
    // A later connection: nothing went out behind the HELLO; replay from the peer's position.
    (void)held_.rewind(established->replay_from);
    stats_.resumes++;
    stats_.bytes_replayed += held_.bytes_unsent();
  }
  handshake_complete_ = true;
  output_open_ = true;
  // A new session's HELLO carries no proof, so the acceptor takes one for this session
  // until it knows that we have its HELLO_ACK (and resume with RESUME from now on): our
  // first ACK tells it, whether or not it has sent us a byte (wire/SPEC.md 8.2).
  if (options_.resumable && new_session_handshake_) queue_ack();
  return {};
}

void Session::queue_ack() noexcept {
  if (failed() || !handshake_complete_) return;
  const std::size_t bytes = wire::frame_bytes(8);
  const uint64_t position = ack_policy_.take();
  if (link_ack_offset_ == no_ack_offset) {
    link_ack_offset_ = link_.size();
    (void)grow(link_, bytes);
    stats_.frames_sent++;
  }
  // One ACK per batch: a later one only moves the position of the one already queued.
  wire::encode_ack(std::span<std::byte>(link_).subspan(link_ack_offset_, bytes), position);
}

Result<void, MuxError> Session::handle(const Frame& frame, uint64_t now_ns) noexcept {
  const StreamId id = frame.header.stream_id;
  switch (frame.header.frame_kind()) {
    case FrameKind::hello:
    case FrameKind::hello_ack:
      return violation(MuxError::protocol_violation, "a second HELLO or HELLO_ACK on a connection");
    case FrameKind::open:
      return handle_open(frame);
    case FrameKind::data:
      return handle_data(frame, now_ns);
    case FrameKind::end: {
      Stream* stream = find(id);
      if (stream == nullptr) return handle_unknown_stream(frame, now_ns);
      auto delivery = stream->machine.on_recv_end();
      if (!delivery) return Err{delivery.error()};
      if (delivery.value() == Delivery::deliver) handler_.on_stream_data(id, stream->binding, {}, true);
      if ((stream = find(id)) != nullptr) finish_if_done(id, *stream);
      return {};
    }
    case FrameKind::reset: {
      auto code = wire::parse_reset(frame);
      if (!code) return damaged();
      // Rapid reset: a peer opening and cancelling in a loop costs us work per stream.
      auto admitted = admit(FloodKind::resets, now_ns);
      if (!admitted) return admitted;
      Stream* stream = find(id);
      if (stream == nullptr) return handle_unknown_stream(frame, now_ns);
      auto reset = stream->machine.on_recv_reset(code.value());
      if (!reset) return Err{reset.error()};
      if (stream->machine.state() == StreamState::reset) finish(id, *stream, stream->machine.reset_error(), {});
      return {};
    }
    case FrameKind::stop: {
      auto code = wire::parse_stop(frame);
      if (!code) return damaged();
      Stream* stream = find(id);
      if (stream == nullptr) return handle_unknown_stream(frame, now_ns);
      const bool was_stopped = stream->machine.stop_received();
      auto stopped = stream->machine.on_recv_stop(code.value());
      if (!stopped) return Err{stopped.error()};
      if (!was_stopped && stream->machine.stop_received()) handler_.on_stream_stopped(id, stream->binding);
      return {};
    }
    case FrameKind::credit: {
      auto increment = wire::parse_credit(frame);
      if (!increment) return damaged();
      auto admitted = admit(FloodKind::credits, now_ns);
      if (!admitted) return admitted;
      if (id == 0) {
        if (!connection_send_.add(increment.value())) {
          return violation(MuxError::flow_control, "CREDIT beyond 2^31-1 bytes on the connection");
        }
        notify_writable();
        return {};
      }
      Stream* stream = find(id);
      if (stream == nullptr) return handle_unknown_stream(frame, now_ns);
      if (!stream->send_credit.add(increment.value())) {
        return violation(MuxError::flow_control, "CREDIT beyond 2^31-1 bytes on stream " + std::to_string(id));
      }
      credit_arrived(*stream);
      notify_writable();
      return {};
    }
    case FrameKind::ping: {
      auto opaque = wire::parse_ping(frame);
      if (!opaque) return damaged();
      auto admitted = admit(FloodKind::pings, now_ns);
      if (!admitted) return admitted;
      auto queued = queue_control(wire::frame_bytes(8), true);
      if (!queued) return queued;
      wire::encode_pong(grow(link_, wire::frame_bytes(8)), opaque.value());
      stats_.frames_sent++;
      return {};
    }
    case FrameKind::pong: {
      auto opaque = wire::parse_ping(frame);
      if (!opaque) return damaged();
      auto admitted = admit(FloodKind::pings, now_ns);
      if (!admitted) return admitted;
      handler_.on_pong(opaque.value());
      return {};
    }
    case FrameKind::ack: {
      auto position = wire::parse_ack(frame);
      if (!position) return damaged();
      // The peer cannot have received bytes we never handed out.
      if (!held_.ack(position.value())) return Err{MuxError::ack_beyond_sent};
      // The dialer sends ACKs only once it has our HELLO_ACK: it resumes with a proof now.
      if (!dialer_) dialer_confirmed_ = true;
      // Released batches may let a held-back batch go: the glue flushes after receive().
      return {};
    }
    case FrameKind::goaway: {
      auto goaway = wire::parse_goaway(frame);
      if (!goaway) return damaged();
      auto admitted = admit(FloodKind::goaways, now_ns);
      if (!admitted) return admitted;
      goaway_received_ = true;
      peer_last_stream_id_ = goaway->last_stream_id;
      handler_.on_goaway(goaway->last_stream_id, goaway->code);
      // Streams we opened past the peer's last one were never served: refuse them.
      std::vector<StreamId> unserved;
      streams_.for_each([&](StreamId stream_id, Stream&) {
        if (is_local(stream_id) && stream_id > goaway->last_stream_id) unserved.push_back(stream_id);
      });
      for (const StreamId stream_id : unserved) {
        Stream* stream = find(stream_id);
        if (stream == nullptr) continue;
        stream->machine.send_reset(MuxError::refused);
        RM_ASSERT(stream->machine.done());
        finish(stream_id, *stream, MuxError::refused, {});
      }
      return {};
    }
    case FrameKind::error: {
      auto error = wire::parse_error(frame);
      if (!error) return damaged();
      if (id == 0) {
        // The peer reports a connection error: its message says why, for our logs.
        return violation(MuxError::peer_error, "peer: " + std::string(error->message));
      }
      // A stream-scoped ERROR ends a stream like a RESET: the same rapid-reset limit.
      auto admitted = admit(FloodKind::resets, now_ns);
      if (!admitted) return admitted;
      Stream* stream = find(id);
      if (stream == nullptr) return handle_unknown_stream(frame, now_ns);
      // A stream-scoped ERROR ends the stream like a RESET with its status.
      auto reset = stream->machine.on_recv_reset(error->status);
      if (!reset) return Err{reset.error()};
      if (stream->machine.state() == StreamState::reset) {
        finish(id, *stream, stream->machine.reset_error(), error->message);
      }
      return {};
    }
  }
  return Err{MuxError::protocol_violation};
}

Result<void, MuxError> Session::queue_control(std::size_t frame_bytes, bool link) noexcept {
  RM_ASSERT(frame_bytes <= control_frame_bytes_max);
  // A peer that makes us queue answers faster than it lets us send them is cut off here.
  // What counts is what is queued unsent: both counts fall to 0 as their frames go out.
  if (control_frames_ + link_frames_ >= options_.control_frames_queued_max) {
    stats_.floods++;
    return violation(MuxError::flood, "flood: over " + std::to_string(options_.control_frames_queued_max) +
                                          " control frames queued unsent (the peer does not read)");
  }
  (link ? link_frames_ : control_frames_)++;
  return {};
}

Result<void, MuxError> Session::account_received(Stream* stream, std::size_t bytes) noexcept {
  if (!connection_recv_.on_received(bytes)) return violation(MuxError::flow_control, "data beyond the connection's credit");
  if (stream != nullptr && !stream->recv_window.on_received(bytes)) {
    return violation(MuxError::flow_control, "data beyond the stream's credit");
  }
  return {};
}

void Session::credit_connection(std::size_t bytes, uint64_t now_ns) noexcept {
  if (bytes == 0 || failed()) return;
  const uint32_t increment = connection_recv_.on_consumed(bytes, now_ns, rtt_ns_);
  if (increment == 0) return;
  if (!queue_control(wire::frame_bytes(4))) return;  // flooded: the session fails elsewhere
  wire::encode_credit(grow(control_, wire::frame_bytes(4)), 0, increment);
}

Result<void, MuxError> Session::handle_open(const Frame& frame) noexcept {
  const StreamId id = frame.header.stream_id;
  // The peer opens only ids of its own parity, each higher than the last.
  if (is_local(id)) return violation(MuxError::protocol_violation, "OPEN with a stream id of our parity");
  if (id <= last_peer_id_) return violation(MuxError::protocol_violation, "OPEN with a stream id not above the last");
  // A peer that said GOAWAY opens no new streams (SPEC §4).
  if (goaway_received_) return violation(MuxError::protocol_violation, "OPEN after the peer's own GOAWAY");
  auto open = wire::parse_open(frame);
  if (!open) return damaged();  // not received: a resume replays it
  last_peer_id_ = id;
  if (open->payload.size() > options_.stream_window_bytes) {
    return violation(MuxError::flow_control, "OPEN payload above the stream window");
  }
  if (goaway_sent_ || peer_streams_open_ >= options_.streams_concurrent_max) {
    // Refused before any state exists: the payload is dropped and credited, and the
    // peer learns it may retry (nothing was processed).
    stats_.streams_refused++;
    if (!connection_recv_.on_received(open->payload.size())) return Err{MuxError::flow_control};
    credit_connection(open->payload.size(), 0);
    auto queued = queue_control(wire::frame_bytes(4));
    if (!queued) return queued;
    wire::encode_reset(grow(control_, wire::frame_bytes(4)), id, StatusCode::refused_stream);
    return {};
  }
  Stream& stream =
      streams_.emplace(id, id, peer_stream_window_, options_.stream_window_bytes, options_.stream_window_bytes_max);
  shared_seen_ |= streams_.size() > 1;
  auto accounted = account_received(&stream, open->payload.size());
  if (!accounted) return accounted;
  auto opened = stream.machine.on_recv_open(frame.header.end_stream());
  RM_ASSERT(opened.ok());
  peer_streams_open_++;
  stats_.streams_opened_remote++;
  handler_.on_stream_opened(id, stream.binding, open->handler_id, open->deadline_budget_ns, open->payload,
                            frame.header.end_stream());
  if (Stream* again = find(id)) finish_if_done(id, *again);
  return {};
}

Result<void, MuxError> Session::handle_data(const Frame& frame, uint64_t now_ns) noexcept {
  const StreamId id = frame.header.stream_id;
  Stream* stream = find(id);
  if (stream == nullptr) return handle_unknown_stream(frame, now_ns);
  const std::size_t bytes = frame.payload.size();
  if (bytes == 0 && !frame.header.end_stream()) {
    // Delivers nothing, and our writer never sends one: cheap to send, a lookup to handle.
    auto admitted = admit(FloodKind::empty_data, now_ns);
    if (!admitted) return admitted;
  }
  auto accounted = account_received(stream, bytes);
  if (!accounted) return accounted;
  auto delivery = stream->machine.on_recv_data(frame.header.end_stream());
  if (!delivery) return Err{delivery.error()};
  if (delivery.value() == Delivery::discard) {
    // We stopped reading or reset the stream: drop the bytes, hand their credit back.
    stats_.bytes_discarded += bytes;
    (void)stream->recv_window.on_consumed(bytes, now_ns, rtt_ns_);
    credit_connection(bytes, now_ns);
  } else {
    handler_.on_stream_data(id, stream->binding, frame.payload, frame.header.end_stream());
  }
  if ((stream = find(id)) != nullptr) finish_if_done(id, *stream);
  return {};
}

Result<void, MuxError> Session::handle_unknown_stream(const Frame& frame, uint64_t now_ns) noexcept {
  const StreamId id = frame.header.stream_id;
  // A stream that existed and is gone (closed, reset, refused): frames still in flight
  // from the peer are expected. Data is credited back so the connection window does not
  // shrink. A stream that never existed is a violation.
  const bool existed = is_local(id) ? id < next_local_id_ : id <= last_peer_id_;
  if (!existed) {
    return violation(MuxError::protocol_violation, "a frame on stream " + std::to_string(id) + ", which was never opened");
  }
  if (frame.header.frame_kind() == FrameKind::data) {
    if (!connection_recv_.on_received(frame.payload.size())) return Err{MuxError::flow_control};
    stats_.bytes_discarded += frame.payload.size();
    credit_connection(frame.payload.size(), now_ns);
  }
  return {};
}

void Session::finish_if_done(StreamId id, Stream& stream) noexcept {
  if (!stream.machine.done()) return;
  // A stream reset ends through finish() where it is reset; one done here closed cleanly.
  RM_ASSERT(stream.machine.state() == StreamState::closed);
  finish(id, stream, MuxError::none, {});
}

void Session::finish(StreamId id, Stream& stream, MuxError error, std::string_view message) noexcept {
  RM_ASSERT(stream.machine.done());
  RM_ASSERT((error == MuxError::none) == (stream.machine.state() == StreamState::closed));
  if (!is_local(id)) {
    RM_ASSERT(peer_streams_open_ > 0);
    peer_streams_open_--;
  }
  StreamBinding binding = std::move(stream.binding);
  forget_writable(stream);
  streams_.erase(id);  // `stream` is gone
  handler_.on_stream_finished(id, binding, error, message);
}

}  // namespace ringmux::mux
