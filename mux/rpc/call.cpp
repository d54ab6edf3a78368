#include "ringmux/mux/rpc/call.h"

#include <string>
#include <utility>
#include <vector>

#include "ringmux/base/assert.h"
#include "ringmux/base/pool.h"
#include "ringmux/mux/rpc/order_gate.h"

namespace ringmux::mux {

namespace {

// Client side of a unary call: gathers the response (bounded) and runs the callback,
// once: when the response has arrived whole with the request all sent (from the receive
// buffer, no copy), else when the stream ends.
class UnaryCall final : public StreamObserver, public Pooled<UnaryCall> {
 public:
  // The call's deadline is its stream's (Connection arms it).
  UnaryCall(Connection& connection, CallCallback done)
      : connection_(connection),
        done_(std::move(done)),
        started_ns_(connection.options().record_call_latency ? engine::Loop::clock_ns() : 0) {}

  void set_id(StreamId id) noexcept { id_ = id; }
  void on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept override {
    RM_ASSERT(!completed_);  // completed by the last of the stream's data
    connection_.consume(id_, bytes.size());
    if (response_.size() + bytes.size() > connection_.options().call_response_bytes_max) {
      // A peer answering with more than we gather: the call fails, the stream is reset.
      return connection_.reset(id_, MuxError::resource_exhausted,
                               "unary response over " + std::to_string(connection_.options().call_response_bytes_max) +
                                   " bytes (ConnectionOptions::call_response_bytes_max)");
    }
    // Our END has gone with the request's last byte: the peer's END closes the stream
    // cleanly in this receive, and the call is complete now, while `bytes` (the receive
    // buffer) is valid. The stream's end, reported on the next turn, adds nothing.
    const bool complete_now = end_stream && !connection_.session().local_open(id_);
    if (complete_now && response_.empty()) return complete(MuxError::none, bytes);  // one frame: no copy
    // Copy: a response split over several frames is gathered, as is one that arrived
    // before our request had all gone (it is handed on when the stream ends).
    response_.insert(response_.end(), bytes.begin(), bytes.end());
    if (complete_now) complete(MuxError::none, response_);
  }
  void on_stream_message(std::string_view message) noexcept override { message_ = std::string(message); }
  void on_stream_finished(MuxError error) noexcept override {
    if (completed_) return;
    complete(error, error == MuxError::none ? std::span<const std::byte>(response_) : std::span<const std::byte>());
  }

 private:
  void complete(MuxError error, std::span<const std::byte> response) noexcept {
    completed_ = true;
    // No longer a nested call of an ordered handler holding the order, before anyone
    // hears of it (the callback may make the next call).
    if (id_ != 0) {
      if (OrderGate* gate = OrderGate::find(connection_)) gate->call_finished(id_);
    }
    if (started_ns_ != 0 && error == MuxError::none) connection_.note_call_latency(engine::Loop::clock_ns() - started_ns_);
    CallResult result;
    result.error = error;
    result.message = std::move(message_);
    result.response = response;
    done_(result);
  }

  Connection& connection_;
  CallCallback done_;
  StreamId id_ = 0;
  uint64_t started_ns_;  // 0: latency not recorded
  bool completed_ = false;
  std::vector<std::byte> response_;
  std::string message_;
};

// The stream's binding names `observer`: the connection owns it now.
[[maybe_unused]] bool session_binding_is(Connection& connection, StreamId id, const StreamObserver* observer) noexcept {
  const StreamBinding* binding = connection.session().binding(id);
  return binding != nullptr && binding->observer == observer && binding->owned;
}

}  // namespace

StreamId call(Connection& connection, uint32_t handler_id, std::span<const std::byte> request, uint64_t deadline_ns,
              CallCallback done) noexcept {
  RM_DEBUG_ASSERT(connection.loop().on_loop_thread());
  RM_ASSERT(done);
  // The connection owns the call from open_owned on, failed or not: a failure reaches
  // `done` on the next turn, never inside this call.
  auto* unary = new UnaryCall(connection, std::move(done));
  // A call waits for credit rather than fail for want of it: what the OPEN cannot carry
  // now follows as DATA.
  auto opened = connection.open_owned(handler_id, deadline_ns, request, true, *unary);
  if (!opened) return 0;
  const StreamId id = opened.value();
  RM_ASSERT(id != 0);
  RM_DEBUG_ASSERT(session_binding_is(connection, id, unary));
  unary->set_id(id);
  // A nested call of the ordered handler holding the order (made inside its invocation):
  // while it is outstanding, an ordered request coming back is a self-deadlock.
  if (OrderGate* gate = OrderGate::find(connection)) gate->call_started(id);
  return id;
}

}  // namespace ringmux::mux
