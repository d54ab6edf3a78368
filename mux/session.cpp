#include "mux/session.h"

#include <algorithm>
#include <cstring>

#include "engine/assert.h"

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

Session::Session(SessionHandler& handler, const SessionOptions& options)
    : handler_(handler),
      options_(options),
      dialer_(options.dialer),
      next_local_id_(options.dialer ? 1 : 2),
      connection_send_(limits::connection_window_bytes_min),
      connection_recv_(options.connection_window_bytes, options.connection_window_bytes),
      flood_(options.flood),
      dial_(options.session_id),
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
    for (auto& [id, stream] : streams_) {
      if (is_local(id)) (void)stream.send_credit.add(stream_extra);
    }
  }
  (void)connection_send_.add(connection_bytes - limits::connection_window_bytes_min);
  notify_writable();
}

Session::Stream* Session::find(StreamId id) noexcept {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : &it->second;
}

uint64_t Session::stream_buffered(StreamId id) const noexcept {
  auto it = streams_.find(id);
  return it == streams_.end() ? 0 : it->second.recv_window.buffered();
}

std::span<std::byte> Session::grow(ByteVector& buffer, std::size_t bytes) noexcept {
  const std::size_t old_size = buffer.size();
  buffer.resize(old_size + bytes);
  return {buffer.data() + old_size, bytes};
}

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
  const replay::HelloAnswer answer = replay::answer_hello(hello.value(), nullptr);
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
  handshake_complete_ = true;
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
  const replay::HelloAnswer answer = replay::answer_hello(hello, nullptr);
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
  generation_ = hello.generation;
  ack_policy_.on_handshake(receive_position_);
  wire::encode_hello(grow(link_, wire::frame_bytes(wire::hello_payload_size(hello))), hello);
  stats_.frames_sent++;
  // Even a retry of a new session waits: the peer may have received bytes of the attempt
  // that broke, and its HELLO_ACK says from where to go on.
  output_open_ = false;
}

replay::HelloAnswer Session::answer_resume(const wire::Hello& hello) noexcept {
  RM_ASSERT(!dialer_ && options_.resumable);
  const replay::KnownSession known{generation_, held_.held(), receive_position_};
  replay::HelloAnswer answer = replay::answer_hello(hello, failed() ? nullptr : &known);
  if (answer.verdict == replay::HelloVerdict::refuse && scope_of(answer.error) == Scope::session) {
    fail(MuxError::session_lost);
  }
  if (answer.verdict != replay::HelloVerdict::accept_resume) return answer;
  // The caller has dropped the old connection (on_transport_lost); this one takes over.
  RM_ASSERT(!handshake_complete_);
  generation_ = hello.generation;
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
  apply_peer_windows(ack->stream_window_bytes, ack->connection_window_bytes);
  if (!output_open_) {
    // A later connection: nothing went out behind the HELLO; replay from the peer's position.
    (void)held_.rewind(established->replay_from);
    stats_.resumes++;
    stats_.bytes_replayed += held_.bytes_unsent();
  }
  handshake_complete_ = true;
  output_open_ = true;
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
      if (delivery.value() == Delivery::deliver) handler_.on_stream_data(id, {}, true);
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
      if (stream->machine.state() == StreamState::reset) {
        handler_.on_stream_reset(id, stream->machine.reset_error(), {});
        if ((stream = find(id)) != nullptr) finish_if_done(id, *stream);
      }
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
      if (!was_stopped && stream->machine.stop_received()) handler_.on_stream_stopped(id);
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
      for (auto& [stream_id, stream] : streams_) {
        if (is_local(stream_id) && stream_id > goaway->last_stream_id) unserved.push_back(stream_id);
      }
      for (const StreamId stream_id : unserved) {
        Stream* stream = find(stream_id);
        if (stream == nullptr) continue;
        stream->machine.send_reset(MuxError::refused);
        handler_.on_stream_reset(stream_id, MuxError::refused, {});
        if ((stream = find(stream_id)) != nullptr) finish_if_done(stream_id, *stream);
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
        handler_.on_stream_reset(id, stream->machine.reset_error(), error->message);
        if ((stream = find(id)) != nullptr) finish_if_done(id, *stream);
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
  auto [it, inserted] =
      streams_.try_emplace(id, peer_stream_window_, options_.stream_window_bytes, options_.stream_window_bytes_max);
  RM_ASSERT(inserted);
  shared_seen_ |= streams_.size() > 1;
  Stream& stream = it->second;
  auto accounted = account_received(&stream, open->payload.size());
  if (!accounted) return accounted;
  auto opened = stream.machine.on_recv_open(frame.header.end_stream());
  RM_ASSERT(opened.ok());
  peer_streams_open_++;
  stats_.streams_opened_remote++;
  handler_.on_stream_opened(id, open->handler_id, open->deadline_budget_ns, open->payload, frame.header.end_stream());
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
    handler_.on_stream_data(id, frame.payload, frame.header.end_stream());
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
  const bool closed_cleanly = stream.machine.state() == StreamState::closed;
  if (!is_local(id)) {
    RM_ASSERT(peer_streams_open_ > 0);
    peer_streams_open_--;
  }
  streams_.erase(id);
  if (closed_cleanly) handler_.on_stream_closed(id);
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
  auto [it, inserted] =
      streams_.try_emplace(id, peer_stream_window_, options_.stream_window_bytes, options_.stream_window_bytes_max);
  RM_ASSERT(inserted);
  shared_seen_ |= streams_.size() > 1;
  Stream& stream = it->second;
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
                    end_now ? wire::flag_end_stream : 0, handler_id, deadline_budget_ns, payload);
  stats_.frames_sent++;
  stats_.streams_opened_local++;
  if (cut_short) {
    // Cut short by credit: on_stream_writable() follows when more can go.
    stream.wants_writable = true;
    writable_waiters_.push_back(id);
  }
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
                       last && end_stream ? wire::flag_end_stream : 0, id, payload.first(chunk));
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
  const std::size_t batch_room =
      data_.size() < limits::send_batch_bytes_target ? limits::send_batch_bytes_target - data_.size() : 0;
  // A stream's turn in a batch is bounded while other streams write too (round robin: a
  // small frame of theirs waits behind at most one turn of each); a stream that writes
  // alone may fill the batch: one send per batch target (W3, and W5's bulk stream beside
  // a call that waits for its answer). Other streams' head-of-line delay in the kernel's
  // queues is bounded by the shared window cap (consume()).
  const bool others_writing = batch_writers_ > (stream->batch_bytes > 0 ? 1u : 0u) ||
                              writable_waiters_.size() > (stream->wants_writable ? 1u : 0u);
  const std::size_t turn_max = others_writing ? limits::stream_batch_bytes_max : limits::send_batch_bytes_target;
  const std::size_t turn_room = std::min(batch_room, turn_max - std::min<std::size_t>(stream->batch_bytes, turn_max));
  const std::size_t take = std::min({bytes.size(), static_cast<std::size_t>(stream->send_credit.available()),
                                     static_cast<std::size_t>(connection_send_.available()), turn_room, batch_room});
  const bool end_now = end_stream && take == bytes.size();
  if (take == 0 && !end_now) {
    if (!stream->wants_writable) {
      stream->wants_writable = true;
      writable_waiters_.push_back(id);
    }
    return std::size_t{0};
  }
  if (take > 0 && stream->batch_bytes == 0) batch_writers_++;
  append_data(id, bytes.first(take), end_now);
  if (take > 0) stream->served_batch = batch_number_;
  stream->send_credit.consume(take);
  connection_send_.consume(take);
  stream->batch_bytes += static_cast<uint32_t>(take);
  auto sent = stream->machine.send_data(end_now);
  RM_ASSERT(sent.ok());
  if (take < bytes.size() && !stream->wants_writable) {
    stream->wants_writable = true;
    writable_waiters_.push_back(id);
  }
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
  if (stream == nullptr || failed()) return;
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
  handler_.on_stream_reset(id, reason, {});
  if ((stream = find(id)) != nullptr) finish_if_done(id, *stream);
}

void Session::stop(StreamId id) noexcept {
  Stream* stream = find(id);
  if (stream == nullptr || failed()) return;
  if (stream->machine.send_stop() && queue_control(wire::frame_bytes(4))) {
    wire::encode_stop(grow(control_for(*stream), wire::frame_bytes(4)), id, StatusCode::stream_stopped);
    stats_.frames_sent++;
  }
}

void Session::consume(StreamId id, std::size_t bytes, uint64_t now_ns) noexcept {
  // The connection's credit comes back whatever became of the stream: every delivered
  // byte is consumed exactly once, even after its stream ended.
  credit_connection(bytes, now_ns);
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
  auto it = streams_.find(id);
  if (it == streams_.end()) return false;
  const StreamState state = it->second.machine.state();
  return state == StreamState::open || state == StreamState::remote_closed;
}

void Session::trim() noexcept {
  held_.release_spares();
  decoder_.trim();
  if (control_.empty()) ByteVector().swap(control_);
  if (data_.empty()) ByteVector().swap(data_);
  if (link_.empty()) ByteVector().swap(link_);
}

void Session::fail(MuxError error, std::string message) noexcept {
  if (failed()) return;
  if (!message.empty() && failure_message_.empty()) failure_message_ = std::move(message);
  failed_ = error;
  // Every stream ends with the connection's error; the handler may not touch the session
  // for these streams afterwards.
  std::vector<StreamId> ids;
  ids.reserve(streams_.size());
  for (auto& entry : streams_) ids.push_back(entry.first);
  for (const StreamId id : ids) {
    streams_.erase(id);
    handler_.on_stream_reset(id, error, {});
  }
  peer_streams_open_ = 0;
  control_.clear();
  data_.clear();
  link_.clear();
  link_ack_offset_ = no_ack_offset;
  writable_waiters_.clear();
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
  // Not re-entered from a handler's callback: the scratch list is in use, and waiters
  // left in writable_waiters_ are handled by the next call.
  if (notifying_ || writable_waiters_.empty() || failed()) return;
  notifying_ = true;
  const bool batch_has_room = data_.size() < limits::send_batch_bytes_target;
  // The scratch list keeps its capacity across batches: no allocation per batch.
  std::vector<StreamId>& waiters = writable_scratch_;
  waiters.clear();
  waiters.swap(writable_waiters_);
  // Round robin: the streams served longest ago go first, so that the ones that just
  // filled a batch queue behind those that got nothing (W4 fairness).
  std::stable_sort(waiters.begin(), waiters.end(), [this](StreamId a, StreamId b) {
    const Stream* sa = find(a);
    const Stream* sb = find(b);
    const uint64_t served_a = sa != nullptr ? sa->served_batch : 0;
    const uint64_t served_b = sb != nullptr ? sb->served_batch : 0;
    return served_a < served_b;
  });
  for (std::size_t i = 0; i < waiters.size(); i++) {
    const StreamId id = waiters[i];
    Stream* stream = find(id);
    if (stream == nullptr || !stream->wants_writable) continue;
    const bool stream_has_room =
        stream->batch_number != batch_number_ || stream->batch_bytes < limits::stream_batch_bytes_max;
    if (!batch_has_room || !stream_has_room || stream->send_credit.available() == 0 ||
        connection_send_.available() == 0) {
      writable_waiters_.push_back(id);  // still blocked: a later CREDIT or batch wakes it
      continue;
    }
    stream->wants_writable = false;
    handler_.on_stream_writable(id);  // may write, and may add itself back as a waiter
  }
  notifying_ = false;
}

}  // namespace ringmux::mux
