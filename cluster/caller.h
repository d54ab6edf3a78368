// Calls and quorum calls through a Node from application threads (mux::RemoteCaller's
// contract: any thread but the node's loop threads; blocks until the result). A call is
// made on the loop that owns the peer; a quorum call's peer calls on the loops that own
// them.
#pragma once

#include <cstdint>
#include <span>

#include "ringmux/cluster/node.h"
#include "ringmux/cluster/quorum.h"
#include "ringmux/mux/workers/threaded.h"

namespace ringmux::cluster {

using mux::CallOutcome;

class ClusterCaller {
 public:
  explicit ClusterCaller(Node& node) noexcept : node_(node) {}
  CallOutcome call(const engine::Address& peer, uint32_t handler_id, std::span<const std::byte> request,
                   uint64_t deadline_ns) noexcept;
  QuorumResult quorum_call(const Configuration& configuration, uint32_t handler_id, std::span<const std::byte> request,
                           QuorumFunction quorum, uint64_t deadline_ns) noexcept;

 private:
  Node& node_;
};

}  // namespace ringmux::cluster
