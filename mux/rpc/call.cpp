#include "mux/rpc/call.h"

#include <string>
#include <utility>
#include <vector>

#include "base/assert.h"
#include "base/pool.h"
#include "mux/rpc/order_gate.h"

namespace ringmux::mux {

namespace {

// Client side of a unary call: gathers the response (bounded) and runs the callback.
class UnaryCall final : public StreamObserver, public Pooled<UnaryCall> {
 public:
  // The call's deadline is its stream's (Connection arms it).
  UnaryCall(Connection& connection, CallCallback done) : connection_(connection), done_(std::move(done)) {}

  void set_id(StreamId id) noexcept { id_ = id; }
  void on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept override {
    connection_.consume(id_, bytes.size());
    if (response_.size() + bytes.size() > connection_.options().call_response_bytes_max) {
      // A peer answering with more than we gather: the call fails, the stream is reset.
      return connection_.reset(id_, MuxError::resource_exhausted,
                               "unary response over " + std::to_string(connection_.options().call_response_bytes_max) +
                                   " bytes (ConnectionOptions::call_response_bytes_max)");
    }
    if (end_stream && response_.empty()) {
      whole_ = bytes;  // the whole response in one frame: handed on with no copy
      return;
    }
    // Copy: a response split over several frames is gathered.
    response_.insert(response_.end(), bytes.begin(), bytes.end());
  }
  void on_stream_message(std::string_view message) noexcept override { message_ = std::string(message); }
  void on_stream_finished(MuxError error) noexcept override {
    // No longer a nested call of an ordered handler holding the order, before anyone
    // hears of it (the callback may make the next call).
    if (id_ != 0) {
      if (OrderGate* gate = OrderGate::find(connection_)) gate->call_finished(id_);
    }
    CallResult result;
    result.error = error;
    result.message = std::move(message_);
    if (error == MuxError::none) {
      result.response = whole_.empty() ? std::span<const std::byte>(response_) : whole_;
    }
    done_(result);
  }

 private:
  Connection& connection_;
  CallCallback done_;
  StreamId id_ = 0;
  std::vector<std::byte> response_;
  std::span<const std::byte> whole_;  // valid: finished follows in the same receive call
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
  auto call = std::make_unique<UnaryCall>(connection, std::move(done));
  // A call waits for credit rather than fail for want of it: what the OPEN cannot carry
  // now follows as DATA.
  auto opened = connection.open_owned(handler_id, deadline_ns, request, true, *call);
  if (!opened) {
    call->on_stream_finished(opened.error());
    return 0;
  }
  const StreamId id = opened.value();
  RM_ASSERT(id != 0);
  RM_DEBUG_ASSERT(session_binding_is(connection, id, call.get()));
  call.release()->set_id(id);  // the connection owns it now
  // A nested call of the ordered handler holding the order (made inside its invocation):
  // while it is outstanding, an ordered request coming back is a self-deadlock.
  if (OrderGate* gate = OrderGate::find(connection)) gate->call_started(id);
  return id;
}

}  // namespace ringmux::mux
