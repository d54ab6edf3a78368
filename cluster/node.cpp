#include "ringmux/cluster/node.h"

#include <chrono>
#include <thread>

#include "ringmux/base/assert.h"
#include "ringmux/mux/link/loop_placement.h"

namespace ringmux::cluster {

namespace {

// How long the destructor waits for the managers to close: each session's close is bounded
// by its own timeouts, far below this; past it the node is destroyed anyway (asserted).
constexpr auto close_wait_max = std::chrono::seconds(30);
constexpr auto close_poll = std::chrono::milliseconds(1);

}  // namespace

template <typename F>
void Node::run_on(uint32_t index, F&& fn) {
  engine::Loop& loop = engine_.loop(index);
  for (uint32_t i = 0; i < loop_count() && !loop.on_loop_thread(); i++) {
    RM_ASSERT(!engine_.loop(i).on_loop_thread());  // one loop waiting on another could deadlock
  }
  loop.run_sync(std::forward<F>(fn));
}

Result<std::unique_ptr<Node>, engine::IoError> Node::start(engine::Engine& engine, const engine::Address& self,
                                                           const ManagerOptions& options, const Setup& setup) {
  std::unique_ptr<Node> node(new Node(engine, self));
  Node& n = *node;
  n.managers_.resize(engine.loop_count());
  // The other loops' managers first: once loop 0 listens, its router may hand them sockets.
  auto make = [&](uint32_t i) {
    ManagerOptions loop_options = options;
    loop_options.loop_index = i;
    loop_options.loop_count = n.loop_count();
    n.managers_[i] = std::make_unique<Manager>(engine.loop(i), self, loop_options);
    setup(n.managers_[i]->registry(), i);
  };
  for (uint32_t i = 1; i < n.loop_count(); i++) n.run_on(i, [&] { make(i); });
  Result<void, engine::IoError> listened{};
  n.run_on(0, [&] {
    make(0);
    Manager& first = *n.managers_[0];
    if (n.loop_count() > 1) {
      // The listening loop hands each socket to the loop that owns its session.
      std::vector<mux::Acceptor*> acceptors;
      for (auto& manager : n.managers_) acceptors.push_back(&manager->acceptor());
      first.acceptor().set_router(mux::hand_over_router(n.engine_, 0, std::move(acceptors)));
    }
    if (options.client_only) return;
    listened = first.start();
    if (listened) n.self_ = first.self();
  });
  if (!listened) return Err{listened.error()};
  if (self.port() == 0 && !options.client_only) {
    // The port is known only now, and only here: no peer can have dialed it yet.
    for (uint32_t i = 1; i < n.loop_count(); i++) n.run_on(i, [&] { n.managers_[i]->set_self(n.self_); });
  }
  return node;
}

Node::~Node() {
  for (uint32_t i = 0; i < loop_count(); i++) {
    run_on(i, [&] {
      if (managers_[i] && !managers_[i]->closed()) managers_[i]->close();
    });
  }
  const auto give_up = std::chrono::steady_clock::now() + close_wait_max;
  for (uint32_t i = 0; i < loop_count(); i++) {
    bool closed = false;
    while (!closed && std::chrono::steady_clock::now() < give_up) {
      run_on(i, [&] { closed = !managers_[i] || managers_[i]->closed(); });
      if (!closed) std::this_thread::sleep_for(close_poll);
    }
    RM_ASSERT(closed);
  }
  for (uint32_t i = 0; i < loop_count(); i++) run_on(i, [&] { managers_[i].reset(); });
}

uint32_t Node::loop_of(const engine::Address& peer) const noexcept {
  return Manager::loop_of_key(Manager::pair_key(self_, peer), loop_count());
}

uint32_t Node::loop_of(const wire::Hello& hello) const noexcept { return mux::loop_of_hello(hello, loop_count()); }

void Node::add_peer(const engine::Address& peer) { add_peer(peer, peer); }

void Node::add_peer(const engine::Address& peer, const engine::Address& via) {
  const uint32_t index = loop_of(peer);
  Manager* manager = managers_[index].get();
  engine_.loop(index).run_or_post([manager, peer, via] { manager->add_peer(peer, via); });
}

void Node::remove_peer(const engine::Address& peer) {
  const uint32_t index = loop_of(peer);
  Manager* manager = managers_[index].get();
  engine_.loop(index).run_or_post([manager, peer] { manager->remove_peer(peer); });
}

void Node::call(const engine::Address& peer, uint32_t handler_id, std::vector<std::byte> request, uint64_t deadline_ns,
                CallCallback done) {
  const uint32_t index = loop_of(peer);
  Manager* manager = managers_[index].get();
  engine_.loop(index).run_or_post([manager, peer, handler_id, request = std::move(request), deadline_ns,
                                   done = std::move(done)]() mutable {
    manager->call(peer, handler_id, request, deadline_ns, std::move(done));
  });
}

void Node::open_stream(const engine::Address& peer, uint32_t handler_id, uint64_t deadline_ns,
                       std::vector<std::byte> payload, bool end_stream, StreamObserver& observer,
                       StreamOpened opened) {
  const uint32_t index = loop_of(peer);
  Manager* manager = managers_[index].get();
  engine_.loop(index).run_or_post([manager, peer, handler_id, deadline_ns, payload = std::move(payload), end_stream,
                                   &observer, opened = std::move(opened)]() mutable {
    manager->open_stream(peer, handler_id, deadline_ns, payload, end_stream, observer, std::move(opened));
  });
}

PeerHealth Node::health(const engine::Address& peer) {
  const uint32_t index = loop_of(peer);
  PeerHealth health;
  run_on(index, [&] { health = managers_[index]->health(peer); });
  return health;
}

ManagerStats Node::stats() {
  ManagerStats total;
  for (uint32_t i = 0; i < loop_count(); i++) {
    run_on(i, [&] {
      const ManagerStats& stats = managers_[i]->stats();
      total.connections_accepted += stats.connections_accepted;
      total.sessions += stats.sessions;
      total.resumes += stats.resumes;
    });
  }
  return total;
}

std::vector<std::size_t> Node::sessions_per_loop() {
  std::vector<std::size_t> counts(loop_count());
  for (uint32_t i = 0; i < loop_count(); i++) run_on(i, [&] { counts[i] = managers_[i]->session_count(); });
  return counts;
}

}  // namespace ringmux::cluster
