// Connection: the link. It binds a Session to transports (mux/link/transport.h: TCP
// sockets of the engine, or a caller's own) on one loop and replaces the transport under it
// when it breaks (resume); the RPC layer (mux/rpc/) builds on it.
//
// This is the only place where protocol and I/O meet. Receive: the transport's bytes go
// straight into Session::receive (a socket's from the provided buffer: no copy for whole
// frames).
// Send: the session's batch is swapped out (double buffer) when no send is in flight and
// goes out in one gather send (control frames, then data); what is written meanwhile
// gathers in the other buffer. Handshake: the dialer's session gets a random 128-bit id
// (getrandom) and its HELLO is sent by start(); the acceptor's session holds its output
// until the HELLO has arrived and its HELLO_ACK leads (mux/session/session.h). Keepalive: a PING after an idle interval, and the
// connection closes after dead_peer_timeout of silence. The reader (on_recv / on_error)
// alone decides transport health.
//
// Turns: the connection does its deferred work once per turn of the loop (engine::Loop::
// defer: after the loop's callbacks of an iteration, before it waits). Then it reports the
// streams that ended (on_stream_finished) and wakes the writers that may go on
// (on_stream_writable), sends what every entry point of the turn wrote in one send, and
// last reports its own close. So no callback of the connection runs inside a call made on
// it (write, end, reset, cancel, close, ... never call back), an error of a call started
// here has one shape (the call's observer hears it on the next turn), and a turn's output
// leaves in one send, however many calls and received frames produced it.
//
// Threads: everything here runs on the connection's loop thread; callbacks never block.
// Lifetime: a Connection must stay alive until on_connection_closed has been delivered;
// destroyed earlier (once closed(), and not from inside one of its callbacks other than
// on_connection_closed), it reports the streams whose end was still due first, so that
// every observer hears on_stream_finished exactly once.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ringmux/base/histogram.h"
#include "ringmux/base/limits.h"
#include "ringmux/engine/loop.h"
#include "ringmux/engine/socket.h"
#include "ringmux/engine/timer.h"
#include "ringmux/mux/link/backoff.h"
#include "ringmux/mux/link/snapshot.h"
#include "ringmux/mux/link/transport.h"
#include "ringmux/mux/session/session.h"

namespace ringmux::mux {

class Connection;

// What a server handler receives when the peer opens a stream for it.
struct StreamStart {
  Connection* connection;
  StreamId id;
  uint32_t handler_id;
  uint64_t deadline_ns;  // on the loop's monotonic clock; 0 = none
  std::span<const std::byte> payload;
  bool end_stream;
  // Why the stream is refused when the service returns nullptr: unknown_handler unless the
  // service says otherwise (refused: a worker pool with a full queue, retryable).
  mutable MuxError refusal = MuxError::unknown_handler;
};

// What serves the streams a peer opens (the RPC layer's Registry). Called on the loop
// thread for every OPEN: returns the new stream's observer, owned by the connection from
// then on (deleted once on_stream_finished has returned, on the turn after the stream
// ended), or nullptr to refuse the stream
// (unknown_handler). It must outlive the connections it serves.
class StreamService {
 public:
  virtual StreamObserver* open_stream(const StreamStart& start) const noexcept = 0;

 protected:
  ~StreamService() = default;
};

// State a layer above keeps per connection (the RPC layer's order gate): owned by the
// connection, destroyed with it.
class ConnectionExtension {
 public:
  virtual ~ConnectionExtension() = default;
};

struct ConnectionOptions {
  SessionOptions session;
  uint64_t keepalive_interval_ns = limits::keepalive_interval_ns_default;
  uint64_t dead_peer_timeout_ns = limits::dead_peer_timeout_ns_default;
  // Resume: when the transport breaks, the session carries on over a new TCP connection.
  // The dialing side redials `peer` with exponential backoff and jitter; the accepting side
  // waits for the dialer's RESUME, routed to it by mux::Acceptor. Past resume_timeout_ns
  // without a connection the session is lost (every stream fails with session_lost).
  bool resume = false;
  engine::Address peer;  // the dialing side's redial address (with resume, unless `dialer`)
  // The dialing side's way to a new transport for a resume, instead of a TCP connect to
  // `peer` (a handshake of its own, another route; a simulated network). Not owned: it
  // must outlive the connection and serve it alone.
  Dialer* dialer = nullptr;
  // The handshake stage every transport of this connection passes (mux/link/transport.h;
  // TLS: mux/link/tls.h): the socket of the fd constructor and the TCP redials to `peer`.
  // A caller's own transport or dialer brings its own. Shared: one stage serves many.
  std::shared_ptr<Handshake> handshake;
  uint64_t resume_timeout_ns = limits::resume_timeout_ns_default;
  uint64_t redial_backoff_ns_min = limits::redial_backoff_ns_min;
  uint64_t redial_backoff_ns_max = limits::redial_backoff_ns_max;
  uint32_t connect_timeout_ms = limits::connect_timeout_ms_default;
  // A frame begun must complete within this (slowloris), however its bytes trickle in.
  uint64_t frame_complete_timeout_ns = limits::frame_complete_timeout_ns;
  // A stream the peer stopped, whose writer neither ends nor resets, is reset after this.
  uint64_t stopped_stream_close_timeout_ns = limits::stopped_stream_close_timeout_ns;
  // Bytes the RPC layer buffers at once on this connection: requests being gathered and
  // copied response rests (Responder::reply). Over it, the call adding bytes fails with
  // resource_exhausted.
  uint64_t rpc_bytes_max = limits::connection_rpc_bytes_max;
  // Largest response a unary call gathers; a larger one fails with resource_exhausted.
  uint32_t call_response_bytes_max = limits::unary_response_bytes_max;
  // Keep a histogram of this connection's unary call latencies as its callers see them
  // (call() to the response, successful calls; base/histogram.h, within 1 %), read through
  // snapshot(). Off by default: it costs 30 KiB per connection (allocated with the first
  // call) and two clock reads per call.
  bool record_call_latency = false;
};

// What a resumable connection did (all zero without resume). Loop thread only.
struct ResumeStats {
  uint64_t transports_lost = 0;   // TCP connections that broke under the session
  uint64_t transports_timed_out = 0;  // of those, found dead by the keepalive (silent peer, stuck send)
  uint64_t resumes = 0;           // handshakes that resumed the session
  uint64_t bytes_replayed = 0;    // held bytes sent again after resumes
  uint64_t redials = 0;           // connect attempts after the first connection (dialer)
  uint64_t last_resume_ns = 0;    // loop clock when the last resume completed
  // From the new TCP connection being established to the handshake completing (the dialer
  // measures it: connect completion to HELLO_ACK; the acceptor: adopt to HELLO_ACK queued).
  uint64_t last_resume_duration_ns = 0;
  uint64_t held_bytes_peak = 0;   // most bytes the held batches have held
};

class ConnectionObserver {
 public:
  // The connection is gone: `error` says why (connection_lost for transport failures,
  // whose IoError is in `io_error`: closed, reset, timed_out for a silent peer; a
  // protocol error; or the reason given to close()). Every stream's on_stream_finished
  // has been delivered first. Delivered on a turn of the loop, never inside close(); the
  // observer may destroy the connection here.
  virtual void on_connection_closed(Connection& connection, MuxError error, engine::IoError io_error) noexcept = 0;
  // The session's first handshake completed: it is up (what was opened before went out
  // with it). Delivered on the loop thread from inside the connection's receive; the
  // observer must not destroy the connection here. For a dialer that waits until it can
  // tell its application the connection is usable (mux::Client::dial).
  virtual void on_connection_established(Connection&) noexcept {}
  // The session resumed on a new TCP connection, `duration_ns` after that connection was up
  // (ResumeStats::last_resume_duration_ns). Streams and calls never see a resume; this is
  // for statistics.
  virtual void on_connection_resumed(Connection&, uint64_t /*duration_ns*/) noexcept {}

 protected:
  ~ConnectionObserver() = default;
};

// The table an accepting side's session is registered in (mux::Acceptor): told when the
// session loses its transport (it waits for its dialer's resume, detached) and when it ends
// for good.
class SessionRegistry {
 public:
  virtual void on_detached(Connection& connection) noexcept = 0;
  virtual void forget(Connection& connection) noexcept = 0;

 protected:
  ~SessionRegistry() = default;
};

class Connection final : public SessionHandler, private DialHandler {
 public:
  // Runs the session over `transport` (not started yet) on `loop`. `service` (may be null:
  // every stream the peer opens is refused) and `observer` must outlive the connection.
  Connection(engine::Loop& loop, std::unique_ptr<Transport> transport, bool dialer, const StreamService* service,
             ConnectionObserver& observer, const ConnectionOptions& options = {});
  // The same over the connected TCP socket `fd` (make_socket_transport).
  Connection(engine::Loop& loop, int fd, bool dialer, const StreamService* service, ConnectionObserver& observer,
             const ConnectionOptions& options = {});
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void start() noexcept;
  // The accepting side's start when mux::Acceptor has read the dialer's HELLO already.
  // `pipelined`: bytes that arrived behind the HELLO (the acceptor read them through the
  // transport's handshake), taken as if received now.
  void start(const wire::Hello& hello, std::span<const std::byte> pipelined = {}) noexcept;
  // Closes the session: every stream finishes with `reason` (their observers hear it on
  // the next turn); no resume. A resumable session tells its peer (an ERROR on stream 0);
  // with a send in flight that ERROR follows the send, and the socket stays open until
  // then (at most limits::closed_send_linger_ns_max): closed() and on_connection_closed
  // wait for it.
  void close(MuxError reason = MuxError::cancelled) noexcept;
  // The session is over and every socket it used is closed (on_connection_closed is due
  // or delivered).
  bool closed() const noexcept { return ended_ && transport_ == nullptr && retired_.empty(); }
  // A transport is up and its handshake is complete (false while resuming).
  bool connected() const noexcept { return transport_ != nullptr && session_.handshake_complete(); }
  ResumeStats resume_stats() const noexcept;
  // Why the last transport that failed did, when it knew more than its IoError (a handshake
  // stage's cause, Transport::failure_text: a certificate the peer refused); empty when none
  // did. Kept after the transport is gone, for the application to report.
  const std::string& transport_failure() const noexcept { return transport_failure_; }
  // Its statistics now (mux/link/snapshot.h; take_snapshot() from another thread).
  ConnectionSnapshot snapshot() const noexcept;
  // A unary call of this connection completed successfully `latency_ns` after call()
  // (mux/rpc/call.cpp; with ConnectionOptions::record_call_latency).
  void note_call_latency(uint64_t latency_ns) noexcept {
    if (call_latency_ == nullptr) call_latency_ = std::make_unique<Histogram>();
    call_latency_->record(latency_ns);
  }
  // Accepting side: the session is now in `registry` (once, before start).
  void register_in(SessionRegistry& registry) noexcept {
    RM_ASSERT(registry_ == nullptr && !session_.dialer());
    registry_ = &registry;
  }

  // Accepting side, resume: a new transport brought `hello` for this session (mux::Acceptor
  // routes it here). On accept_resume the connection takes `transport` over (it is moved
  // from) and replays; on refuse / ignore it stays the caller's, which sends answer.ack
  // (refuse) and closes it.
  replay::HelloAnswer adopt(std::unique_ptr<Transport>& transport, const wire::Hello& hello) noexcept;
  // The same for a new TCP connection `fd` (on refuse / ignore the fd stays the caller's).
  replay::HelloAnswer adopt(int fd, const wire::Hello& hello) noexcept;

  // ---- streams (client side) ----
  // None of these calls back: a stream that a write, end or reset ends hears
  // on_stream_finished on the loop's next turn, and a writer woken by a send hears
  // on_stream_writable then too.
  //
  // Opens a stream; `observer` receives its events (owned by the caller, who must keep it
  // alive until on_stream_finished). `payload` must fit the initial stream window; when
  // other streams hold the connection's credit, the OPEN carries what fits and the rest
  // (copied) follows ahead of anything written later: write() takes nothing and end() is
  // queued until it has gone, then on_stream_writable() comes as for any short write.
  // Errors: refused (over the peer's stream limit, after a GOAWAY, or a payload larger
  // than the initial stream window), stream_closed, deadline_exceeded (already passed).
  Result<StreamId, MuxError> open(uint32_t handler_id, uint64_t deadline_ns, std::span<const std::byte> payload,
                                  bool end_stream, StreamObserver& observer) noexcept;
  Result<std::size_t, MuxError> write(StreamId id, std::span<const std::byte> bytes, bool end_stream) noexcept;
  Result<void, MuxError> end(StreamId id) noexcept;
  void reset(StreamId id, MuxError reason, std::string_view message = {}) noexcept;
  void stop(StreamId id) noexcept;
  void consume(StreamId id, std::size_t bytes) noexcept { consume(id, bytes, bytes); }
  // Credit of the stream and of the connection apart (Session::consume).
  void consume(StreamId id, std::size_t stream_bytes, std::size_t connection_bytes) noexcept;

  // For the layers above (the RPC layer's calls): open() with two differences. The
  // connection owns `observer` from this call on (deleted once on_stream_finished has
  // returned), and on failure too: then the observer hears the error as
  // on_stream_finished on the next turn, as it would any later one, and the error is
  // returned as well. And a payload larger than the initial stream window is taken: what
  // the OPEN cannot carry follows as DATA ahead of anything written later.
  Result<StreamId, MuxError> open_owned(uint32_t handler_id, uint64_t deadline_ns, std::span<const std::byte> payload,
                                        bool end_stream, StreamObserver& observer) noexcept;
  // Cancels a call or stream: RESET(cancelled) to the peer, cancelled to local waiters
  // (on the next turn; a stream that has ended already is left as it is).
  void cancel(StreamId id) noexcept { reset(id, MuxError::cancelled); }
  // Graceful drain: tells the peer the last stream we serve; later OPENs are refused
  // (retryable) while streams already open run to completion.
  void goaway(wire::StatusCode code = wire::StatusCode::going_away) noexcept;

  Session& session() noexcept { return session_; }
  const Session& session() const noexcept { return session_; }
  // The session is over for good (closed, failed or lost): no stream will run again.
  bool ended() const noexcept { return ended_; }
  // The layer above's per-connection state (one slot); set once.
  ConnectionExtension* extension() noexcept { return extension_.get(); }
  void set_extension(std::unique_ptr<ConnectionExtension> extension) noexcept { extension_ = std::move(extension); }
  engine::Loop& loop() noexcept { return loop_; }
  // The connection's number, unique in the process (from 1, in order of construction): the
  // connection id of its log events (base/log.h) and of its snapshot.
  uint64_t id() const noexcept { return id_; }
  uint64_t batches_sent() const noexcept { return batches_sent_; }
  const ConnectionOptions& options() const noexcept { return options_; }

  // ---- the RPC layer's buffer budget (ConnectionOptions::rpc_bytes_max) ----
  // Charges `bytes` the RPC layer is about to buffer; false (nothing charged) when they
  // would pass the budget. Every charge is released exactly once.
  bool rpc_charge(std::size_t bytes) noexcept;
  void rpc_release(std::size_t bytes) noexcept;
  uint64_t rpc_bytes_buffered() const noexcept { return rpc_bytes_buffered_; }

  // SessionHandler
  void on_stream_opened(StreamId id, StreamBinding& binding, uint32_t handler_id, uint64_t deadline_budget_ns,
                        std::span<const std::byte> payload, bool end_stream) noexcept override;
  void on_stream_data(StreamId id, StreamBinding& binding, std::span<const std::byte> payload,
                      bool end_stream) noexcept override;
  void on_stream_finished(StreamId id, StreamBinding& binding, MuxError error,
                          std::string_view message) noexcept override;
  void on_stream_writable(StreamId id) noexcept override;
  void on_stream_stopped(StreamId id, StreamBinding& binding) noexcept override;
  void on_goaway(uint32_t last_stream_id, wire::StatusCode code) noexcept override;
  void on_pong(uint64_t opaque) noexcept override;

 private:
  Result<StreamId, MuxError> open_stream(uint32_t handler_id, uint64_t deadline_ns, std::span<const std::byte> payload,
                                         bool end_stream, StreamObserver& observer, bool owned) noexcept;
  // One transport under the session. Its callbacks name it, so those of a transport that
  // was replaced (retired, closing) are told apart and ignored.
  class Attached final : public TransportHandler {
   public:
    Attached(Connection& connection, std::unique_ptr<Transport> attached) noexcept
        : connection_(connection), transport(std::move(attached)) {}
    void on_transport_recv(std::span<const std::byte> bytes) noexcept override {
      connection_.on_transport_recv(*this, bytes);
    }
    void on_transport_sent() noexcept override { connection_.on_transport_sent(*this); }
    void on_transport_error(engine::IoError error) noexcept override { connection_.on_transport_error(*this, error); }
    void on_transport_closed() noexcept override { connection_.on_transport_closed(*this); }

   private:
    Connection& connection_;

   public:
    std::unique_ptr<Transport> transport;
    // A retired transport whose send was in flight when the session closed or failed: the send's
    // bytes (kept until it completes) and the session's last words, sent behind them
    // (kept until that send completes too; then the transport closes).
    ByteVector in_flight;
    std::vector<std::byte> last_words;
    bool last_words_sent = false;
  };

  // The one timer of a stream that has a deadline or was stopped by the peer: fires at the
  // earlier of the two. Pooled (StreamBinding::timer is its index + 1), so a stream with a
  // deadline costs no allocation once the pool has grown.
  struct StreamTimer {
    Connection* connection = nullptr;
    StreamId id = 0;  // 0 while in the pool
    engine::Timer timer;
  };
  // Arms (or releases) the stream's timer for the earlier of deadline_ns / stop_close_ns.
  void arm_stream_timer(StreamId id, StreamBinding& binding) noexcept;
  void release_stream_timer(StreamBinding& binding) noexcept;
  static void on_stream_timer(engine::Timer& timer) noexcept;
  // The transport's last words before the session ends (an ERROR on stream 0), best
  // effort: written to the socket now when no send is in flight (a fresh frame boundary),
  // else kept for the retired transport to send once that send completes
  // (retire_transport, on_transport_sent). The caller ends the session next.
  void say_last_words(std::vector<std::byte> frame) noexcept;
  static std::vector<std::byte> final_error_frame(MuxError reason, std::string_view message);
  // The session failed for what the peer did: the ERROR that tells it (failure, message).
  std::vector<std::byte> why_frame() const;
  // Asks for the connection's turn (on_turn), where what was written goes out.
  void want_turn() noexcept { loop_.defer(turn_); }
  static void on_turn(engine::Deferred& turn) noexcept;
  // The parts of a turn: the ended streams' on_stream_finished, the woken writers'
  // on_stream_writable, and the one send of what was written.
  void report_finished() noexcept;
  void report_writable() noexcept;
  void flush() noexcept;
  static void on_keepalive(engine::Timer& timer) noexcept;
  static void on_linger(engine::Timer& timer) noexcept;
  static void on_resume_deadline(engine::Timer& timer) noexcept;
  static void on_redial_timer(engine::Timer& timer) noexcept;
  static void on_ack_timer(engine::Timer& timer) noexcept;
  // Arms the ACK timer when the session has received bytes that no send carried an ACK for.
  void arm_ack_timer() noexcept;

  void on_transport_recv(Attached& attached, std::span<const std::byte> bytes) noexcept;
  void on_transport_sent(Attached& attached) noexcept;
  void on_transport_error(Attached& attached, engine::IoError error) noexcept;
  void on_transport_closed(Attached& attached) noexcept;
  // DialHandler: a redial finished.
  void on_dialed(Result<std::unique_ptr<Transport>, engine::IoError> result) noexcept override;
  // The current transport is usable and has no send in flight.
  bool can_send() const noexcept {
    return transport_ != nullptr && transport_->transport->usable() && !transport_->transport->send_in_flight();
  }

  bool dialing() const noexcept { return dialer_ != nullptr && dialer_->in_progress(); }
  bool resumable() const noexcept { return options_.resume && !session_.failed() && !ended_; }
  // The transport failed (`reason`, `io_error` for transport errors): resume when the
  // session can, else end the session with it.
  void lose_transport(MuxError reason, engine::IoError io_error) noexcept;
  // Ends the session: every stream finishes with `reason`; the observer hears once every
  // transport has closed.
  void end(MuxError reason) noexcept;
  // Closes the current transport (if any) and keeps it until its socket has closed.
  void retire_transport() noexcept;
  // adopt()'s two halves: the verdict on the HELLO (with what it does to the session), and
  // on accept_resume the new transport's installation.
  // `transport`'s peer identity must be the session's (wire/SPEC.md §8.2; nullptr: a plain
  // socket, which authenticates nobody).
  replay::HelloAnswer judge_adoption(const wire::Hello& hello, const Transport* transport) noexcept;
  void finish_adoption(std::unique_ptr<Transport> transport) noexcept;
  // Makes `transport` the current one and starts it.
  void install_transport(std::unique_ptr<Transport> transport) noexcept;
  // The part of an open's payload (a stream's or a call's request) that the connection's
  // credit could not carry then: it goes ahead of anything written later on that stream.
  void keep_open_rest(StreamBinding& binding, std::span<const std::byte> rest, bool end_stream);
  void drop_open_rest(StreamBinding& binding) noexcept;
  // Sends what the credit allows of `id`'s open rest; true when none is left (or the
  // stream failed).
  bool send_open_rest(StreamId id) noexcept;
  void schedule_redial() noexcept;
  // The handshake on the current transport completed: resume bookkeeping.
  void on_established() noexcept;
  // The session's first transport is up: the resume key and the peer identity it binds
  // the session to, when the transport has them (a TLS connection; wire/SPEC.md §8.2).
  void bind_session() noexcept;
  void maybe_report_closed() noexcept;

  static uint64_t next_id() noexcept;
  // Logs why the session ended (once, when it does).
  void log_end() const noexcept;

  const uint64_t id_ = next_id();
  std::string peer_identity_;  // of the session's first transport; its resumes must match
  std::unique_ptr<Histogram> call_latency_;  // ConnectionOptions::record_call_latency
  engine::Loop& loop_;
  const StreamService* service_;
  ConnectionObserver& observer_;
  ConnectionOptions options_;
  Session session_;
  std::unique_ptr<Attached> transport_;               // the current transport, if any
  std::vector<std::unique_ptr<Attached>> retired_;    // replaced ones, until they have closed
  // The streams live in the session's table (StreamBinding holds our part of each).
  uint32_t open_rests_ = 0;  // streams whose open_rest is not empty
  std::vector<std::unique_ptr<StreamTimer>> stream_timers_;  // the pool
  std::vector<uint32_t> free_stream_timers_;
  // The double buffer: the link frames in flight (the held bytes in flight stay in the
  // session's held batches) and, inside the session, the batch being filled.
  ByteVector sending_link_;
  engine::Timer keepalive_;
  engine::Timer resume_deadline_;
  engine::Timer redial_timer_;
  engine::Timer ack_timer_;
  engine::Timer linger_;  // bounds how long an ended session's last send may take
  std::unique_ptr<Dialer> own_dialer_;  // the TCP dialer, when the options name no other
  Dialer* dialer_ = nullptr;            // the dialing side's, with resume
  SessionRegistry* registry_ = nullptr;  // the table this accepting side is registered in
  ResumeStats resume_stats_;  // what the connection counts (the session counts the rest)
  uint64_t transport_started_ns_ = 0;  // when the current transport's TCP connection was up
  uint64_t send_started_ns_ = 0;       // when the send in flight was submitted
  Backoff redial_backoff_;             // attempts since the last established handshake
  bool ended_ = false;                 // the session is over (no resume)
  uint64_t last_received_ns_ = 0;
  uint64_t ping_sent_ns_ = 0;
  uint64_t batches_sent_ = 0;
  uint64_t bytes_sent_ = 0;      // handed to the transport (link frames and held bytes)
  uint64_t bytes_received_ = 0;  // from the transport
  MuxError close_reason_ = MuxError::none;
  engine::IoError io_error_ = engine::IoError::none;
  std::string transport_failure_;  // transport_failure()
  bool closed_reported_ = false;
  bool close_due_ = false;  // on_connection_closed is due on the turn
  uint64_t rpc_bytes_buffered_ = 0;  // declared before the requests that are charged to it
  uint64_t batches_at_last_keepalive_ = 0;  // an unchanged count: the connection was idle
  // A stream that ended, whose observer hears it on the turn.
  struct Finished {
    StreamObserver* observer;
    MuxError error;
    bool owned;  // the connection deletes the observer once it has heard
  };
  engine::Deferred turn_{&Connection::on_turn, this};
  std::vector<Finished> finished_;          // ended streams, in the order they ended
  std::vector<Finished> finished_round_;    // report_finished()'s working copy (capacity kept)
  std::vector<StreamId> writable_pending_;  // on_stream_writable, delivered on the turn
  std::vector<StreamId> writable_scratch_;  // report_writable()'s working copy (capacity kept)
  std::unique_ptr<ConnectionExtension> extension_;  // last: it may use the connection as it goes
};

}  // namespace ringmux::mux
