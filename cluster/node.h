// Node: one cluster member whose peer sessions are spread over an Engine's loops.
//
// A node runs one Manager per loop (cluster/manager.h). Each peer belongs to one loop, the
// same on both nodes of the pair as far as either can tell: loop_of(peer) =
// Manager::loop_of_key(Manager::pair_key(self, peer), loops). The dialing node opens the session
// from that loop and puts the pair key in its HELLO (route_key, wire/SPEC.md §4.1); the
// accepting node listens on loop 0, whose acceptor reads each HELLO and hands the socket (with
// a handshake stage, TLS: the handshaken transport) to the loop the key names
// (mux/link/loop_placement.h, the hand-over a plain multi-loop server uses too), where that
// loop's manager starts or resumes the session. A resume carries the same key, so it reaches the same
// loop. A client of the cluster (ManagerOptions::client_only) sends no key; its sessions
// are placed by their session id, the same way for every connection of a session. A member
// session that lands on a loop not owning its pair (no key, as from a dialer that predates
// the key, or a key computed from another address for this node) is refused at its
// identify call, and its dialer tries again after a growing backoff: such a dialer gets in
// only when its new session id happens to fall on the right loop. Members of a multi-loop
// node must therefore send the key, and name each other by the addresses they listen on.
//
// Calls from any thread reach the loop that owns the peer: at once when made on that
// loop's thread, else as a task posted to it (the request moved into the task). Callbacks
// run on the owning loop's thread. Quorum calls over a Node fan out to every loop that
// owns one of the configuration's peers (cluster/quorum.h).
//
// Threads: start() and the destructor on a thread that is not one of the engine's loops;
// add_peer, remove_peer, call from any thread; health and stats from any thread but a loop
// thread (they wait for the owning loop's answer); manager(i) on loop i's thread only.
// Lifetime: the Engine outlives the Node; the destructor closes every session and waits
// until every manager is closed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "ringmux/engine/engine.h"
#include "ringmux/cluster/manager.h"

namespace ringmux::cluster {

class Node {
 public:
  // Registers the node's handlers on loop `loop_index`'s manager; run once per loop, on its
  // thread, before that manager serves anything. Handlers run on the loop of their session,
  // so per-loop state needs no lock.
  using Setup = std::function<void(Registry& registry, uint32_t loop_index)>;

  // Builds a manager on every loop of `engine` and, unless options.client_only, listens on
  // `self` from loop 0 (port 0 picks one: self() tells which). Errors: the listener's.
  static Result<std::unique_ptr<Node>, engine::IoError> start(engine::Engine& engine, const engine::Address& self,
                                                              const ManagerOptions& options, const Setup& setup);
  // Closes every session and the listener, waits until every manager has closed (bounded
  // by the sessions' own close), and destroys the managers on their loops.
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  const engine::Address& self() const noexcept { return self_; }
  uint32_t loop_count() const noexcept { return static_cast<uint32_t>(managers_.size()); }
  // The loop that owns the session with `peer`.
  uint32_t loop_of(const engine::Address& peer) const noexcept;
  // The loop an accepted session belongs to, from its HELLO.
  uint32_t loop_of(const wire::Hello& hello) const noexcept;
  engine::Engine& engine() noexcept { return engine_; }
  // Loop `index`'s manager: use it on that loop's thread only (taking the reference, to
  // use it in a task posted there, is fine from any thread).
  Manager& manager(uint32_t index) noexcept { return *managers_[index]; }

  // Any thread; take effect on the peer's loop (Manager::add_peer, remove_peer).
  void add_peer(const engine::Address& peer);
  void add_peer(const engine::Address& peer, const engine::Address& via);  // Manager::add_peer
  void remove_peer(const engine::Address& peer);

  // A unary call to `peer` from any thread (Manager::call on the peer's loop: same waiting
  // for the session, same errors). `done` runs once, on that loop's thread.
  void call(const engine::Address& peer, uint32_t handler_id, std::vector<std::byte> request, uint64_t deadline_ns,
            CallCallback done);

  // A stream to `peer` from any thread (Manager::open_stream on the peer's loop: same
  // waiting and errors). `observer`'s events and `opened` run on that loop's thread; write
  // on the stream there (Loop::run_or_post to reach it).
  void open_stream(const engine::Address& peer, uint32_t handler_id, uint64_t deadline_ns,
                   std::vector<std::byte> payload, bool end_stream, StreamObserver& observer, StreamOpened opened);
  // The loop that owns `peer`'s session (its streams' writes go there).
  engine::Loop& loop_of_peer(const engine::Address& peer) noexcept { return engine_.loop(loop_of(peer)); }

  // Not on a loop thread: ask the owning loop and wait for its answer.
  PeerHealth health(const engine::Address& peer);
  // Sums over the loops' managers.
  ManagerStats stats();
  // Sessions with peers per loop (identified ones), in loop order.
  std::vector<std::size_t> sessions_per_loop();

 private:
  Node(engine::Engine& engine, const engine::Address& self) noexcept : engine_(engine), self_(self) {}
  // Runs `fn` on loop `index` and waits for it (directly when already there).
  template <typename F>
  void run_on(uint32_t index, F&& fn);

  engine::Engine& engine_;
  engine::Address self_;
  std::vector<std::unique_ptr<Manager>> managers_;  // one per loop, each made and destroyed there
};

}  // namespace ringmux::cluster
