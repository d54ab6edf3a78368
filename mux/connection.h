// Connection: the glue that binds a Session to an engine Socket on one loop, and the
// RPC layer on top of it (handler registry, unary calls, streams).
//
// This is the only place where protocol and I/O meet. Receive: the socket's bytes go
// straight from the provided buffer into Session::receive (no copy for whole frames).
// Send: the session's batch is swapped out (double buffer) when no send is in flight and
// goes out in one gather send (control frames, then data); what is written meanwhile
// gathers in the other buffer. Handshake: the dialer's session gets a random 128-bit id
// (getrandom) and its HELLO is sent by start(); the acceptor's session holds its output
// until the HELLO has arrived and its HELLO_ACK leads (mux/session.h). Keepalive: a PING after an idle interval, and the
// connection closes after dead_peer_timeout of silence. The reader (on_recv / on_error)
// alone decides transport health.
//
// Threads: everything here runs on the connection's loop thread; callbacks never block.
// Lifetime: a Connection must stay alive until on_connection_closed has been delivered.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/limits.h"
#include "engine/loop.h"
#include "engine/socket.h"
#include "engine/timer.h"
#include "mux/session.h"

namespace ringmux::mux {

class Connection;

// Events of one stream, client or server side, on the loop thread. Spans are valid only
// during the call; every delivered byte must be handed back with Connection::consume
// (or the reader's credit never returns).
class StreamObserver {
 public:
  virtual ~StreamObserver() = default;
  // The peer's explanation, when it ended the stream with an ERROR frame; called just
  // before on_stream_finished.
  virtual void on_stream_message(std::string_view) noexcept {}
  virtual void on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept = 0;
  virtual void on_stream_writable() noexcept {}
  virtual void on_stream_stopped() noexcept {}
  // The last event: MuxError::none when the stream completed cleanly, else why it ended
  // (the peer's reset reason, cancelled, deadline_exceeded, a connection error, ...).
  // The connection forgets the observer after this call; one it owns (a server handler's)
  // is deleted once the connection's current entry point returns, never in the middle
  // of a call the observer itself made.
  virtual void on_stream_finished(MuxError error) noexcept = 0;
};

// What a server handler receives when the peer opens a stream for it.
struct StreamStart {
  Connection* connection;
  StreamId id;
  uint32_t handler_id;
  uint64_t deadline_ns;  // on the loop's monotonic clock; 0 = none
  std::span<const std::byte> payload;
  bool end_stream;
};

// Replies to one unary call, on the loop thread. Exactly one of reply / fail; after the
// call is cancelled (peer reset, deadline) both are no-ops and cancelled() is true.
class Responder {
 public:
  virtual ~Responder() = default;
  // What the window cannot take now is copied and goes as credit returns; the copy is
  // charged to the connection's RPC buffer (ConnectionOptions::rpc_bytes_max): over it the
  // call fails with resource_exhausted.
  virtual void reply(std::span<const std::byte> response) noexcept = 0;
  // No copy: `response` stays valid while `keep_alive` is held, and the responder holds it
  // until the last byte has gone (a large or shared response, say a cache block).
  virtual void reply(std::span<const std::byte> response, std::shared_ptr<const void> keep_alive) noexcept = 0;
  virtual void fail(wire::StatusCode status, std::string_view message) noexcept = 0;
  virtual bool cancelled() const noexcept = 0;
  // Called once if the call is cancelled before the reply went out.
  virtual void on_cancel(std::function<void()> callback) noexcept = 0;
  // Ordered handlers (Registry::add_unary_ordered): lets the next ordered request of this
  // session start while this one goes on. Idempotent, and implied by reply(), fail() and
  // cancellation. A no-op for unordered handlers.
  virtual void release() noexcept = 0;
};

// Server handlers by id. A stream handler returns the observer of the new stream (owned
// by the connection from then on), or nullptr to refuse it (unknown_handler).
// Limits of one unary handler.
struct UnaryLimits {
  // Largest request: a larger one fails with resource_exhausted (stream-scoped, with a
  // message naming the limit) before the handler sees it.
  uint32_t request_bytes_max = limits::unary_request_bytes_max;
};

class Registry {
 public:
  using StreamHandler = std::function<StreamObserver*(const StreamStart& start)>;
  // The request is valid only during the call. The handler may reply at once or keep the
  // responder and reply later (from the loop thread); it stays valid as long as held.
  using UnaryHandler = std::function<void(std::span<const std::byte> request, std::shared_ptr<Responder> responder)>;

  void add_stream(uint32_t handler_id, StreamHandler handler);
  void add_unary(uint32_t handler_id, UnaryHandler handler, UnaryLimits limits = {});
  // An ordered unary handler: on each session its requests start one at a time, in the
  // order they arrived; the next starts when the running one replies, fails, is cancelled
  // or calls Responder::release(). Requests of unordered handlers are never held back.
  // A handler that makes nested calls while it holds the order must release() first: a
  // peer that answers by calling an ordered handler back over the same session would wait
  // behind it. That cycle is detected when the nested call was made from inside the
  // handler's own invocation: the request coming back is failed at once (handler_error,
  // "ordered handler re-entered ...") instead of waiting forever.
  void add_unary_ordered(uint32_t handler_id, UnaryHandler handler, UnaryLimits limits = {});
  // A routed unary handler: one handler id serves many targets (say, the disks of a node),
  // each with its own handler under a 64-bit route key. A routed request starts with its
  // route key (routed_request()); the handler gets the rest. A request whose route has no
  // handler fails with unknown_handler and a message naming the route (stream-scoped).
  // All routes of an id are routed; the id cannot also have a plain handler.
  void add_unary_route(uint32_t handler_id, uint64_t route_key, UnaryHandler handler);
  const StreamHandler* find(uint32_t handler_id) const noexcept;

 private:
  std::unordered_map<uint32_t, StreamHandler> handlers_;
  std::unordered_map<uint32_t, std::shared_ptr<std::unordered_map<uint64_t, UnaryHandler>>> routes_;
};

// The request of a routed call: the route key (8 bytes, little-endian), then `request`.
std::vector<std::byte> routed_request(uint64_t route_key, std::span<const std::byte> request);

// Outcome of a unary call: the response bytes (valid during the callback) or an error
// with the peer's message when it sent one.
struct CallResult {
  MuxError error = MuxError::none;
  std::span<const std::byte> response;
  std::string message;
};
using CallCallback = std::function<void(const CallResult& result)>;

struct ConnectionOptions {
  SessionOptions session;
  uint64_t keepalive_interval_ns = limits::keepalive_interval_ns_default;
  uint64_t dead_peer_timeout_ns = limits::dead_peer_timeout_ns_default;
  // Resume: when the transport breaks, the session carries on over a new TCP connection.
  // The dialing side redials `peer` with exponential backoff and jitter; the accepting side
  // waits for the dialer's RESUME, routed to it by mux::Acceptor. Past resume_timeout_ns
  // without a connection the session is lost (every stream fails with session_lost).
  bool resume = false;
  engine::Address peer;  // the dialing side's redial address (required with resume)
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
};

// What a resumable connection did (all zero without resume). Loop thread only.
struct ResumeStats {
  uint64_t transports_lost = 0;   // TCP connections that broke under the session
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
  // protocol error; or the reason given to close()). Every stream has been finished first.
  virtual void on_connection_closed(Connection& connection, MuxError error, engine::IoError io_error) noexcept = 0;
  // The session resumed on a new TCP connection, `duration_ns` after that connection was up
  // (ResumeStats::last_resume_duration_ns). Streams and calls never see a resume; this is
  // for statistics.
  virtual void on_connection_resumed(Connection&, uint64_t /*duration_ns*/) noexcept {}

 protected:
  ~ConnectionObserver() = default;
};

class Acceptor;
class OrderedStart;

class Connection final : public SessionHandler, private engine::ConnectHandler {
 public:
  // Adopts the connected `fd` on `loop`. `registry` (may be null: no handlers) and
  // `observer` must outlive the connection.
  Connection(engine::Loop& loop, int fd, bool dialer, const Registry* registry, ConnectionObserver& observer,
             const ConnectionOptions& options = {});
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void start() noexcept;
  // The accepting side's start when mux::Acceptor has read the dialer's HELLO already.
  void start(const wire::Hello& hello) noexcept;
  // Closes the session: every stream finishes with `reason`; no resume.
  void close(MuxError reason = MuxError::cancelled) noexcept;
  // The session is over and every socket it used is closed (on_connection_closed is due
  // or delivered).
  bool closed() const noexcept { return ended_ && transport_ == nullptr && retired_.empty(); }
  // A transport is up and its handshake is complete (false while resuming).
  bool connected() const noexcept { return transport_ != nullptr && session_.handshake_complete(); }
  ResumeStats resume_stats() const noexcept;

  // Accepting side, resume: a new TCP connection `fd` brought `hello` for this session
  // (mux::Acceptor routes it here). On accept_resume the connection takes the fd over and
  // replays; on refuse / ignore the fd stays the caller's, which sends answer.ack (refuse)
  // and closes it.
  replay::HelloAnswer adopt(int fd, const wire::Hello& hello) noexcept;

  // ---- streams (client side) ----
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
  void consume(StreamId id, std::size_t bytes) noexcept;

  // ---- unary calls ----
  // Sends `request` to `handler_id`; `done` runs once with the response or the error
  // (cancelled, deadline_exceeded at `deadline_ns` even if the peer is silent, refused,
  // unknown_handler, handler_error with the peer's message, or the connection's error).
  // Returns the call's stream id, usable with cancel().
  StreamId call(uint32_t handler_id, std::span<const std::byte> request, uint64_t deadline_ns, CallCallback done) noexcept;
  // Cancels a call or stream: RESET(cancelled) to the peer, cancelled to local waiters.
  void cancel(StreamId id) noexcept { reset(id, MuxError::cancelled); }
  // Graceful drain: tells the peer the last stream we serve; later OPENs are refused
  // (retryable) while streams already open run to completion.
  void goaway(wire::StatusCode code = wire::StatusCode::going_away) noexcept;

  Session& session() noexcept { return session_; }
  const Session& session() const noexcept { return session_; }
  // Ordered requests waiting for the order on this session (Registry::add_unary_ordered).
  std::size_t ordered_waiting() const noexcept { return order_waiting_.size(); }
  engine::Loop& loop() noexcept { return loop_; }
  uint64_t batches_sent() const noexcept { return batches_sent_; }
  const ConnectionOptions& options() const noexcept { return options_; }

  // ---- the RPC layer's buffer budget (ConnectionOptions::rpc_bytes_max) ----
  // Charges `bytes` the RPC layer is about to buffer; false (nothing charged) when they
  // would pass the budget. Every charge is released exactly once.
  bool rpc_charge(std::size_t bytes) noexcept;
  void rpc_release(std::size_t bytes) noexcept;
  uint64_t rpc_bytes_buffered() const noexcept { return rpc_bytes_buffered_; }

  // SessionHandler
  void on_stream_opened(StreamId id, uint32_t handler_id, uint64_t deadline_budget_ns,
                        std::span<const std::byte> payload, bool end_stream) noexcept override;
  void on_stream_data(StreamId id, std::span<const std::byte> payload, bool end_stream) noexcept override;
  void on_stream_reset(StreamId id, MuxError error, std::string_view message) noexcept override;
  void on_stream_closed(StreamId id) noexcept override;
  void on_stream_writable(StreamId id) noexcept override;
  void on_stream_stopped(StreamId id) noexcept override;
  void on_goaway(uint32_t last_stream_id, wire::StatusCode code) noexcept override;
  void on_pong(uint64_t opaque) noexcept override;

 private:
  friend class Acceptor;
  friend class OrderedStart;
  // ---- ordered handlers (Registry::add_unary_ordered) ----
  // Runs `start` now if the order is free, else queues it (arrival order). Returns false
  // when it refused the request as a self-deadlock (the holder waits on a nested call
  // over this session).
  bool order_enter(std::shared_ptr<OrderedStart> start) noexcept;
  // The holder `token` released the order: the next waiting request starts.
  void order_release(uint64_t token) noexcept;
  void order_drain() noexcept;
  // One TCP connection under the session. The socket's callbacks name their transport, so
  // those of a transport that was replaced (retired, closing) are told apart and ignored.
  class Transport final : public engine::SocketHandler {
   public:
    Transport(Connection& connection, int fd) noexcept : connection_(connection), socket(connection.loop_, fd, *this) {}
    void on_recv(std::span<const std::byte> bytes) noexcept override { connection_.on_transport_recv(*this, bytes); }
    void on_send_complete() noexcept override { connection_.on_transport_sent(*this); }
    void on_error(engine::IoError error) noexcept override { connection_.on_transport_error(*this, error); }
    void on_closed() noexcept override { connection_.on_transport_closed(*this); }

   private:
    Connection& connection_;

   public:
    engine::Socket socket;
  };

  // The one timer of a stream that has a deadline or was stopped by the peer: fires at the
  // earlier of the two (allocated only for such streams).
  struct StreamTimer {
    Connection* connection = nullptr;
    StreamId id = 0;
    engine::Timer timer;
  };
  struct Entry {
    StreamObserver* observer;
    bool owned;  // server handlers and unary calls are deleted by the connection
    uint64_t deadline_ns = 0;    // reset with deadline_exceeded then (0: none)
    uint64_t stop_close_ns = 0;  // reset with stream_stopped then (0: not stopped)
    std::unique_ptr<StreamTimer> timer;
  };
  // Arms (or cancels) `entry`'s timer for its earlier of deadline_ns / stop_close_ns.
  void arm_stream_timer(StreamId id, Entry& entry) noexcept;
  static void on_stream_timer(engine::Timer& timer) noexcept;
  // Tells the peer why the session ends (ERROR on stream 0 with `message`), best effort:
  // written straight to the socket when no send is in flight (a fresh frame boundary).
  void send_final_error(MuxError reason, std::string_view message) noexcept;
  // The session failed for what the peer did: tells it (the failure and its message).
  void tell_peer_why() noexcept;
  // Marks an entry point (a public call, a socket or timer callback): writable events,
  // the deletion of owned observers that finished, and on_connection_closed are all
  // delivered when the outermost one returns (reap() is its last action).
  class EntryGuard {
   public:
    explicit EntryGuard(Connection& connection) noexcept : connection_(connection) { connection_.depth_++; }
    ~EntryGuard() {
      if (--connection_.depth_ == 0) connection_.reap();
    }

   private:
    Connection& connection_;
  };
  void reap() noexcept;
  void flush() noexcept;
  void finish(StreamId id, MuxError error, std::string_view message) noexcept;
  static void on_keepalive(engine::Timer& timer) noexcept;
  static void on_resume_deadline(engine::Timer& timer) noexcept;
  static void on_redial_timer(engine::Timer& timer) noexcept;
  static void on_ack_timer(engine::Timer& timer) noexcept;
  // Arms the ACK timer when the session has received bytes that no send carried an ACK for.
  void arm_ack_timer() noexcept;

  void on_transport_recv(Transport& transport, std::span<const std::byte> bytes) noexcept;
  void on_transport_sent(Transport& transport) noexcept;
  void on_transport_error(Transport& transport, engine::IoError error) noexcept;
  void on_transport_closed(Transport& transport) noexcept;
  // ConnectHandler: a redial finished.
  void on_connect(Result<int, engine::IoError> result) noexcept override;

  bool resumable() const noexcept { return options_.resume && !session_.failed() && !ended_; }
  // The transport failed (`reason`, `io_error` for transport errors): resume when the
  // session can, else end the session with it.
  void lose_transport(MuxError reason, engine::IoError io_error) noexcept;
  // Ends the session: every stream finishes with `reason`; the observer hears once every
  // transport has closed.
  void end(MuxError reason) noexcept;
  // Closes the current transport (if any) and keeps it until its socket has closed.
  void retire_transport() noexcept;
  // Makes `fd` the current transport and starts it.
  void install_transport(int fd) noexcept;
  void keep_open_rest(StreamId id, std::span<const std::byte> rest, bool end_stream);
  // Sends what the credit allows of `id`'s open rest; true when none is left (or the
  // stream failed).
  bool send_open_rest(StreamId id) noexcept;
  void schedule_redial() noexcept;
  // The handshake on the current transport completed: resume bookkeeping.
  void on_established() noexcept;
  void maybe_report_closed() noexcept;

  engine::Loop& loop_;
  const Registry* registry_;
  ConnectionObserver& observer_;
  ConnectionOptions options_;
  Session session_;
  std::unique_ptr<Transport> transport_;               // the current TCP connection, if any
  std::vector<std::unique_ptr<Transport>> retired_;    // replaced ones, until their sockets close
  std::unordered_map<StreamId, Entry> streams_;
  // The part of an open's payload (a stream's or a call's request) that the connection's
  // credit could not carry then: it goes ahead of anything written later on that stream.
  struct OpenRest {
    std::vector<std::byte> bytes;
    bool end_stream;
  };
  std::unordered_map<StreamId, OpenRest> open_rests_;
  // The double buffer: the link frames in flight (the held bytes in flight stay in the
  // session's held batches) and, inside the session, the batch being filled.
  ByteVector sending_link_;
  engine::Timer keepalive_;
  engine::Timer resume_deadline_;
  engine::Timer redial_timer_;
  engine::Timer ack_timer_;
  engine::Connector connector_;
  Acceptor* acceptor_ = nullptr;  // the table this accepting side is registered in
  ResumeStats resume_stats_;  // what the connection counts (the session counts the rest)
  uint64_t transport_started_ns_ = 0;  // when the current transport's TCP connection was up
  uint64_t send_started_ns_ = 0;       // when the send in flight was submitted
  uint32_t redial_attempts_ = 0;       // since the last established handshake
  uint64_t jitter_state_ = 0;          // xorshift state for backoff jitter
  bool ended_ = false;                 // the session is over (no resume)
  uint64_t last_received_ns_ = 0;
  uint64_t ping_sent_ns_ = 0;
  uint64_t batches_sent_ = 0;
  MuxError close_reason_ = MuxError::none;
  engine::IoError io_error_ = engine::IoError::none;
  bool closed_reported_ = false;
  bool flushing_ = false;
  bool close_pending_ = false;  // on_connection_closed is due at the end of the entry point
  bool reaping_ = false;
  uint32_t depth_ = 0;
  uint64_t rpc_bytes_buffered_ = 0;  // declared before the requests that are charged to it
  bool final_error_due_ = false;     // the peer is told why once the send in flight is done
  uint64_t batches_at_last_keepalive_ = 0;  // an unchanged count: the connection was idle
  std::vector<StreamId> writable_pending_;  // on_stream_writable, delivered by reap()
  std::vector<StreamId> writable_scratch_;  // reap()'s working copy (capacity kept)
  std::vector<std::unique_ptr<StreamObserver>> finished_;  // owned observers awaiting reap()
  // The order: the token of the ordered request holding it (0: free), those waiting, and
  // the calls the holder made from inside its invocation that are still outstanding.
  uint64_t order_holder_ = 0;
  uint64_t order_next_token_ = 1;
  bool order_in_handler_ = false;  // the holder's handler function is running right now
  bool order_draining_ = false;
  std::deque<std::shared_ptr<OrderedStart>> order_waiting_;
  std::vector<StreamId> order_nested_calls_;
};

}  // namespace ringmux::mux
