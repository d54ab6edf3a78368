// Session: the multiplexing state machine of one session, sans I/O.
//
// Bytes in (receive), events out (SessionHandler callbacks), bytes out (take_output()).
// The session owns its streams: their state machines, their flow-control windows, and the
// table that maps stream ids to them. It never touches a socket and never reads a clock:
// the glue (mux/link/connection.h) feeds it bytes and time.
//
// Writer: frames are appended to the batch being built; control frames (CREDIT, RESET,
// STOP, GOAWAY, small OPENs) ahead of data; data is accepted per stream up to its credit,
// the connection's credit, one turn per batch while others write (round robin over an
// intrusive queue of waiting writers: O(1) per turn at any number of streams; a turn is
// stream_batch_bytes_max while few wait, down to stream_turn_bytes_min while many do)
// and the batch target, cut into chunks of data_chunk_bytes. When no send is in flight the
// glue takes the output: the batch moves into the held batches (replay/held.h: the send
// queue and the replay store at once) and goes out in one gather send behind the link
// frames (HELLO, HELLO_ACK, PING, PONG, ACK), which belong to one connection only.
//
// Handshake (wire/SPEC.md §1): the dialer's first output is HELLO (a new session: the
// caller's random id, generation 1, receive position 0), and frames the application queues
// go right behind it, without waiting for the answer. The acceptor's first output is its
// HELLO_ACK: until a HELLO has arrived only link frames go out and whatever the application
// queued waits, so that the HELLO_ACK goes out first. Received, any frame before the
// peer's HELLO (acceptor) or HELLO_ACK (dialer) is a protocol violation.
//
// Positions (wire/SPEC.md §8): every frame of the position space counts its bytes, header
// and payload; link frames are outside it. send_position() is the tail of the held batches;
// receive_position() what receive() has taken in. ACKs go out under replay::AckPolicy: one
// per send at most, piggy-backed on any send while bytes are unacknowledged, or queued on
// their own every ack_interval_bytes. A peer's ACK releases held batches.
// Invariant: peer_acked_position() <= send_position(); at most one ACK in the unsent link
// frames.
//
// Resume (options.resumable): when the transport breaks the glue calls on_transport_lost();
// streams, the batch being built and the held batches stay. On the next connection the
// dialer's HELLO resumes (start_resume) and the acceptor answers it (answer_resume); each
// side then replays its held batches from the other's receive position, so the peer sees
// every position-space byte once and in order.
//
// Errors: receive() returns a connection-scoped error when the peer breaks the protocol and
// leaves the session failed (or session_lost when a handshake refuses the session). With
// resume on, wire errors (damaged bytes) and ACKs beyond what was sent end only the
// transport: the session stays usable for the next connection. Stream-scoped errors end one
// stream (reported through on_stream_reset) and never fail the session.
// Threads: one (the connection's loop).
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ringmux/base/intrusive_queue.h"
#include "ringmux/base/limits.h"
#include "ringmux/base/memory.h"
#include "ringmux/base/result.h"
#include "ringmux/mux/session/errors.h"
#include "ringmux/mux/session/flood.h"
#include "ringmux/mux/session/flow.h"
#include "ringmux/mux/session/observer.h"
#include "ringmux/mux/session/stream_state.h"
#include "ringmux/mux/session/stream_table.h"
#include "ringmux/replay/handshake.h"
#include "ringmux/replay/held.h"
#include "ringmux/replay/receive.h"
#include "ringmux/wire/codec.h"

namespace ringmux::mux {

using StreamId = uint32_t;

struct SessionOptions {
  bool dialer = true;  // the dialing side opens odd stream ids, the accepting side even
  // The transport authenticates every byte (TLS): offer, or accept, to leave payload
  // checksums unchecked (wire feature_unchecked_payloads, SPEC §4.1).
  bool authenticated_transport = false;
  // The dialing side's session id, 128 random bits from the caller's random source (the
  // session never draws randomness). Ignored by the accepting side, which takes the HELLO's.
  wire::SessionId session_id{};
  // The dialing side's HELLO route key (wire/SPEC.md §4.1): an accepting node with several
  // loops hands the session to the loop it names (cluster/node.h). 0: none.
  uint64_t route_key = 0;
  // Keys the stream table's hash (mux/session/stream_table.h): random bits from the
  // caller, so that a peer cannot choose stream ids that collide. 0 works, predictably.
  uint64_t table_secret = 0;
  // Resume (mux/link/connection.h drives it): a connection-scoped error ends only the transport,
  // not the session, which keeps its streams and held batches for the next connection.
  // Off: every connection-scoped error fails the session (no one would resume it).
  bool resumable = false;
  uint64_t replay_bytes_max = limits::replay_bytes_max;  // held batches (replay/held.h)
  uint32_t streams_concurrent_max = limits::streams_concurrent_max;
  // Our receive windows, announced in the handshake (SPEC §4.1): at least
  // limits::stream_window_bytes_min / connection_window_bytes_min.
  uint32_t stream_window_bytes = limits::stream_window_bytes_initial;
  uint32_t stream_window_bytes_max = limits::stream_window_bytes_max;
  uint32_t stream_window_bytes_shared_max = limits::stream_window_bytes_shared_max;  // others open
  uint32_t connection_window_bytes = limits::connection_window_bytes_initial;
  uint32_t control_frames_queued_max = limits::control_frames_queued_max;  // queued unsent
  // The handler delivers on_stream_writable() later, not inside the call (the link does,
  // when its entry point returns): the session then wakes only as many writers as their
  // credit can fill the batch with, and the handler calls writers_ran() once the woken
  // writers have written. Off: the handler writes inside the call, and the session wakes
  // writers until the batch is full.
  bool writable_deferred = false;
  FloodLimits flood;  // cheap-to-send, costly-to-handle frames (mux/session/flood.h)
};

// The layer above's part of a stream, kept in the session's stream table (one table, one
// lookup per frame): the observer that hears the stream's events, and the link's timer
// and the open payload its credit could not carry yet. The session stores it, hands it to
// the handler with every stream event and moves it out when the stream ends; it never
// reads it.
struct StreamBinding {
  StreamObserver* observer = nullptr;
  bool owned = false;         // the layer above deletes the observer when the stream ends
  bool open_rest_end = false; // END follows open_rest
  uint32_t timer = 0;         // the link's timer of this stream (0: none)
  uint64_t deadline_ns = 0;   // reset with deadline_exceeded then (0: none)
  uint64_t stop_close_ns = 0; // reset with stream_stopped then (0: not stopped)
  ByteVector open_rest;       // what the OPEN could not carry; goes ahead of later writes
};

// Events of a session, on its thread. Spans are valid only during the call. Every stream
// event carries the stream's binding (valid during the call only).
class SessionHandler {
 public:
  // The peer opened stream `id` for `handler_id`; `deadline_budget_ns` 0 = none.
  virtual void on_stream_opened(StreamId id, StreamBinding& binding, uint32_t handler_id, uint64_t deadline_budget_ns,
                                std::span<const std::byte> payload, bool end_stream) noexcept = 0;
  // Payload on a stream; `end_stream` when the peer has ended its side with it.
  virtual void on_stream_data(StreamId id, StreamBinding& binding, std::span<const std::byte> payload,
                              bool end_stream) noexcept = 0;
  // The stream is over and has left the table (`binding` was moved out of it): `error`
  // none when both sides ended it cleanly; else the peer's RESET or ERROR (with its
  // message, else empty), a refusal, a local reset, or the session's failure. Exactly once
  // per stream; no more events for `id` follow.
  virtual void on_stream_finished(StreamId id, StreamBinding& binding, MuxError error,
                                  std::string_view message) noexcept = 0;
  // A write that was cut short can go on: credit or batch room came back.
  virtual void on_stream_writable(StreamId id) noexcept = 0;
  // The peer sent STOP: writes on `id` now fail with stream_stopped.
  virtual void on_stream_stopped(StreamId id, StreamBinding& binding) noexcept = 0;
  // The peer is going away: streams above `last_stream_id` that we opened were not served.
  virtual void on_goaway(uint32_t last_stream_id, wire::StatusCode code) noexcept = 0;
  // A PONG answered our PING with `opaque`.
  virtual void on_pong(uint64_t opaque) noexcept = 0;

 protected:
  ~SessionHandler() = default;
};

struct SessionStats {
  uint64_t frames_received = 0;
  uint64_t frames_sent = 0;
  uint64_t streams_opened_local = 0;
  uint64_t streams_opened_remote = 0;
  uint64_t streams_refused = 0;
  uint64_t bytes_discarded = 0;  // data dropped for reset or stopped streams (credited)
  uint64_t batches = 0;
  uint64_t resumes = 0;         // handshakes that resumed the session on a new connection
  uint64_t bytes_replayed = 0;  // held bytes sent again after those resumes
  uint64_t writable_steps = 0;  // streams the writable queue looked at (the scheduler's work)
  uint64_t floods = 0;          // flood limits the peer hit (each fails the session)
  // Writes cut short by flow control: the stream's or the connection's credit was used up
  // (not the writer's turn or a full batch). The writer waits for the peer's CREDIT.
  uint64_t flow_control_stalls = 0;
};

class Session {
 public:
  Session(SessionHandler& handler, const SessionOptions& options = {});
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // ---- bytes in ----
  // Decodes and handles every frame in `bytes`. A connection-scoped error (WireError
  // mapped to protocol_violation, or a MuxError) fails the session: every stream is
  // reported reset with it, and every later call is refused.
  Result<void, MuxError> receive(std::span<const std::byte> bytes, uint64_t now_ns) noexcept;

  // ---- streams ----
  // Opens a stream for `handler_id` with an initial payload (which must fit the initial
  // window: it is sent whole). Errors: refused (over our own concurrency limit or after a
  // GOAWAY), stream_closed (session failed).
  Result<StreamId, MuxError> open(uint32_t handler_id, uint64_t deadline_budget_ns, std::span<const std::byte> payload,
                                  bool end_stream) noexcept;
  // Opens a stream with as much of `payload` as the credit allows now (the peer's initial
  // window, the connection's credit: other streams may hold all of it), and `end_stream`
  // only if all of it went. The rest is the caller's to write() when on_stream_writable()
  // comes, as for any write cut short. Errors: refused (over our concurrency limit or
  // after a GOAWAY), stream_closed (session failed).
  struct Opened {
    StreamId id;
    std::size_t taken;  // bytes of `payload` sent with the OPEN
  };
  Result<Opened, MuxError> open_some(uint32_t handler_id, uint64_t deadline_budget_ns, std::span<const std::byte> payload,
                                     bool end_stream) noexcept;
  // Writes up to bytes.size() of payload; returns how many were taken (copied into the
  // batch). A stream's share of one batch is its turn (turn_bytes()) while other streams
  // write too (round robin), else the whole batch target. Fewer than asked:
  // on_stream_writable() follows when more can go. `end_stream`
  // applies only if every byte was taken. Errors: stream_closed, stream_stopped, the reset
  // reason (cancelled, ...), of the stream.
  Result<std::size_t, MuxError> write(StreamId id, std::span<const std::byte> bytes, bool end_stream) noexcept;
  // Half-closes our side. Errors as write().
  Result<void, MuxError> end(StreamId id) noexcept;
  // Aborts the stream both ways (RESET with the status of `reason`; an ERROR frame
  // carrying `message` when one is given). No-op when done.
  void reset(StreamId id, MuxError reason, std::string_view message = {}) noexcept;
  // Tells the peer to stop sending (STOP); later data is discarded and credited.
  void stop(StreamId id) noexcept;
  // The application is done with `bytes` of delivered payload: credit goes back.
  void consume(StreamId id, std::size_t bytes, uint64_t now_ns) noexcept {
    consume(id, bytes, bytes, now_ns);
  }
  // The same with the stream's and the connection's credit apart: a consumer may credit
  // its stream ahead of what it released, and the connection only once released, so that
  // the connection window still bounds what all streams hold. Each delivered byte must
  // reach both counts exactly once in the end.
  void consume(StreamId id, std::size_t stream_bytes, std::size_t connection_bytes, uint64_t now_ns) noexcept;

  // ---- connection ----
  void ping(uint64_t opaque) noexcept;
  // Refuses new streams from the peer above the last one seen, and tells it so.
  void goaway(wire::StatusCode code) noexcept;
  // Round-trip estimate for window growth (set by the glue from PING/PONG).
  void set_rtt_ns(uint64_t rtt_ns) noexcept { rtt_ns_ = rtt_ns; }
  uint64_t rtt_ns() const noexcept { return rtt_ns_; }

  // ---- bytes out ----
  // Whether take_output() has something: link frames, held bytes not sent on this
  // connection (a replay), or a new batch that fits the replay bound. Position-space output
  // waits for the handshake (the acceptor's until the HELLO is answered, the dialer's after
  // a resume until the HELLO_ACK), and a batch waits for ACKs while the held batches are full.
  bool has_output() const noexcept;
  // What goes out next, in one gather send: `link` (the glue's spare buffer, empty; swapped
  // with the session's link frames: HELLO, HELLO_ACK, PING, PONG, ACK, which belong to this
  // connection and are never replayed) first, then `held` (spans of the held batches from
  // the send cursor, valid until the peer acknowledges them). When the cursor is at the
  // tail, the batch being built becomes held first (moved, not copied: replay/held.h) and
  // streams cut short by it are told on_stream_writable(). An ACK rides along when received
  // bytes are unacknowledged.
  void take_output(ByteVector& link, replay::HeldSpans& held) noexcept;

  // ---- resume (options.resumable) ----
  // The transport broke: forgets what belonged to it (a partly received frame, unsent link
  // frames, the handshake) and keeps streams, the batch being built, the held batches and
  // both positions. No output until the next handshake. No-op once failed.
  void on_transport_lost() noexcept;
  // Dialer, a new connection is up: queues its HELLO (RESUME with our receive position once
  // the session was established), the only output until the HELLO_ACK, which rewinds the
  // held batches to the peer's position. A refusing HELLO_ACK fails the session with
  // session_lost (session-scoped refusals) or ends this connection only.
  void start_resume() noexcept;
  // Acceptor, a HELLO for this session arrived on a new connection (mux/link/acceptor.h read it):
  // the answer to send. accept_resume: the HELLO_ACK is queued and the held batches replay
  // from the dialer's position. refuse with a session-scoped error: the session fails with
  // session_lost (the caller sends answer.ack and closes). ignore: a superseded generation.
  replay::HelloAnswer answer_resume(const wire::Hello& hello) noexcept;
  // The verdict answer_resume would give, with no effect (replay/ decides it).
  replay::HelloAnswer judge_resume(const wire::Hello& hello) const noexcept;
  // The session's resume key (wire/SPEC.md §8.2), once both sides derived it from the first
  // transport: from now on the dialer's resumes carry its proof and the acceptor refuses
  // those without one (resume_unauthenticated, the session unaffected).
  void set_resume_key(const replay::ResumeKey& key) noexcept {
    resume_key_ = key;
    has_resume_key_ = true;
  }
  bool has_resume_key() const noexcept { return has_resume_key_; }
  // The transport the session binds to has no keying material: resumes prove nothing.
  void clear_resume_key() noexcept {
    resume_key_.fill(std::byte{0});
    has_resume_key_ = false;
  }
  // Whether the handshake that established the current transport was a new-session HELLO
  // (no RESUME): the dialer had never received a HELLO_ACK. The session's resume key is
  // bound to that transport, on both sides (wire/SPEC.md §8.2).
  bool new_session_handshake() const noexcept { return new_session_handshake_; }
  // Accepting side: the dialer has shown that it holds our HELLO_ACK (it resumed with
  // RESUME or sent an ACK), so a keyed session takes no new-session HELLO from now on.
  bool dialer_confirmed() const noexcept { return dialer_confirmed_; }
  // Whether payloads carry and are checked against checksums (false once both sides'
  // transports authenticate every byte and the handshake agreed to drop them).
  bool payload_checksums() const noexcept { return payload_checksums_; }
  // Acceptor, the first HELLO was read ahead by mux/link/acceptor.h: starts the new session as if
  // it had arrived through receive(). Error: the handshake's (the session is failed).
  Result<void, MuxError> accept_hello(const wire::Hello& hello) noexcept;
  const replay::HeldBatches& held() const noexcept { return held_; }
  // When an ACK falls due by the clock alone (bytes received, nothing sent to carry it):
  // replay::AckPolicy::no_deadline_ns when none is pending. The glue arms a timer for it.
  uint64_t ack_deadline_ns() const noexcept { return ack_policy_.deadline_ns(); }
  // That timer fired: queues the ACK when it is due at `now_ns`.
  void on_ack_timer(uint64_t now_ns) noexcept {
    if (ack_policy_.ack_due(now_ns, false)) queue_ack();
  }

  // ---- handshake and positions ----
  // The session's id: the dialer's own, the acceptor's from the HELLO (zero before it).
  const wire::SessionId& session_id() const noexcept { return session_id_; }
  // Connections this session has used, this one included (0 on the acceptor before HELLO).
  uint64_t generation() const noexcept { return generation_; }
  bool dialer() const noexcept { return dialer_; }
  // The peer's HELLO_ACK (dialer) or HELLO (acceptor) was accepted.
  bool handshake_complete() const noexcept { return handshake_complete_; }
  // Position-space bytes handed out by take_batch(): the tail of what was sent.
  uint64_t send_position() const noexcept { return held_.tail(); }
  // Position-space bytes received: every one before it has been handled.
  uint64_t receive_position() const noexcept { return receive_position_; }
  // The highest position the peer acknowledged (ACK, or its handshake's receive position).
  uint64_t peer_acked_position() const noexcept { return held_.acked(); }
  // The receive position carried by our last ACK.
  uint64_t acked_position() const noexcept { return ack_policy_.acked_position(); }

  bool failed() const noexcept { return failed_ != MuxError::none; }
  MuxError failure() const noexcept { return failed_; }
  // Why the peer was cut off, for the ERROR frame that tells it and for logs: the limit or
  // the rule it broke ("flood: RESET/ERROR frames over 10000 per second"); empty when the
  // failure has no more to say than describe(failure()).
  const std::string& failure_message() const noexcept { return failure_message_; }
  // When the first byte of a frame that has not completed yet arrived (0: none is partly
  // received). The glue closes a connection whose frame takes over
  // limits::frame_complete_timeout_ns, however its bytes trickle in.
  uint64_t frame_started_ns() const noexcept { return frame_started_ns_; }
  // The peer's receive windows (its handshake announcement; until then the minimums).
  uint32_t peer_stream_window_bytes() const noexcept { return peer_stream_window_; }
  std::size_t streams_open() const noexcept { return streams_.size(); }
  const SessionStats& stats() const noexcept { return stats_; }
  // Bytes received on `id` and not yet consumed (0 for an unknown stream).
  uint64_t stream_buffered(StreamId id) const noexcept;
  uint64_t connection_buffered() const noexcept { return connection_recv_.buffered(); }
  // Bytes of stream state the session holds (its stream table: every open stream's
  // record, the index, the free list), whatever the streams have buffered.
  std::size_t stream_state_bytes() const noexcept { return streams_.bytes_held(); }

  // Fails the session from outside (transport error, a limit the glue enforces): every
  // stream is reset with `error`; `message` becomes failure_message().
  void fail(MuxError error, std::string message = {}) noexcept;
  // The layer above's part of stream `id` (nullptr for an unknown stream).
  StreamBinding* binding(StreamId id) noexcept {
    Stream* stream = find(id);
    return stream == nullptr ? nullptr : &stream->binding;
  }
  // Whether our side of `id` has neither ended nor reset it (whatever a STOP from the peer
  // says of its writes); false for unknown streams.
  bool local_open(StreamId id) const noexcept;
  // With SessionOptions::writable_deferred: the writers woken so far have written (or had
  // their chance); more are woken if the batch still has room.
  void writers_ran() noexcept {
    promise_round_++;  // every promise made so far is void
    promised_bytes_ = 0;
    notify_writable();
  }
  // Frees buffer capacity an idle session keeps (recycled batches, empty batch buffers):
  // called when the connection has been quiet for a keepalive interval, and on detach.
  void trim() noexcept;
  // Frees the batch buffers kept for reuse that went unused since the last call (a busy
  // session's periodic trim; replay::HeldBatches::decay_spares).
  void decay() noexcept { held_.decay_spares(); }

 private:
  struct Stream {
    StreamMachine machine;
    SendCredit send_credit;
    RecvWindow recv_window;
    uint32_t batch_bytes = 0;  // payload this stream put into the batch of batch_number
    uint64_t batch_number = 0;
    uint64_t open_batch = 0;  // batch holding our OPEN, while unsent: see control_for()
    StreamId id;
    // The stream's writer waits for on_stream_writable(): in writable_ when it has credit
    // of its own (its turn comes round), else until a CREDIT for it arrives.
    bool wants_writable = false;
    QueueLinks<Stream> writable_links;
    // What is left of the turn the queue gave it (deficit round robin: a turn cut short by
    // the batch's end or the connection's credit goes on at the front); 0: no turn.
    uint32_t turn_left = 0;
    // writable_deferred: what the stream may write since it was woken in promise round
    // promise_round (0 once it has written).
    uint32_t promised = 0;
    uint32_t promise_round = 0;
    StreamBinding binding;
    Stream(StreamId stream_id, uint64_t send_bytes, uint32_t window_bytes, uint32_t window_bytes_max)
        : send_credit(send_bytes), recv_window(window_bytes, window_bytes_max), id(stream_id) {}
  };
  using WritableQueue = IntrusiveQueue<Stream, &Stream::writable_links>;

  bool is_local(StreamId id) const noexcept { return (id & 1u) == (dialer_ ? 1u : 0u); }
  Stream* find(StreamId id) noexcept { return streams_.find(id); }
  Result<void, MuxError> handle(const wire::Frame& frame, uint64_t now_ns) noexcept;
  // A payload whose fields do not parse: wire damage (SPEC §2.1 check 9), which ends only
  // the connection of a resumable session. Returns protocol_violation.
  Err<MuxError> damaged() noexcept;
  // Records why the peer is cut off (failure_message()) and returns `error`.
  Err<MuxError> violation(MuxError error, std::string message) noexcept;
  // Counts a frame against its flood limit: a flood error (with its message) when over.
  Result<void, MuxError> admit(FloodKind kind, uint64_t now_ns, uint32_t count = 1) noexcept;
  // The peer's handshake announced its receive windows (0: not announced, the defaults):
  // streams opened before it got credit for the minimums, and get the difference now.
  void apply_peer_windows(uint32_t stream_bytes, uint32_t connection_bytes) noexcept;
  // Our windows, for the HELLO / HELLO_ACK we send.
  void announce_windows(wire::Hello& hello) const noexcept;
  void announce_windows(wire::HelloAck& ack) const noexcept;
  // The first frame from the peer: HELLO (acceptor) or HELLO_ACK (dialer), else a violation.
  Result<void, MuxError> handle_handshake(const wire::Frame& frame) noexcept;
  Result<void, MuxError> handle_hello(const wire::Frame& frame) noexcept;
  Result<void, MuxError> handle_hello_ack(const wire::Frame& frame) noexcept;
  void accept_new(const wire::Hello& hello, const wire::HelloAck& ack) noexcept;
  bool link_open() const noexcept;
  // Queues an ACK of the receive position, or refreshes the one already in the batch.
  void queue_ack() noexcept;
  Result<void, MuxError> handle_open(const wire::Frame& frame) noexcept;
  Result<void, MuxError> handle_data(const wire::Frame& frame, uint64_t now_ns) noexcept;
  Result<void, MuxError> handle_unknown_stream(const wire::Frame& frame, uint64_t now_ns) noexcept;
  Result<void, MuxError> account_received(Stream* stream, std::size_t bytes) noexcept;
  // Counts a control frame about to be queued in control_ (or, `link`, an answer queued in
  // the link frames): a flood error when options.control_frames_queued_max are unsent.
  Result<void, MuxError> queue_control(std::size_t frame_bytes_max, bool link = false) noexcept;
  void credit_connection(std::size_t bytes, uint64_t now_ns) noexcept;
  void finish_if_done(StreamId id, Stream& stream) noexcept;
  // The stream is done: it leaves the table and the handler hears on_stream_finished.
  void finish(StreamId id, Stream& stream, MuxError error, std::string_view message) noexcept;
  // Where a RESET or STOP for `stream` goes: ahead of data as control, unless the
  // stream's own OPEN is still in the unsent batch, which it must not overtake.
  ByteVector& control_for(const Stream& stream) noexcept {
    return stream.open_batch == batch_number_ ? data_ : control_;
  }
  // Bytes the batch being built can still take before its target.
  std::size_t batch_room() const noexcept {
    return data_.size() < limits::send_batch_bytes_target ? limits::send_batch_bytes_target - data_.size() : 0;
  }
  // A stream's turn while others write: the batch shared by the writers waiting, from
  // limits::stream_batch_bytes_max (a few) down to limits::stream_turn_bytes_min (many).
  uint32_t turn_bytes() const noexcept {
    const std::size_t share = limits::send_batch_bytes_target / (writable_.size() + 1);
    return static_cast<uint32_t>(
        std::clamp<std::size_t>(share, limits::stream_turn_bytes_min, limits::stream_batch_bytes_max));
  }
  // Tells waiting writers that can now make progress (credit, batch room) to go on, in
  // turn, until the batch or the connection's credit is full.
  void notify_writable() noexcept;
  // The stream's writer waits for on_stream_writable() (no-op when it already does): at
  // the back of the queue, or at the front when it was woken for a turn it did not get.
  void wait_writable(Stream& stream, bool turn_missed = false) noexcept;
  // A write took less than asked: why decides where the stream waits.
  void cut_short(Stream& stream, bool others_writing) noexcept;
  // A stream that waited for credit of its own has some: it queues for its turn.
  void credit_arrived(Stream& stream) noexcept;
  // Takes the stream out of the writable queue (it finishes).
  void forget_writable(Stream& stream) noexcept;
  void append_data(StreamId id, std::span<const std::byte> payload, bool end_stream) noexcept;
  std::span<std::byte> grow(ByteVector& buffer, std::size_t bytes) noexcept;
  static constexpr std::size_t batch_buffer_bytes_min = 16384;

  SessionHandler& handler_;
  SessionOptions options_;
  bool dialer_;
  wire::Decoder decoder_;
  StreamTable<Stream> streams_;
  StreamId next_local_id_;
  StreamId last_peer_id_ = 0;
  uint32_t peer_streams_open_ = 0;
  SendCredit connection_send_;
  RecvWindow connection_recv_;
  ByteVector control_;  // queued control frames, sent ahead of data
  uint32_t control_frames_ = 0;  // in control_ (0 again once the batch is taken)
  uint32_t link_frames_ = 0;     // PONGs and PINGs in link_ (0 again once link_ is taken)
  ByteVector data_;  // queued data frames of the current batch
  // Writers waiting for their turn (round robin, one turn_bytes() per batch each):
  // served from the front, a stream cut short goes to
  // the back. Streams waiting for credit of their own are not in it: their CREDIT puts
  // them back. Choosing and re-queueing a stream costs the same at 10 or 100,000 streams.
  WritableQueue writable_;
  // writable_deferred: what the writers woken since writers_ran() may still write (their
  // credit, up to a turn) and have not written yet, counted against the batch's room.
  uint64_t promised_bytes_ = 0;
  uint32_t promise_round_ = 1;
  bool notifying_ = false;
  uint64_t batch_number_ = 1;
  uint32_t batch_writers_ = 0;  // streams with data in the current batch
  bool shared_seen_ = false;    // two streams were open at once since the last consume()
  uint64_t shared_until_ns_ = 0;  // the connection counts as shared until then
  uint64_t data_open_batch_ = 0;  // batch whose data holds an OPEN: later OPENs follow it
  bool goaway_sent_ = false;
  bool goaway_received_ = false;
  uint32_t peer_last_stream_id_ = UINT32_MAX;
  uint64_t rtt_ns_ = 100'000;
  FloodGuard flood_;
  uint64_t frame_started_ns_ = 0;
  // The peer's receive windows: the minimums until its handshake announces them.
  uint32_t peer_stream_window_ = limits::stream_window_bytes_min;
  bool peer_windows_known_ = false;
  MuxError failed_ = MuxError::none;
  bool damaged_ = false;  // the frame being handled did not parse (see damaged())
  std::string failure_message_;
  SessionStats stats_;
  // Handshake.
  replay::DialHandshake dial_;  // the dialer's identity and handshake state (unused by the acceptor)
  wire::SessionId session_id_{};
  uint64_t generation_ = 0;
  bool handshake_complete_ = false;
  bool has_resume_key_ = false;
  bool new_session_handshake_ = false;
  bool dialer_confirmed_ = false;  // accepting side: the dialer resumed with RESUME or sent an ACK
  bool payload_checksums_ = true;
  // The features this side offers (dialer) or accepts (acceptor).
  uint64_t features() const noexcept {
    return options_.authenticated_transport ? wire::feature_unchecked_payloads : 0;
  }
  // The handshake agreed on `features` (the HELLO_ACK's): payload checksums follow.
  void apply_features(uint64_t features) noexcept {
    payload_checksums_ = (features & wire::feature_unchecked_payloads) == 0;
    decoder_.set_payload_checksums(payload_checksums_);
  }
  replay::ResumeKey resume_key_{};
  bool output_open_;  // the first frame of our direction (HELLO / HELLO_ACK) is queued first
  // Positions.
  uint64_t receive_position_ = 0;
  replay::AckPolicy ack_policy_;
  // Output: link frames (this connection only), then the held batches (the replay store
  // and the send queue: replay/held.h), fed from control_ and data_.
  ByteVector link_;
  static constexpr std::size_t no_ack_offset = SIZE_MAX;
  std::size_t link_ack_offset_ = no_ack_offset;  // where link_'s ACK is, if it has one
  replay::HeldBatches held_;
};

}  // namespace ringmux::mux
