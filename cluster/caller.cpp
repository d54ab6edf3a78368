#include "ringmux/cluster/caller.h"

#include <memory>

#include "ringmux/base/assert.h"
#include "ringmux/base/rendezvous.h"

namespace ringmux::cluster {

CallOutcome ClusterCaller::call(const engine::Address& peer, uint32_t handler_id, std::span<const std::byte> request,
                                uint64_t deadline_ns) noexcept {
  const uint32_t index = node_.loop_of(peer);
  Manager& manager = node_.manager(index);  // used on its loop only, below
  return node_.engine().loop(index).run_and_wait<CallOutcome>([&](auto complete) {
    manager.call(peer, handler_id, request, deadline_ns,
                 [complete](const CallResult& result) { complete(CallOutcome::of(result)); });
  });
}

QuorumResult ClusterCaller::quorum_call(const Configuration& configuration, uint32_t handler_id,
                                        std::span<const std::byte> request, QuorumFunction quorum,
                                        uint64_t deadline_ns) noexcept {
  for (uint32_t i = 0; i < node_.loop_count(); i++) RM_ASSERT(!node_.engine().loop(i).on_loop_thread());
  auto pending = std::make_shared<Rendezvous<QuorumResult>>();
  // Replies own their bytes already: the result crosses to this thread as it is.
  cluster::quorum_call(node_, configuration, handler_id, request, std::move(quorum), deadline_ns,
                       [pending](const QuorumResult& result) { pending->deliver(result); });
  return pending->wait();
}

}  // namespace ringmux::cluster
