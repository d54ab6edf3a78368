#include "ringmux/cluster/manager.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <string_view>

#include "ringmux/base/assert.h"
#include "ringmux/mux/link/loop_placement.h"

namespace ringmux::cluster {

namespace {

std::span<const std::byte> bytes_of(std::string_view text) noexcept {
  return {reinterpret_cast<const std::byte*>(text.data()), text.size()};
}

// Server side of the identify call: the dialer names itself; the manager files the session
// under that peer and the answer ("ok") ends the call. A refused session gets no answer: the
// manager closes it (the dialer then backs off before it tries again).
class IdentifyStream final : public StreamObserver {
 public:
  // Returns true when the session was accepted; false when it was refused (and closed).
  using Identify = std::function<bool(Connection&, std::string_view)>;
  IdentifyStream(const StreamStart& start, Identify identify)
      : connection_(*start.connection), id_(start.id), identify_(std::move(identify)) {}
  void on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept override {
    connection_.consume(id_, bytes.size());
    name_.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    if (!end_stream) return;
    // May replace (and close) an older session of that peer, or refuse this one.
    if (identify_(connection_, name_)) (void)connection_.write(id_, bytes_of("ok"), true);
  }
  void on_stream_finished(MuxError) noexcept override {}

 private:
  Connection& connection_;
  StreamId id_;
  Identify identify_;
  std::string name_;
};

}  // namespace

const char* describe(PeerState state) noexcept {
  switch (state) {
    case PeerState::connecting: return "connecting";
    case PeerState::connected: return "connected";
    case PeerState::resuming: return "resuming";
    case PeerState::lost: return "lost";
  }
  return "unknown";
}

struct Manager::Peer final : engine::ConnectHandler {
  Peer(Manager& manager_ref, const engine::Address& address_ref)
      : manager(manager_ref), address(address_ref), name(address_ref.to_string()),
        we_dial(manager_ref.options_.client_only || Manager::dials(manager_ref.self_, address_ref)),
        connector(manager_ref.loop_, *this),
        waiting_timer(&Manager::on_waiting_timer, this), reconnect_timer(&Manager::on_reconnect_timer, this),
        // The pair's key differs for every dialer of this peer: their jitter differs too.
        reconnect_backoff(manager_ref.options_.reconnect_backoff_ns_min, manager_ref.options_.reconnect_backoff_ns_max,
                          Manager::pair_key(manager_ref.self_, address_ref), false) {}
  void on_connect(Result<int, engine::IoError> fd) noexcept override;

  Manager& manager;
  engine::Address address;
  engine::Address via;  // where to dial it (address, unless add_peer said otherwise)
  std::string name;
  bool we_dial;
  std::unique_ptr<Connection> connection;  // the session, once it is ours
  bool identified = false;                 // the identify call went through
  bool removed = false;
  engine::Connector connector;
  engine::Timer waiting_timer;
  engine::Timer reconnect_timer;
  std::deque<Waiting> waiting;
  PeerHealth health;
  mux::Backoff reconnect_backoff;  // new sessions after lost ones
};

mux::AcceptorOptions Manager::accepting_options(const ManagerOptions& options) {
  mux::AcceptorOptions accepting;
  accepting.handshake = options.handshake;
  return accepting;
}

ConnectionOptions Manager::accepted_options() const {
  ConnectionOptions options = options_.connection;
  options.resume = true;  // the dialer resumes; the acceptor waits for it
  return options;
}

Manager::Manager(engine::Loop& loop, const engine::Address& self, const ManagerOptions& options)
    : loop_(loop), self_(self), options_(options), listener_(loop, *this),
      acceptor_(loop, [this](int fd) {
        accepted_.push_back(std::make_unique<Connection>(loop_, fd, false, &registry_, *this, accepted_options()));
        return accepted_.back().get();
      }, accepting_options(options)) {
  // With a handshake stage the acceptor hands over the transport that ran it.
  acceptor_.set_transport_factory([this](std::unique_ptr<mux::Transport>& transport) {
    accepted_.push_back(
        std::make_unique<Connection>(loop_, std::move(transport), false, &registry_, *this, accepted_options()));
    return accepted_.back().get();
  });
  registry_.add_stream(manager_identify_handler, [this](const StreamStart& start) {
    return new IdentifyStream(start, [this](Connection& connection, std::string_view name) -> bool {
      if (name.empty()) return true;  // a client of the cluster: served, never called
      auto parsed = engine::Address::parse(name);
      if (!parsed) {
        connection.close(MuxError::protocol_violation);
        return false;
      }
      if (!owns(parsed.value())) {
        // Another loop of this node owns that peer: a session here would never be found by
        // the node's calls (the dialer computed a different route key: its address for us
        // is not the one we listen on, or it sent no route key).
        connection.close(MuxError::refused);
        return false;
      }
      Peer* peer = find(parsed.value());
      if (peer != nullptr && peer->removed) {
        connection.close(MuxError::cancelled);  // removed here: its dialer is not let back in
        return false;
      }
      if (peer == nullptr) {
        // A node we were not told of: it is a peer from now on.
        add_peer(parsed.value());
        peer = find(parsed.value());
      }
      auto it = std::find_if(accepted_.begin(), accepted_.end(), [&](auto& c) { return c.get() == &connection; });
      if (it == accepted_.end()) return true;  // identified twice: the first one counts
      if (peer->connection) {
        // The peer started a new session (it restarted, or lost the old one): the old goes.
        closing_.push_back(std::move(peer->connection));
        closing_.back()->close(MuxError::cancelled);
      }
      peer->connection = std::move(*it);
      accepted_.erase(it);
      peer->identified = true;
      peer->health.sessions++;
      stats_.sessions++;
      on_session_up(*peer);
      return true;
    });
  });
}

Manager::~Manager() {
  RM_ASSERT(closed());
  for (auto& peer : peers_) {
    loop_.timer_cancel(peer->waiting_timer);
    loop_.timer_cancel(peer->reconnect_timer);
  }
}

uint64_t Manager::pair_key(const engine::Address& a, const engine::Address& b) noexcept {
  // The hash of "x|y", x and y the two addresses' texts in order: on the stack, since a
  // node's calls compute it per call (Node::loop_of).
  std::array<char, engine::Address::text_bytes_max> x_text, y_text;
  std::string_view x(x_text.data(), a.format(x_text));
  std::string_view y(y_text.data(), b.format(y_text));
  if (y < x) std::swap(x, y);
  std::array<char, 2 * engine::Address::text_bytes_max + 1> pair;
  std::memcpy(pair.data(), x.data(), x.size());
  pair[x.size()] = '|';
  std::memcpy(pair.data() + x.size() + 1, y.data(), y.size());
  const uint64_t key = XXH3_64bits(pair.data(), x.size() + 1 + y.size());
  return key != 0 ? key : 1;  // 0 means "no key" in a HELLO
}

bool Manager::dials(const engine::Address& self, const engine::Address& peer) noexcept {
  // Both nodes hash the same ordered pair and read the same bit (bit 0: every version of
  // the manager has read that one): one of them dials.
  const bool self_first = self.to_string() < peer.to_string();
  const bool first_dials = (pair_key(self, peer) & 1) == 0;
  return first_dials == self_first;
}

uint32_t Manager::loop_of_key(uint64_t key, uint32_t loops) noexcept {
  // The accepting node's listening loop places by the same function (loop_placement.h).
  return mux::loop_of_route_key(key, loops);
}

bool Manager::owns(const engine::Address& peer) const noexcept {
  return options_.loop_count <= 1 || loop_of_key(pair_key(self_, peer), options_.loop_count) == options_.loop_index;
}

void Manager::set_self(const engine::Address& self) noexcept {
  RM_ASSERT(peers_.empty());
  self_ = self;
}

Result<void, engine::IoError> Manager::start() noexcept {
  auto listened = listener_.listen(self_);
  if (listened) {
    listener_closed_ = false;
    self_ = listener_.address();  // port 0 picked one
  }
  return listened;
}

void Manager::close() noexcept {
  closing_all_ = true;
  for (auto& peer : peers_) {
    peer->removed = true;
    peer->connector.cancel();
    loop_.timer_cancel(peer->reconnect_timer);
    if (peer->connection && !peer->connection->closed()) peer->connection->close(MuxError::cancelled);
    // Waiting calls fail: no session will come.
    fail_waiting(*peer, MuxError::cancelled);
  }
  // A connection reports its close on a later turn (which erases it from accepted_), never
  // inside close(): the list stays as it is during this walk.
  for (auto& connection : accepted_) {
    if (!connection->closed()) connection->close(MuxError::cancelled);
  }
  acceptor_.close();
  if (!listener_closed_) listener_.close();
}

bool Manager::closed() const noexcept {
  if (!closing_all_ || !listener_closed_ || !acceptor_.idle() || !accepted_.empty() || !closing_.empty()) return false;
  for (const auto& peer : peers_) {
    if (peer->connection || peer->connector.in_progress()) return false;
  }
  return true;
}

Manager::Peer* Manager::find(const engine::Address& address) noexcept {
  for (auto& peer : peers_) {
    if (peer->address == address) return peer.get();
  }
  return nullptr;
}

const Manager::Peer* Manager::find(const engine::Address& address) const noexcept {
  return const_cast<Manager*>(this)->find(address);
}

Manager::Peer* Manager::find(const Connection& connection) noexcept {
  for (auto& peer : peers_) {
    if (peer->connection.get() == &connection) return peer.get();
  }
  return nullptr;
}

void Manager::add_peer(const engine::Address& address) noexcept { add_peer(address, address); }

void Manager::add_peer(const engine::Address& address, const engine::Address& via) noexcept {
  RM_ASSERT(owns(address));
  if (closing_all_) return;
  if (Peer* known = find(address)) {
    known->via = via;  // the next dial (or redial) goes there
    if (!known->removed) return;
    known->removed = false;  // added again after remove_peer()
    known->reconnect_backoff.reset();
    if (known->we_dial) dial(*known);
    return;
  }
  peers_.push_back(std::make_unique<Peer>(*this, address));
  Peer& peer = *peers_.back();
  peer.via = via;
  if (peer.we_dial) dial(peer);
}

void Manager::remove_peer(const engine::Address& address) noexcept {
  Peer* peer = find(address);
  if (peer == nullptr) return;
  peer->removed = true;
  peer->connector.cancel();
  loop_.timer_cancel(peer->reconnect_timer);
  loop_.timer_cancel(peer->waiting_timer);
  fail_waiting(*peer, MuxError::cancelled);
  if (peer->connection && !peer->connection->closed()) peer->connection->close(MuxError::cancelled);
}

void Manager::fail_waiting(Peer& peer, MuxError error, const std::string& message) noexcept {
  std::deque<Waiting> waiting = std::move(peer.waiting);
  peer.waiting.clear();
  loop_.timer_cancel(peer.waiting_timer);
  for (auto& w : waiting) fail_waiting_one(w, error, message);
}

void Manager::fail_waiting_one(Waiting& waiting, MuxError error, std::string message) noexcept {
  if (waiting.observer != nullptr) {
    StreamOpenResult result;
    result.error = error;
    result.message = std::move(message);
    complete_later(std::move(waiting.opened), std::move(result));
    return;
  }
  complete_later(std::move(waiting.done), error, std::move(message));
}

void Manager::complete_later(StreamOpened opened, StreamOpenResult result) noexcept {
  loop_.post_fn([opened = std::move(opened), result = std::move(result)] { opened(result); });
}

void Manager::complete_later(CallCallback done, MuxError error, std::string message) noexcept {
  // The task owns the callback and the result: it runs on a later turn even when this
  // manager is gone by then. A control path (one allocation per failed call).
  loop_.post_fn([done = std::move(done), error, message = std::move(message)]() mutable {
    CallResult result;
    result.error = error;
    result.message = std::move(message);
    done(result);
  });
}

void Manager::dial(Peer& peer) noexcept {
  RM_ASSERT(peer.we_dial);  // of each pair exactly one side dials (dials())
  if (peer.removed || peer.connector.in_progress() || peer.connection) return;
  peer.health.state = PeerState::connecting;
  peer.connector.connect(peer.via, options_.connection.connect_timeout_ms);
}

void Manager::Peer::on_connect(Result<int, engine::IoError> fd) noexcept {
  if (removed) {
    if (fd) ::close(fd.value());
    return;
  }
  if (!fd) {
    // Not there (yet): try again after a backoff; waiting calls keep their deadlines.
    manager.loop_.timer_start(reconnect_timer, manager.reconnect_delay(*this));
    return;
  }
  RM_ASSERT(connection == nullptr && we_dial);  // one session per pair, dialed by one side
  ConnectionOptions options = manager.options_.connection;
  options.resume = true;
  options.peer = via;  // the resume redials where this connection went
  options.handshake = manager.options_.handshake;  // the first transport and every redial
  // A member's session names the pair: the peer keeps it on the loop that owns the pair.
  if (!manager.options_.client_only) options.session.route_key = Manager::pair_key(manager.self_, address);
  connection = std::make_unique<Connection>(manager.loop_, fd.value(), true, &manager.registry_, manager, options);
  connection->start();
  identified = false;
  health.sessions++;
  manager.stats_.sessions++;
  health.resumes = 0;
  // A client names no address: members serve it but never file it as a peer.
  const std::string self_name = manager.options_.client_only ? std::string() : manager.self_.to_string();
  Connection* session = connection.get();
  mux::call(*connection, manager_identify_handler, bytes_of(self_name), 0, [this, session](const CallResult& result) {
    if (connection.get() != session) return;
    if (result.error == MuxError::unknown_handler || result.error == MuxError::refused) {
      // The peer does not serve the cluster (a plain server) or will not take this session
      // (another loop owns the pair): what waits for the session hears it now, not at its
      // deadline. The session goes; the next one comes after the backoff.
      manager.fail_waiting(*this, result.error,
                           "peer " + name + " refused the cluster's identify call: " + mux::describe(result.error) +
                               (result.error == MuxError::unknown_handler ? " (not a cluster member?)" : ""));
      connection->close(MuxError::cancelled);
      return;
    }
    if (result.error != MuxError::none) return;  // the session's close reports it
    identified = true;
    reconnect_backoff.reset();
    manager.on_session_up(*this);
  });
}

uint64_t Manager::reconnect_delay(Peer& peer) noexcept {
  // Exponential with jitter from the minimum; reset when a session is accepted (identify).
  return peer.reconnect_backoff.next_delay_ns();
}

void Manager::on_reconnect_timer(engine::Timer& timer) noexcept {
  Peer& peer = *static_cast<Peer*>(timer.context());
  peer.manager.dial(peer);
}

void Manager::on_session_up(Peer& peer) noexcept {
  RM_ASSERT(peer.connection != nullptr && peer.identified && !peer.removed);
  peer.health.state = PeerState::connected;
  std::deque<Waiting> waiting = std::move(peer.waiting);
  loop_.timer_cancel(peer.waiting_timer);
  for (auto& w : waiting) {
    if (w.observer != nullptr) {
      open_on(peer, w.handler_id, w.deadline_ns, w.request, w.end_stream, *w.observer, std::move(w.opened));
    } else {
      send(peer, w.handle, w.handler_id, w.request, w.deadline_ns, std::move(w.done));
    }
  }
}

void Manager::open_stream(const engine::Address& address, uint32_t handler_id, uint64_t deadline_ns,
                          std::span<const std::byte> payload, bool end_stream, StreamObserver& observer,
                          StreamOpened opened) {
  Peer* peer = find(address);
  if (peer == nullptr || peer->removed) {
    StreamOpenResult result;
    result.error = MuxError::unknown_handler;
    result.message = "unknown peer " + address.to_string();
    complete_later(std::move(opened), std::move(result));
    return;
  }
  if (peer->connection && peer->identified) {
    open_on(*peer, handler_id, deadline_ns, payload, end_stream, observer, std::move(opened));
    return;
  }
  Waiting waiting{next_handle_++, handler_id, std::vector<std::byte>(payload.begin(), payload.end()), deadline_ns, {}};
  waiting.observer = &observer;
  waiting.opened = std::move(opened);
  waiting.end_stream = end_stream;
  peer->waiting.push_back(std::move(waiting));
  arm_waiting_timer(*peer);
}

void Manager::open_on(Peer& peer, uint32_t handler_id, uint64_t deadline_ns, std::span<const std::byte> payload,
                      bool end_stream, StreamObserver& observer, StreamOpened opened) noexcept {
  Connection* connection = peer.connection.get();
  RM_ASSERT(connection != nullptr && peer.identified);
  auto id = connection->open(handler_id, deadline_ns, payload, end_stream, observer);
  StreamOpenResult result;
  if (id) {
    result.stream = PeerStream{connection, id.value()};
  } else {
    result.error = id.error();
    result.message = "opening a stream to peer " + peer.name + ": " + mux::describe(id.error());
  }
  complete_later(std::move(opened), std::move(result));
}

CallHandle Manager::call(const engine::Address& address, uint32_t handler_id, std::span<const std::byte> request,
                         uint64_t deadline_ns, CallCallback done) noexcept {
  Peer* peer = find(address);
  if (peer == nullptr || peer->removed) {
    complete_later(std::move(done), MuxError::unknown_handler, "unknown peer " + address.to_string());
    return {};
  }
  const uint64_t handle = next_handle_++;
  if (peer->connection && peer->identified) {
    // The session is up (or resuming, and then it queues the call itself): no copy here.
    send(*peer, handle, handler_id, request, deadline_ns, std::move(done));
  } else {
    // Copy: the request waits for the session.
    peer->waiting.push_back(Waiting{handle, handler_id, std::vector<std::byte>(request.begin(), request.end()),
                                    deadline_ns, std::move(done)});
    arm_waiting_timer(*peer);
  }
  return {handle};
}

void Manager::send(Peer& peer, uint64_t handle, uint32_t handler_id, std::span<const std::byte> request,
                   uint64_t deadline_ns, CallCallback done) noexcept {
  Connection* connection = peer.connection.get();
  RM_ASSERT(connection != nullptr && peer.identified && handle != 0 && sent_.find(handle) == nullptr);
  // The call's entry in sent_ goes when it completes (its callback taken out first), never
  // inside mux::call: a call that fails at once completes on a later turn (id 0 then:
  // nothing to cancel).
  const StreamId id = mux::call(*connection, handler_id, request, deadline_ns, [this, handle](const CallResult& result) {
    Sent* sent = sent_.find(handle);
    RM_ASSERT(sent != nullptr);
    CallCallback finish = std::move(sent->done);
    sent_.erase(handle);
    finish(result);
  });
  sent_.emplace(handle, Sent{connection, id, std::move(done)});
}

void Manager::cancel(CallHandle handle) noexcept {
  if (handle.value == 0) return;
  for (auto& peer : peers_) {
    for (auto it = peer->waiting.begin(); it != peer->waiting.end(); ++it) {
      if (it->handle != handle.value || it->observer != nullptr) continue;
      CallCallback done = std::move(it->done);
      peer->waiting.erase(it);
      complete_later(std::move(done), MuxError::cancelled, {});
      return;
    }
  }
  // `done` hears cancelled on the connection's next turn (or its own outcome, when it
  // completed already and waits for that turn: a cancel changes nothing then).
  const Sent* sent = sent_.find(handle.value);
  if (sent != nullptr && sent->id != 0) sent->connection->cancel(sent->id);
}

void Manager::arm_waiting_timer(Peer& peer) noexcept {
  uint64_t earliest = UINT64_MAX;
  for (const auto& w : peer.waiting) {
    if (w.deadline_ns != 0) earliest = std::min(earliest, w.deadline_ns);
  }
  loop_.timer_cancel(peer.waiting_timer);
  if (earliest == UINT64_MAX) return;
  const uint64_t now = engine::Loop::clock_ns();
  loop_.timer_start(peer.waiting_timer, earliest > now ? earliest - now : 0);
}

void Manager::on_waiting_timer(engine::Timer& timer) noexcept {
  Peer& peer = *static_cast<Peer*>(timer.context());
  const uint64_t now = engine::Loop::clock_ns();
  std::vector<Waiting> expired;
  for (auto it = peer.waiting.begin(); it != peer.waiting.end();) {
    if (it->deadline_ns != 0 && it->deadline_ns <= now) {
      expired.push_back(std::move(*it));
      it = peer.waiting.erase(it);
    } else {
      ++it;
    }
  }
  peer.manager.arm_waiting_timer(peer);
  for (auto& w : expired) {
    std::string message = "no session with peer " + peer.name + " before the deadline";
    if (w.observer != nullptr) {
      StreamOpenResult result;
      result.error = MuxError::deadline_exceeded;
      result.message = std::move(message);
      w.opened(result);
      continue;
    }
    CallResult result;
    result.error = MuxError::deadline_exceeded;
    result.message = std::move(message);
    w.done(result);
  }
}

void Manager::on_connection_closed(Connection& connection, MuxError, engine::IoError) noexcept {
  // Destroying the connection here is allowed: this is its last callback.
  auto drop = [&](std::vector<std::unique_ptr<Connection>>& list) {
    auto it = std::find_if(list.begin(), list.end(), [&](auto& c) { return c.get() == &connection; });
    if (it == list.end()) return false;
    list.erase(it);
    return true;
  };
  if (drop(closing_) || drop(accepted_)) return;
  Peer* peer = find(connection);
  if (peer == nullptr) return;
  peer->connection.reset();
  peer->identified = false;
  peer->health.state = PeerState::lost;
  // The dialing side starts a new session after a backoff, which grows while sessions end
  // before the peer accepted them (refused, or the peer is going away); calls wait for it.
  if (peer->we_dial && !peer->removed && !closing_all_) loop_.timer_start(peer->reconnect_timer, reconnect_delay(*peer));
}

void Manager::on_connection_resumed(Connection& connection, uint64_t) noexcept {
  Peer* peer = find(connection);
  if (peer != nullptr) peer->health.resumes++;
  stats_.resumes++;
}

PeerHealth Manager::health(const engine::Address& address) const noexcept {
  const Peer* peer = find(address);
  return peer == nullptr ? PeerHealth{} : health_of(*peer);
}

PeerHealth Manager::health_of(const Peer& peer) noexcept {
  PeerHealth health = peer.health;
  if (peer.connection && peer.identified) {
    health.state = peer.connection->connected() ? PeerState::connected : PeerState::resuming;
    health.rtt_ns = peer.connection->session().rtt_ns();
  }
  return health;
}

std::vector<PeerSnapshot> Manager::snapshot() const {
  std::vector<PeerSnapshot> peers;
  peers.reserve(peers_.size());
  for (const auto& peer : peers_) {
    if (peer->removed) continue;
    PeerSnapshot& entry = peers.emplace_back();
    entry.name = peer->name;
    entry.health = health_of(*peer);
    if (peer->connection && peer->identified) {
      entry.has_session = true;
      entry.session = peer->connection->snapshot();
    }
  }
  return peers;
}

Connection* Manager::session(const engine::Address& address) noexcept {
  Peer* peer = find(address);
  return peer != nullptr && peer->identified ? peer->connection.get() : nullptr;
}

std::size_t Manager::session_count() const noexcept {
  return static_cast<std::size_t>(
      std::count_if(peers_.begin(), peers_.end(), [](const auto& peer) { return peer->connection && peer->identified; }));
}

void Manager::on_accept(int fd) noexcept {
  stats_.connections_accepted++;
  acceptor_.accept(fd);
}
void Manager::on_accept_error(engine::IoError) noexcept {}
void Manager::on_listener_closed() noexcept { listener_closed_ = true; }

}  // namespace ringmux::cluster
