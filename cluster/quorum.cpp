#include "ringmux/cluster/quorum.h"

#include <memory>
#include <mutex>
#include <optional>

namespace ringmux::cluster {

namespace quorum {

QuorumFunction threshold(std::size_t k) {
  return [k](const std::vector<QuorumReply>& replies, std::size_t peers) {
    std::size_t ok = 0;
    for (const auto& reply : replies) ok += reply.error == MuxError::none ? 1 : 0;
    if (ok >= k) return QuorumVerdict::done;
    const std::size_t outstanding = peers - replies.size();
    return ok + outstanding < k ? QuorumVerdict::failed : QuorumVerdict::wait;
  };
}
QuorumFunction first() { return threshold(1); }
QuorumFunction majority() {
  return [](const std::vector<QuorumReply>& replies, std::size_t peers) {
    return threshold(peers / 2 + 1)(replies, peers);
  };
}
QuorumFunction all() {
  return [](const std::vector<QuorumReply>& replies, std::size_t peers) { return threshold(peers)(replies, peers); };
}

}  // namespace quorum

namespace {

// One quorum call's state, shared by its peer calls' callbacks. Over a Node the peers live
// on several loops and their replies arrive on several threads: the mutex orders them.
// Each peer call is issued on the loop of the manager that owns the peer, which records it
// (for the cancellation) under the mutex.
struct QuorumState : std::enable_shared_from_this<QuorumState> {
  struct Issued {
    Manager* manager = nullptr;  // null: not issued (yet)
    CallHandle handle;
  };

  std::mutex mutex;
  std::size_t peers = 0;
  QuorumFunction quorum;
  QuorumCallback done;
  QuorumCallback on_progress;
  std::vector<Issued> issued;
  std::vector<bool> answered;
  QuorumResult result;
  bool complete = false;
  // Over a Node, what the loops' tasks read: written before the first task is posted, read
  // only after. One request for every peer, or one per peer.
  Configuration configuration;
  std::vector<std::vector<std::byte>> requests;

  // Peer `i`'s call, on `manager`'s loop thread.
  void issue(Manager& manager, std::size_t i, const engine::Address& peer, uint32_t handler_id,
             std::span<const std::byte> request, uint64_t deadline_ns) {
    {
      std::lock_guard lock(mutex);
      if (complete) return;
    }
    const CallHandle handle = manager.call(peer, handler_id, request, deadline_ns,
                                           [self = shared_from_this(), i](const CallResult& call) { self->on_reply(i, call); });
    bool late = false;  // the quorum call completed while this call was being made
    {
      std::lock_guard lock(mutex);
      issued[i] = Issued{&manager, handle};
      late = complete && !answered[i];
    }
    if (late) manager.cancel(handle);
  }

  void on_reply(std::size_t peer, const CallResult& call) {
    std::unique_lock lock(mutex);
    if (complete) return;
    answered[peer] = true;
    QuorumReply reply;
    reply.peer = peer;
    reply.error = call.error;
    reply.response.assign(call.response.begin(), call.response.end());
    reply.message = call.message;
    result.replies.push_back(std::move(reply));
    const MuxError failure = call.error != MuxError::none ? call.error : MuxError::handler_error;
    switch (quorum(result.replies, peers)) {
      case QuorumVerdict::done:
        return finish(lock, MuxError::none);
      case QuorumVerdict::failed:
        return finish(lock, failure);
      case QuorumVerdict::wait:
        break;
    }
    if (result.replies.size() == peers) return finish(lock, failure);
    // Under the lock: progress reports come in order, and all of them before `done`.
    if (on_progress && call.error == MuxError::none) on_progress(result);
  }

  // An empty configuration: no peer can answer.
  void refuse_empty() {
    std::unique_lock lock(mutex);
    finish(lock, MuxError::refused);
  }

  // Completes under `lock`, then (unlocked: the cancellations, made on other loops too,
  // run their calls' callbacks, which take the lock) cancels what is still outstanding and
  // reports.
  void finish(std::unique_lock<std::mutex>& lock, MuxError error) {
    complete = true;
    result.error = error;
    std::vector<Issued> outstanding;
    for (std::size_t i = 0; i < issued.size(); i++) {
      if (!answered[i] && issued[i].manager != nullptr) outstanding.push_back(issued[i]);
    }
    lock.unlock();
    // The outstanding calls are of no use now: the peers hear so (their callbacks then run
    // and find the call complete). A call not issued yet never will be.
    for (const Issued& call : outstanding) {
      Manager* manager = call.manager;
      const CallHandle handle = call.handle;
      manager->loop().run_or_post([manager, handle] { manager->cancel(handle); });
    }
    done(result);  // `result` changes no more: complete
  }
};

std::shared_ptr<QuorumState> make_state(std::size_t peers, QuorumFunction quorum, QuorumCallback done,
                                        QuorumCallback on_progress) {
  auto state = std::make_shared<QuorumState>();
  state->peers = peers;
  state->quorum = std::move(quorum);
  state->done = std::move(done);
  state->on_progress = std::move(on_progress);
  state->issued.resize(peers);
  state->answered.assign(peers, false);
  return state;
}

// Peer i's call through `manager` for every peer, `request_of(i)` its request.
template <typename RequestOf>
void quorum_on_manager(Manager& manager, const Configuration& configuration, uint32_t handler_id,
                       RequestOf&& request_of, QuorumFunction quorum_function, uint64_t deadline_ns,
                       QuorumCallback done, QuorumCallback on_progress) {
  auto state = make_state(configuration.size(), std::move(quorum_function), std::move(done), std::move(on_progress));
  if (configuration.empty()) return manager.loop().post_fn([state] { state->refuse_empty(); });
  for (std::size_t i = 0; i < configuration.size(); i++) {
    state->issue(manager, i, configuration[i], handler_id, request_of(i), deadline_ns);
  }
}

// Over a Node: `requests` holds one request for all peers or one per peer.
void quorum_on_node(Node& node, const Configuration& configuration, uint32_t handler_id,
                    std::vector<std::vector<std::byte>> requests, QuorumFunction quorum_function,
                    uint64_t deadline_ns, QuorumCallback done, QuorumCallback on_progress) {
  auto state = make_state(configuration.size(), std::move(quorum_function), std::move(done), std::move(on_progress));
  if (configuration.empty()) return node.engine().post(0, [state] { state->refuse_empty(); });
  state->configuration = configuration;
  state->requests = std::move(requests);
  // One task per loop that owns peers of the configuration; the caller's own loop (when it
  // is one) issues its share at once, after the others are posted.
  std::vector<std::vector<std::size_t>> shares(node.loop_count());
  for (std::size_t i = 0; i < configuration.size(); i++) shares[node.loop_of(configuration[i])].push_back(i);
  auto issue_share = [state, handler_id, deadline_ns](Manager& manager, const std::vector<std::size_t>& peers) {
    for (const std::size_t i : peers) {
      const auto& request = state->requests[state->requests.size() == 1 ? 0 : i];
      state->issue(manager, i, state->configuration[i], handler_id, request, deadline_ns);
    }
  };
  std::optional<uint32_t> here;
  for (uint32_t index = 0; index < node.loop_count(); index++) {
    if (shares[index].empty()) continue;
    if (node.engine().loop(index).on_loop_thread()) {
      here = index;
      continue;
    }
    Manager* manager = &node.manager(index);
    node.engine().post(index, [issue_share, manager, peers = std::move(shares[index])] { issue_share(*manager, peers); });
  }
  if (here) issue_share(node.manager(*here), shares[*here]);
}

}  // namespace

void quorum_call(Manager& manager, const Configuration& configuration, uint32_t handler_id,
                 const PerPeerRequest& request, QuorumFunction quorum_function, uint64_t deadline_ns,
                 QuorumCallback done, QuorumCallback on_progress) {
  std::vector<std::byte> held;  // peer i's request while its call is made (the call copies it)
  auto request_of = [&](std::size_t i) -> std::span<const std::byte> {
    held = request(i);
    return held;
  };
  quorum_on_manager(manager, configuration, handler_id, request_of, std::move(quorum_function), deadline_ns,
                    std::move(done), std::move(on_progress));
}

void quorum_call(Manager& manager, const Configuration& configuration, uint32_t handler_id,
                 std::span<const std::byte> request, QuorumFunction quorum_function, uint64_t deadline_ns,
                 QuorumCallback done, QuorumCallback on_progress) {
  // No copy here: each peer's call copies the request into its session's batch.
  quorum_on_manager(manager, configuration, handler_id, [request](std::size_t) { return request; },
                    std::move(quorum_function), deadline_ns, std::move(done), std::move(on_progress));
}

void quorum_call(Node& node, const Configuration& configuration, uint32_t handler_id, const PerPeerRequest& request,
                 QuorumFunction quorum_function, uint64_t deadline_ns, QuorumCallback done,
                 QuorumCallback on_progress) {
  std::vector<std::vector<std::byte>> requests;
  for (std::size_t i = 0; i < configuration.size(); i++) requests.push_back(request(i));
  quorum_on_node(node, configuration, handler_id, std::move(requests), std::move(quorum_function), deadline_ns,
                 std::move(done), std::move(on_progress));
}

void quorum_call(Node& node, const Configuration& configuration, uint32_t handler_id, std::span<const std::byte> request,
                 QuorumFunction quorum_function, uint64_t deadline_ns, QuorumCallback done,
                 QuorumCallback on_progress) {
  // One copy, shared by the loops' tasks (the caller's buffer may be gone when they run).
  std::vector<std::vector<std::byte>> requests;
  requests.emplace_back(request.begin(), request.end());
  quorum_on_node(node, configuration, handler_id, std::move(requests), std::move(quorum_function), deadline_ns,
                 std::move(done), std::move(on_progress));
}

}  // namespace ringmux::cluster
