#include "ringmux/mux/workers/threaded.h"

#include <memory>

#include "ringmux/base/assert.h"

namespace ringmux::mux {

using engine::Loop;

// ---- RemoteCaller --------------------------------------------------------------------------

CallOutcome CallOutcome::of(const CallResult& result) {
  CallOutcome outcome;
  outcome.error = result.error;
  outcome.response.assign(result.response.begin(), result.response.end());
  outcome.message = result.message;
  return outcome;
}

CallOutcome RemoteCaller::call(uint32_t handler_id, std::span<const std::byte> request, uint64_t deadline_ns) noexcept {
  return connection_.loop().run_and_wait<CallOutcome>([&](auto complete) {
    mux::call(connection_, handler_id, request, deadline_ns,
              [complete](const CallResult& result) { complete(CallOutcome::of(result)); });
  });
}

void RemoteCaller::call_async(uint32_t handler_id, std::vector<std::byte> request, uint64_t deadline_ns,
                              CallCallback done) {
  Connection& connection = connection_;
  connection.loop().post_fn(
      [&connection, handler_id, request = std::move(request), deadline_ns, done = std::move(done)]() mutable {
        mux::call(connection, handler_id, request, deadline_ns, std::move(done));
      });
}

}  // namespace ringmux::mux
