// Manager: one node's sessions with its peers (the grid). One resumable session per pair
// of nodes; either side calls the other over it and serves the same handlers on it.
//
// Which side dials is decided from the two addresses alone, the same way on both nodes
// (dials(): XXH3 of the ordered pair), so two nodes never race two connections. The
// dialing side connects as soon as the peer is added and keeps the session up: it
// resumes it when the TCP connection breaks (ConnectionOptions::resume) and starts a new
// one, after a backoff, when the session is lost. The accepting side cannot dial; its
// sessions arrive through its listener (mux::Acceptor), and the dialer's first call names
// the node it comes from (an identify call on a reserved handler id), after which the
// session serves this node's calls to that peer too. A client of the cluster
// (ManagerOptions::client_only) dials every peer and names no address: members serve its
// calls on that session and never call it.
//
// Calls and streams: call() or open_stream() to a peer whose session is not up
// (connecting, resuming, not yet identified) waits, up to its deadline, for it to come up:
// queued here, or in the session while it resumes. Then it fails with deadline_exceeded
// and a message naming the peer; a session whose identify call the peer does not serve (a
// plain server, not a member) fails it at once with that call's error (unknown_handler). A call is cancellable (cancel()) in both states; the peer sees a RESET. A call's
// callback never runs inside the call on the manager that started, cancelled or ended it
// (call, cancel, remove_peer, close): it runs on a later turn of the loop, and runs even
// when the manager has been destroyed meanwhile.
//
// Health per peer: state (connecting, connected, resuming, lost), last RTT, resumes.
//
// Threads: a Manager and all its sessions live on one loop; every member is called on that
// loop's thread. A node spread over an Engine's loops has one Manager per loop, each with
// the peers placed on its loop (cluster/node.h); its dialed sessions carry the pair's key in
// their HELLO (route_key) so that the accepting node's listening loop hands them over.
// Lifetime: close() ends every session; the manager may be destroyed once closed().
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "ringmux/engine/loop.h"
#include "ringmux/engine/socket.h"
#include "ringmux/engine/timer.h"
#include "ringmux/mux/link/acceptor.h"
#include "ringmux/mux/link/connection.h"
#include "ringmux/mux/rpc/call.h"
#include "ringmux/mux/rpc/registry.h"
#include "ringmux/mux/session/stream_table.h"

namespace ringmux::cluster {

// The cluster layer speaks the mux layer's vocabulary.
using mux::Acceptor;
using mux::CallCallback;
using mux::CallResult;
using mux::Connection;
using mux::ConnectionObserver;
using mux::ConnectionOptions;
using mux::ConnectionSnapshot;
using mux::MuxError;
using mux::Registry;
using mux::Responder;
using mux::StreamId;
using mux::StreamObserver;
using mux::StreamStart;

// Reserved handler id of the dialer's identify call (the application may not use it).
inline constexpr uint32_t manager_identify_handler = 0xffff'ff00u;

struct ManagerOptions {
  ConnectionOptions connection;  // resume is always on; `peer` is set per peer
  uint64_t reconnect_backoff_ns_min = limits::redial_backoff_ns_min;  // after a lost session
  uint64_t reconnect_backoff_ns_max = limits::redial_backoff_ns_max;
  // A client of the cluster, not a member: it dials every peer whatever dials() says and
  // does not listen (start() is not called). Members accept it like any node that
  // identifies itself; they never dial it.
  bool client_only = false;
  // Set by mux::Node for the manager of loop `loop_index` of `loop_count`: it owns the peers
  // whose pair key falls on its loop (Node::loop_of) and refuses a session that identifies
  // as another loop's peer (a dialer whose HELLO route key did not match).
  uint32_t loop_index = 0;
  uint32_t loop_count = 1;
  // The stage every session with a peer passes, dialed or accepted (mux/link/tls.h: mutual
  // TLS); nullptr: plain TCP. An accepting manager with one keeps each session on its own
  // loop (mux::Acceptor), so a Node with one has a single loop.
  std::shared_ptr<mux::Handshake> handshake;
};

enum class PeerState : uint8_t {
  connecting,  // no session yet (dialing, or waiting for the peer to dial and identify)
  connected,   // the session is up
  resuming,    // the session's TCP connection broke; it is resuming
  lost,        // the session was lost; the dialing side starts a new one after a backoff
};
const char* describe(PeerState state) noexcept;

struct PeerHealth {
  PeerState state = PeerState::connecting;
  uint64_t rtt_ns = 0;     // last keepalive round trip (0: none measured yet)
  uint64_t resumes = 0;    // of the current session
  uint64_t sessions = 0;   // sessions started with this peer
};

// One peer at one moment (Manager::snapshot).
struct PeerSnapshot {
  std::string name;  // the peer's address
  PeerHealth health;
  bool has_session = false;       // `session` holds the session's statistics
  ConnectionSnapshot session;
};

// Totals of a manager, for statistics.
struct ManagerStats {
  uint64_t connections_accepted = 0;  // TCP connections its listener accepted
  uint64_t sessions = 0;              // sessions started with peers (dialed or identified)
  uint64_t resumes = 0;               // resumes of those sessions
};

// A stream opened to a peer: write on it through `connection` (Connection::write, end,
// consume...) with `id`, on the loop that owns the peer.
struct PeerStream {
  Connection* connection = nullptr;
  StreamId id = 0;
};
// Why a stream could not be opened (with the peer's name or the cause), or the stream.
struct StreamOpenResult {
  MuxError error = MuxError::none;
  std::string message;
  PeerStream stream;
};
using StreamOpened = std::function<void(const StreamOpenResult& result)>;

// A call in flight or waiting, for cancel().
struct CallHandle {
  uint64_t value = 0;  // 0: none (the call completed at once)
};

class Manager final : public engine::ListenerHandler, public ConnectionObserver {
 public:
  Manager(engine::Loop& loop, const engine::Address& self, const ManagerOptions& options = {});
  ~Manager();
  Manager(const Manager&) = delete;
  Manager& operator=(const Manager&) = delete;

  // Handlers served on every peer session: register them before start().
  Registry& registry() noexcept { return registry_; }
  // Listens on the address given at construction. Error: the listener's.
  Result<void, engine::IoError> start() noexcept;
  // Ends every session and stops listening; closed() once all of it is done.
  void close() noexcept;
  bool closed() const noexcept;

  void add_peer(const engine::Address& peer) noexcept;
  // A peer reached through another address (a relay, a port forward, the chaos proxy in
  // tests): `peer` names it (who dials, the route key, the identify call: the address it
  // listens on), `via` is where this node connects when it is the one that dials.
  void add_peer(const engine::Address& peer, const engine::Address& via) noexcept;
  // Ends the session with `peer` (its calls fail with cancelled); a session it dials is
  // refused until the peer is added again.
  void remove_peer(const engine::Address& peer) noexcept;

  // True when `self` dials `peer` (both nodes compute the same answer).
  static bool dials(const engine::Address& self, const engine::Address& peer) noexcept;
  // XXH3 of the ordered address pair, never 0: the same on both nodes. It decides who
  // dials, and on which loop each node keeps the pair's session (cluster/node.h).
  static uint64_t pair_key(const engine::Address& a, const engine::Address& b) noexcept;
  // The loop (of `loops`) that owns the pair or route key `key`.
  static uint32_t loop_of_key(uint64_t key, uint32_t loops) noexcept;

  // A unary call to `peer` (added before); `done` runs once on the loop thread, after this
  // returns. Waits for the session up to `deadline_ns` (monotonic clock; 0: no deadline,
  // then it waits while the peer is known). Errors: those of mux::call, deadline_exceeded
  // (with a message naming the peer when the session never came up), unknown_handler for a
  // peer that was never added (or was removed), cancelled.
  CallHandle call(const engine::Address& peer, uint32_t handler_id, std::span<const std::byte> request,
                  uint64_t deadline_ns, CallCallback done) noexcept;
  // Cancels a call: RESET(cancelled) to the peer if it was sent, `done` with cancelled on
  // a later turn (unless it completed before).
  void cancel(CallHandle handle) noexcept;

  // A stream to `peer` (added before), opened once its session is up: waits as call()
  // does, up to `deadline_ns` (also the stream's deadline at the peer). `payload` (copied
  // while it waits) goes with the OPEN, as Connection::open takes it. `observer` receives
  // the stream's events once it is open; the caller keeps it alive until its
  // on_stream_finished (it hears nothing when the open fails). `opened` runs once on the
  // loop thread, after this returns: with the stream, or why not (deadline_exceeded naming
  // the peer, unknown_handler for an unknown peer or one that is no cluster member,
  // cancelled by remove_peer or close, or Connection::open's errors).
  void open_stream(const engine::Address& peer, uint32_t handler_id, uint64_t deadline_ns,
                   std::span<const std::byte> payload, bool end_stream, StreamObserver& observer,
                   StreamOpened opened);

  PeerHealth health(const engine::Address& peer) const noexcept;
  const ManagerStats& stats() const noexcept { return stats_; }
  // Every peer's health and session statistics now (loop thread; from another thread
  // through loop().run_sync, which copies them there).
  std::vector<PeerSnapshot> snapshot() const;
  // The session with `peer` when it is up, else nullptr.
  Connection* session(const engine::Address& peer) noexcept;
  // Peers whose session is up (identified), resuming ones included.
  std::size_t session_count() const noexcept;
  const engine::Address& self() const noexcept { return self_; }
  // For a manager that does not listen itself (another loop's manager of the same node
  // listens): the node's address once its listener picked the port. Before any peer is added.
  void set_self(const engine::Address& self) noexcept;
  // Its acceptor: takes sockets whose HELLO another loop read (cluster/node.h).
  Acceptor& acceptor() noexcept { return acceptor_; }
  engine::Loop& loop() noexcept { return loop_; }

  // ConnectionObserver, ListenerHandler
  void on_connection_closed(Connection& connection, MuxError error, engine::IoError io_error) noexcept override;
  void on_connection_resumed(Connection& connection, uint64_t duration_ns) noexcept override;
  void on_accept(int fd) noexcept override;
  void on_accept_error(engine::IoError error) noexcept override;
  void on_listener_closed() noexcept override;

 private:
  struct Peer;
  // A peer's health: its own record, with its session's state and RTT when it has one.
  static PeerHealth health_of(const Peer& peer) noexcept;
  // A call or a stream open waiting for the session.
  struct Waiting {
    uint64_t handle;
    uint32_t handler_id;
    std::vector<std::byte> request;
    uint64_t deadline_ns;
    CallCallback done;                    // a call's
    StreamObserver* observer = nullptr;   // a stream's (then `opened` and `end_stream`)
    StreamOpened opened;
    bool end_stream = false;
  };
  struct Sent {
    Connection* connection;
    StreamId id;      // 0 until mux::call returned
    CallCallback done;
  };

  // True when `peer` belongs to this manager's loop (always, for a manager on its own).
  bool owns(const engine::Address& peer) const noexcept;
  // The acceptor's options (the handshake stage), and those of an accepted session.
  static mux::AcceptorOptions accepting_options(const ManagerOptions& options);
  ConnectionOptions accepted_options() const;
  Peer* find(const engine::Address& address) noexcept;
  const Peer* find(const engine::Address& address) const noexcept;
  Peer* find(const Connection& connection) noexcept;
  void dial(Peer& peer) noexcept;
  // The session with `peer` is up and identified: waiting calls go out.
  void on_session_up(Peer& peer) noexcept;
  void send(Peer& peer, uint64_t handle, uint32_t handler_id, std::span<const std::byte> request,
            uint64_t deadline_ns, CallCallback done) noexcept;
  void arm_waiting_timer(Peer& peer) noexcept;
  // Fails every call and stream open waiting for `peer`'s session with `error`
  // (complete_later).
  void fail_waiting(Peer& peer, MuxError error, const std::string& message = {}) noexcept;
  void fail_waiting_one(Waiting& waiting, MuxError error, std::string message) noexcept;
  // Runs `done` with `error` on a later turn of the loop (a task that owns it).
  void complete_later(CallCallback done, MuxError error, std::string message) noexcept;
  void complete_later(StreamOpened opened, StreamOpenResult result) noexcept;
  // Opens a waiting (or new) stream on `peer`'s session; `opened` hears on a later turn.
  void open_on(Peer& peer, uint32_t handler_id, uint64_t deadline_ns, std::span<const std::byte> payload,
               bool end_stream, StreamObserver& observer, StreamOpened opened) noexcept;
  // The wait before dialing `peer` again (counts the attempt).
  uint64_t reconnect_delay(Peer& peer) noexcept;
  static void on_waiting_timer(engine::Timer& timer) noexcept;
  static void on_reconnect_timer(engine::Timer& timer) noexcept;

  engine::Loop& loop_;
  engine::Address self_;
  ManagerOptions options_;
  Registry registry_;
  engine::Listener listener_;
  Acceptor acceptor_;
  std::vector<std::unique_ptr<Peer>> peers_;
  // Accepted sessions not identified yet (the peer's identify call names them).
  std::vector<std::unique_ptr<Connection>> accepted_;
  // Sessions whose close has not been reported yet, kept until it is.
  std::vector<std::unique_ptr<Connection>> closing_;
  // By handle: calls in flight (their callbacks, and what cancel() needs); no allocation
  // per call once the table has grown.
  mux::StreamTable<Sent, uint64_t> sent_;
  uint64_t next_handle_ = 1;
  ManagerStats stats_;
  bool closing_all_ = false;
  bool listener_closed_ = true;
};

}  // namespace ringmux::cluster
