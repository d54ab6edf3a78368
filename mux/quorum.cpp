#include "mux/quorum.h"

#include <memory>

namespace ringmux::mux {

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

// One quorum call's state, shared by its peer calls' callbacks.
struct QuorumState {
  Manager* manager;
  std::size_t peers;
  QuorumFunction quorum;
  QuorumCallback done;
  QuorumCallback on_progress;
  std::vector<CallHandle> handles;
  QuorumResult result;
  bool complete = false;

  void finish(MuxError error) {
    complete = true;
    result.error = error;
    // The outstanding calls are of no use now: the peers hear so (their callbacks then run
    // and find the call complete).
    for (std::size_t i = 0; i < handles.size(); i++) {
      bool answered = false;
      for (const auto& reply : result.replies) answered |= reply.peer == i;
      if (!answered) manager->cancel(handles[i]);
    }
    done(result);
  }
  void on_reply(std::size_t peer, const CallResult& call) {
    if (complete) return;
    QuorumReply reply;
    reply.peer = peer;
    reply.error = call.error;
    reply.response.assign(call.response.begin(), call.response.end());
    reply.message = call.message;
    result.replies.push_back(std::move(reply));
    switch (quorum(result.replies, peers)) {
      case QuorumVerdict::done:
        return finish(MuxError::none);
      case QuorumVerdict::failed:
        return finish(call.error != MuxError::none ? call.error : MuxError::handler_error);
      case QuorumVerdict::wait:
        break;
    }
    if (result.replies.size() == peers) return finish(call.error != MuxError::none ? call.error : MuxError::handler_error);
    if (on_progress && call.error == MuxError::none) on_progress(result);
  }
};

}  // namespace

void quorum_call(Manager& manager, const Configuration& configuration, uint32_t handler_id,
                 const PerPeerRequest& request, QuorumFunction quorum_function, uint64_t deadline_ns,
                 QuorumCallback done, QuorumCallback on_progress) {
  auto state = std::make_shared<QuorumState>();
  state->manager = &manager;
  state->peers = configuration.size();
  state->quorum = std::move(quorum_function);
  state->done = std::move(done);
  state->on_progress = std::move(on_progress);
  state->handles.resize(configuration.size());
  if (configuration.empty()) return state->finish(MuxError::refused);
  for (std::size_t i = 0; i < configuration.size() && !state->complete; i++) {
    const std::vector<std::byte> bytes = request(i);
    state->handles[i] = manager.call(configuration[i], handler_id, bytes, deadline_ns,
                                     [state, i](const CallResult& result) { state->on_reply(i, result); });
  }
}

void quorum_call(Manager& manager, const Configuration& configuration, uint32_t handler_id,
                 std::span<const std::byte> request, QuorumFunction quorum_function, uint64_t deadline_ns,
                 QuorumCallback done, QuorumCallback on_progress) {
  const std::vector<std::byte> bytes(request.begin(), request.end());
  quorum_call(manager, configuration, handler_id, [&bytes](std::size_t) { return bytes; }, std::move(quorum_function),
              deadline_ns, std::move(done), std::move(on_progress));
}

}  // namespace ringmux::mux
