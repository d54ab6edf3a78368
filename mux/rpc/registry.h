// The RPC layer's server side: handlers by id. A stream handler gets the streams the peer
// opens for its id; a unary handler gets each call's request and a Responder.
//
// A Registry is the StreamService of the connections that serve it (mux/link/connection.h):
// the link hands it every stream the peer opens and owns the observer it returns. One
// Registry may serve many connections; it must outlive them. Loop threads only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ringmux/base/limits.h"
#include "ringmux/mux/link/connection.h"

namespace ringmux::mux {

// Replies to one unary call, on the loop thread. Exactly one of reply / fail; after the
// call is cancelled (peer reset, deadline) both are no-ops and cancelled() is true.
class Responder {
 public:
  virtual ~Responder() = default;
  // What the window cannot take now is copied and goes as credit returns; the copy is
  // charged to the connection's RPC buffer (ConnectionOptions::rpc_bytes_max): over it the
  // call fails with resource_exhausted.
  virtual void reply(std::span<const std::byte> response) noexcept = 0;
  // No copy: `response` stays valid while `keep_alive` is held, and the responder holds it
  // until the last byte has gone (a large or shared response, say a cache block).
  virtual void reply(std::span<const std::byte> response, std::shared_ptr<const void> keep_alive) noexcept = 0;
  virtual void fail(wire::StatusCode status, std::string_view message) noexcept = 0;
  virtual bool cancelled() const noexcept = 0;
  // Called once if the call is cancelled before the reply went out.
  virtual void on_cancel(std::function<void()> callback) noexcept = 0;
  // Ordered handlers (Registry::add_unary_ordered): lets the next ordered request of this
  // session start while this one goes on. Idempotent, and implied by reply(), fail() and
  // cancellation. A no-op for unordered handlers.
  virtual void release() noexcept = 0;
  // The connection the call came on (valid while the call is not finished), and the
  // call's deadline on the loop's monotonic clock (0 = none).
  virtual Connection& connection() const noexcept = 0;
  virtual uint64_t deadline_ns() const noexcept = 0;
};

// Limits of one unary handler.
struct UnaryLimits {
  // Largest request: a larger one fails with resource_exhausted (stream-scoped, with a
  // message naming the limit) before the handler sees it.
  uint32_t request_bytes_max = limits::unary_request_bytes_max;
};

class Registry final : public StreamService {
 public:
  // Returns the observer of the new stream (owned by the connection from then on), or
  // nullptr to refuse it (unknown_handler).
  using StreamHandler = std::function<StreamObserver*(const StreamStart& start)>;
  // The request is valid only during the call. The handler may reply at once or keep the
  // responder and reply later (from the loop thread); it stays valid as long as held.
  using UnaryHandler = std::function<void(std::span<const std::byte> request, std::shared_ptr<Responder> responder)>;

  void add_stream(uint32_t handler_id, StreamHandler handler);
  void add_unary(uint32_t handler_id, UnaryHandler handler, UnaryLimits limits = {});
  // An ordered unary handler: on each session its requests start one at a time, in the
  // order they arrived; the next starts when the running one replies, fails, is cancelled
  // or calls Responder::release(). Requests of unordered handlers are never held back.
  // A handler that makes nested calls while it holds the order must release() first: a
  // peer that answers by calling an ordered handler back over the same session would wait
  // behind it. That cycle is detected when the nested call was made from inside the
  // handler's own invocation: the request coming back is failed at once (handler_error,
  // "ordered handler re-entered ...") instead of waiting forever.
  void add_unary_ordered(uint32_t handler_id, UnaryHandler handler, UnaryLimits limits = {});
  // A routed unary handler: one handler id serves many targets (say, the disks of a node),
  // each with its own handler under a 64-bit route key. A routed request starts with its
  // route key (routed_request()); the handler gets the rest. A request whose route has no
  // handler fails with unknown_handler and a message naming the route (stream-scoped).
  // All routes of an id are routed; the id cannot also have a plain handler.
  void add_unary_route(uint32_t handler_id, uint64_t route_key, UnaryHandler handler);
  const StreamHandler* find(uint32_t handler_id) const noexcept;

  // StreamService
  StreamObserver* open_stream(const StreamStart& start) const noexcept override;

 private:
  std::unordered_map<uint32_t, StreamHandler> handlers_;
  std::unordered_map<uint32_t, std::shared_ptr<std::unordered_map<uint64_t, UnaryHandler>>> routes_;
};

// The request of a routed call: the route key (8 bytes, little-endian), then `request`.
std::vector<std::byte> routed_request(uint64_t route_key, std::span<const std::byte> request);

}  // namespace ringmux::mux
