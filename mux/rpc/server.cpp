// The server side of unary calls: gathers the request (bounded), runs the handler, sends
// the reply (copied only for what the window cannot take, or held by reference), and the
// ordered handlers' waiting requests (OrderGate).
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ringmux/base/assert.h"
#include "ringmux/base/pool.h"
#include "ringmux/mux/rpc/order_gate.h"
#include "ringmux/mux/rpc/registry.h"

namespace ringmux::mux {

namespace {

// Bytes charged to a connection's RPC buffer budget (Connection::rpc_charge), released
// when this goes (movable: a gathered request moves with its charge).
class RpcCharge {
 public:
  explicit RpcCharge(Connection& connection) noexcept : connection_(&connection) {}
  RpcCharge(RpcCharge&& other) noexcept : connection_(other.connection_), bytes_(std::exchange(other.bytes_, 0)) {}
  RpcCharge& operator=(RpcCharge&&) = delete;
  ~RpcCharge() { release(); }
  bool add(std::size_t bytes) noexcept {
    if (!connection_->rpc_charge(bytes)) return false;
    bytes_ += bytes;
    return true;
  }
  void release() noexcept {
    if (bytes_ > 0) connection_->rpc_release(std::exchange(bytes_, 0));
  }

 private:
  Connection* connection_;
  std::size_t bytes_ = 0;
};

std::string over_budget_message(const Connection& connection, std::string_view what) {
  return std::string(what) + ": this connection's RPC buffer is over its limit of " +
         std::to_string(connection.options().rpc_bytes_max) + " bytes (limits::connection_rpc_bytes_max)";
}

// Server side of a unary call: sends the reply, or the failure.
class UnaryResponder final : public Responder {
 public:
  UnaryResponder(Connection& connection, StreamId id, uint64_t deadline_ns)
      : connection_(&connection), id_(id), deadline_ns_(deadline_ns), charge_(connection) {}

  void reply(std::span<const std::byte> response) noexcept override { send(response, nullptr); }
  void reply(std::span<const std::byte> response, std::shared_ptr<const void> keep_alive) noexcept override {
    RM_ASSERT(keep_alive != nullptr);
    send(response, std::move(keep_alive));
  }
  void fail(wire::StatusCode status, std::string_view message) noexcept override {
    if (done_ || cancelled_) return;
    done_ = true;
    release();
    connection_->reset(id_, error_from_status(status) == MuxError::stream_reset ? MuxError::handler_error
                                                                                 : error_from_status(status),
                       message.empty() ? std::string_view("handler failed") : message);
  }
  bool cancelled() const noexcept override { return cancelled_; }
  void on_cancel(std::function<void()> callback) noexcept override { cancel_callback_ = std::move(callback); }
  void release() noexcept override {
    if (order_token_ == 0) return;  // unordered, or released already
    RM_ASSERT(gate_ != nullptr);
    gate_->release(std::exchange(order_token_, 0));
  }
  Connection& connection() const noexcept override { return *connection_; }
  uint64_t deadline_ns() const noexcept override { return deadline_ns_; }
  // An ordered request now holds the order of `gate` under `token`.
  void hold(OrderGate& gate, uint64_t token) noexcept {
    RM_ASSERT(order_token_ == 0 && token != 0);
    gate_ = &gate;
    order_token_ = token;
  }

  void writable() noexcept {
    if (rest_.empty() || cancelled_) return;
    RM_ASSERT(done_ && order_token_ == 0);  // a rest exists only after reply(), which released the order
    auto taken = connection_->write(id_, rest_, true);
    if (!taken) return;
    rest_ = rest_.subspan(taken.value());
    if (rest_.empty()) drop_rest();
  }
  void finished(MuxError error) noexcept {
    if (error != MuxError::none && !done_) {
      cancelled_ = true;
      if (cancel_callback_) cancel_callback_();
    }
    done_ = true;
    drop_rest();
    release();
    RM_ASSERT(rest_.empty() && keep_alive_ == nullptr && copy_.empty() && order_token_ == 0);
  }

 private:
  void send(std::span<const std::byte> response, std::shared_ptr<const void> keep_alive) noexcept {
    if (done_ || cancelled_) return;
    done_ = true;
    release();
    RM_ASSERT(order_token_ == 0 && rest_.empty());
    auto taken = connection_->write(id_, response, true);
    if (!taken || taken.value() == response.size()) return;  // all sent, or the stream ended meanwhile
    // The rest of a response larger than the window waits for credit: held by reference
    // when the caller keeps it alive, else copied (and charged).
    rest_ = response.subspan(taken.value());
    if (keep_alive != nullptr) {
      keep_alive_ = std::move(keep_alive);
      return;
    }
    if (!charge_.add(rest_.size())) {
      rest_ = {};
      connection_->reset(id_, MuxError::resource_exhausted, over_budget_message(*connection_, "response not sent"));
      return;
    }
    copy_.assign(rest_.begin(), rest_.end());
    rest_ = copy_;
  }
  void drop_rest() noexcept {
    rest_ = {};
    keep_alive_.reset();
    std::vector<std::byte>().swap(copy_);
    charge_.release();
  }

  Connection* connection_;
  StreamId id_;
  uint64_t deadline_ns_;  // 0 = none
  bool done_ = false;
  bool cancelled_ = false;
  std::span<const std::byte> rest_;         // of the response, waiting for credit
  std::shared_ptr<const void> keep_alive_;  // keeps rest_ valid when the caller's
  std::vector<std::byte> copy_;             // holds rest_ otherwise
  RpcCharge charge_;                        // for copy_
  std::function<void()> cancel_callback_;
  OrderGate* gate_ = nullptr;  // of an ordered handler's request, once it held the order
  uint64_t order_token_ = 0;   // holding the order of an ordered handler
};

// An ordered request waiting for the order: the request (copied, since it waits), its
// responder and its handler.
class OrderedStart final : public OrderGate::Waiter {
 public:
  OrderedStart(RpcCharge&& request_charge, std::vector<std::byte> request, std::shared_ptr<UnaryResponder> responder,
               const Registry::UnaryHandler& handler) noexcept
      : charge_(std::move(request_charge)),
        request_(std::move(request)),
        responder_(std::move(responder)),
        handler_(handler) {}

  bool cancelled() const noexcept override { return responder_->cancelled(); }
  void start(OrderGate& gate, uint64_t token) noexcept override {
    responder_->hold(gate, token);
    handler_(request_, responder_);
  }
  void refuse_reentered() noexcept override {
    responder_->fail(wire::StatusCode::handler_error,
                     "ordered handler re-entered on this session while the order is held by a handler "
                     "waiting on its nested call (release() before nested calls)");
  }

 private:
  RpcCharge charge_;  // for request_, until the waiter goes
  std::vector<std::byte> request_;
  std::shared_ptr<UnaryResponder> responder_;
  const Registry::UnaryHandler& handler_;
};

// The stream of one unary call on the server: gathers the request and starts the handler.
class UnaryServerStream final : public StreamObserver, public Pooled<UnaryServerStream> {
 public:
  // The stream's deadline is the connection's (Connection::on_stream_opened arms it).
  UnaryServerStream(const StreamStart& start, const Registry::UnaryHandler& handler, UnaryLimits limits,
                    bool ordered = false)
      : connection_(*start.connection), id_(start.id), handler_(handler), limits_(limits), ordered_(ordered),
        responder_(std::allocate_shared<UnaryResponder>(PoolAllocator<UnaryResponder>(), *start.connection, start.id,
                                                             start.deadline_ns)), charge_(*start.connection) {}

  void on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept override {
    // The bytes are consumed into the request (bounded below), so their credit returns.
    connection_.consume(id_, bytes.size());
    if (refused_) return;
    RM_ASSERT(request_.size() <= limits_.request_bytes_max);
    if (request_.size() + bytes.size() > limits_.request_bytes_max) {
      return refuse("unary request over " + std::to_string(limits_.request_bytes_max) +
                    " bytes, this handler's limit (UnaryLimits::request_bytes_max)");
    }
    const bool whole = end_stream && request_.empty() && !ordered_;
    if (!whole && !charge_.add(bytes.size())) return refuse(over_budget_message(connection_, "request refused"));
    if (ordered_) {
      request_.insert(request_.end(), bytes.begin(), bytes.end());
      if (!end_stream) return;
      // May run it now (its reply ends this stream, whose end is reported on the next turn).
      OrderGate::of(connection_)
          .enter(std::make_shared<OrderedStart>(std::move(charge_), std::move(request_), responder_, handler_));
      return;
    }
    if (whole) {
      handler_(bytes, responder_);  // the whole request in one frame: no copy
      return;
    }
    // Copy: a request split over several frames is gathered before the handler runs.
    request_.insert(request_.end(), bytes.begin(), bytes.end());
    if (end_stream) {
      // The request (and its charge) are done with when the handler returns (one that
      // replies later copies what it keeps), not when this stream goes on a later turn.
      RpcCharge charge(std::move(charge_));
      const std::vector<std::byte> request = std::move(request_);
      handler_(request, responder_);
    }
  }
  void on_stream_writable() noexcept override { responder_->writable(); }
  void on_stream_finished(MuxError error) noexcept override { responder_->finished(error); }

 private:
  // Fails the call (stream-scoped, the message names the limit) and drops what was gathered.
  void refuse(const std::string& message) noexcept {
    refused_ = true;
    std::vector<std::byte>().swap(request_);
    charge_.release();
    responder_->fail(wire::StatusCode::resource_exhausted, message);  // ends this stream (reported next turn)
  }

  Connection& connection_;
  StreamId id_;
  const Registry::UnaryHandler& handler_;
  UnaryLimits limits_;
  bool ordered_;
  bool refused_ = false;
  std::shared_ptr<UnaryResponder> responder_;
  std::vector<std::byte> request_;
  RpcCharge charge_;  // for request_
};

}  // namespace

void Registry::add_unary(uint32_t handler_id, UnaryHandler handler, UnaryLimits limits) {
  RM_ASSERT(handler);
  auto shared = std::make_shared<UnaryHandler>(std::move(handler));
  add_stream(handler_id, [shared, limits](const StreamStart& start) -> StreamObserver* {
    return new UnaryServerStream(start, *shared, limits);
  });
}

void Registry::add_unary_ordered(uint32_t handler_id, UnaryHandler handler, UnaryLimits limits) {
  RM_ASSERT(handler);
  auto shared = std::make_shared<UnaryHandler>(std::move(handler));
  add_stream(handler_id, [shared, limits](const StreamStart& start) -> StreamObserver* {
    return new UnaryServerStream(start, *shared, limits, true);
  });
}

}  // namespace ringmux::mux
