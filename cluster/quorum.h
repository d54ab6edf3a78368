// Quorum calls: one request to every peer of a configuration, a result as soon as the
// caller's quorum function says the replies so far suffice.
//
// quorum_call() sends the request (or a per-peer request) to every peer through the
// Manager, collects the replies as they arrive, and asks the quorum function after each:
// done (complete with the replies so far), failed (the remaining peers can no longer
// satisfy it), or wait. Each peer call carries the deadline; when the last one has failed
// or answered without the function saying done, the quorum call fails (deadline_exceeded
// when calls timed out, else the last error). Once complete, the calls still outstanding
// are cancelled: the peers see the RESET (their Responder::on_cancel runs).
//
// Built-ins count successful replies: first (1), majority (n/2 + 1), all (n), threshold(k).
// A correctable variant reports successive better results: `on_progress` runs after each
// successful reply before the quorum is reached.
//
// Threads. Over a Manager: its loop; `done` and `on_progress` run there. Over a Node
// (cluster/node.h): any thread; each peer's call goes to the loop that owns the peer, and
// `done` and `on_progress` run on the loop thread whose reply decided (never two at once;
// every on_progress before done). Never inside quorum_call(): an empty configuration
// fails with refused on a later turn of the loop (over a Node, loop 0's), as a peer call
// that fails at once does. They must not block: they run on a loop, and on_progress holds
// the call's lock (it must not start another quorum call's wait on it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "ringmux/engine/socket.h"
#include "ringmux/cluster/manager.h"
#include "ringmux/cluster/node.h"

namespace ringmux::cluster {

using Configuration = std::vector<engine::Address>;

struct QuorumReply {
  std::size_t peer = 0;  // index into the configuration
  MuxError error = MuxError::none;
  std::vector<std::byte> response;  // owned: replies outlive the call's callback
  std::string message;
};

enum class QuorumVerdict : uint8_t { wait, done, failed };

// Called after each reply with every reply so far and the configuration's size.
using QuorumFunction = std::function<QuorumVerdict(const std::vector<QuorumReply>& replies, std::size_t peers)>;

namespace quorum {
// Done once `k` peers answered without error; failed once fewer than `k` can.
QuorumFunction threshold(std::size_t k);
QuorumFunction first();
QuorumFunction majority();
QuorumFunction all();
}  // namespace quorum

struct QuorumResult {
  MuxError error = MuxError::none;  // none: the quorum function said done
  std::vector<QuorumReply> replies;  // in arrival order
};
using QuorumCallback = std::function<void(const QuorumResult& result)>;

// The request for peer `index`, when each peer gets its own.
using PerPeerRequest = std::function<std::vector<std::byte>(std::size_t index)>;

void quorum_call(Manager& manager, const Configuration& configuration, uint32_t handler_id,
                 std::span<const std::byte> request, QuorumFunction quorum, uint64_t deadline_ns, QuorumCallback done,
                 QuorumCallback on_progress = {});
void quorum_call(Manager& manager, const Configuration& configuration, uint32_t handler_id,
                 const PerPeerRequest& request, QuorumFunction quorum, uint64_t deadline_ns, QuorumCallback done,
                 QuorumCallback on_progress = {});

void quorum_call(Node& node, const Configuration& configuration, uint32_t handler_id,
                 std::span<const std::byte> request, QuorumFunction quorum, uint64_t deadline_ns, QuorumCallback done,
                 QuorumCallback on_progress = {});
void quorum_call(Node& node, const Configuration& configuration, uint32_t handler_id, const PerPeerRequest& request,
                 QuorumFunction quorum, uint64_t deadline_ns, QuorumCallback done, QuorumCallback on_progress = {});

}  // namespace ringmux::cluster
