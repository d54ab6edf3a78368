#include "ringmux/mux/rpc/order_gate.h"

#include <algorithm>
#include <utility>

#include "ringmux/base/assert.h"

namespace ringmux::mux {

OrderGate& OrderGate::of(Connection& connection) {
  if (OrderGate* gate = find(connection)) return *gate;
  RM_ASSERT(connection.extension() == nullptr);  // the slot is the RPC layer's alone
  auto gate = std::make_unique<OrderGate>(connection);
  OrderGate& result = *gate;
  connection.set_extension(std::move(gate));
  return result;
}

OrderGate* OrderGate::find(Connection& connection) noexcept {
  return static_cast<OrderGate*>(connection.extension());
}

void OrderGate::enter(std::shared_ptr<Waiter> waiter) noexcept {
  RM_ASSERT(waiter != nullptr);
  if (holder_ != 0 && !nested_calls_.empty()) {
    // The holder waits on a call it made over this session, and this request came back
    // over the same session: queued, it would wait for the holder, which waits for it.
    waiter->refuse_reentered();
    return;
  }
  waiting_.push_back(std::move(waiter));
  drain();
}

void OrderGate::release(uint64_t token) noexcept {
  RM_ASSERT(token != 0 && token < next_token_);
  if (token != holder_) return;  // released already
  holder_ = 0;
  nested_calls_.clear();
  drain();
}

void OrderGate::call_started(StreamId id) {
  RM_ASSERT(id != 0);
  if (in_handler_ && holder_ != 0) nested_calls_.push_back(id);
}

void OrderGate::call_finished(StreamId id) noexcept {
  if (!nested_calls_.empty()) std::erase(nested_calls_, id);
}

void OrderGate::drain() noexcept {
  // A loop, not recursion: a handler that replies at once releases the order inside its
  // own start, and 10,000 waiting requests must not become 10,000 stack frames.
  if (draining_) return;
  draining_ = true;
  while (holder_ == 0 && !waiting_.empty() && !connection_.ended()) {
    std::shared_ptr<Waiter> waiter = std::move(waiting_.front());
    waiting_.pop_front();
    if (waiter->cancelled()) continue;
    holder_ = next_token_++;
    RM_ASSERT(nested_calls_.empty());
    in_handler_ = true;
    const uint64_t token = holder_;
    waiter->start(*this, token);
    in_handler_ = false;
    RM_ASSERT(holder_ == 0 || holder_ == token);  // released (by its reply), or still held by it
  }
  if (connection_.ended()) waiting_.clear();
  draining_ = false;
}

std::size_t ordered_waiting(Connection& connection) noexcept {
  const OrderGate* gate = OrderGate::find(connection);
  return gate == nullptr ? 0 : gate->waiting();
}

}  // namespace ringmux::mux
