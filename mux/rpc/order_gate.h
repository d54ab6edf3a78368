// The order of a session's ordered handlers (Registry::add_unary_ordered): requests start
// one at a time, in arrival order; the next starts when the holder releases the order
// (reply, fail, cancellation or Responder::release()).
//
// One gate per connection, kept in the connection's extension slot and created by the
// first ordered request. It also catches the one cycle it can see: the holder waiting on
// a call it made over this session (from inside its own invocation) while an ordered
// request comes back over the same session would wait forever, so that request is
// refused at once. Loop thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "ringmux/mux/link/connection.h"

namespace ringmux::mux {

class OrderGate final : public ConnectionExtension {
 public:
  // An ordered request waiting for the order.
  class Waiter {
   public:
    virtual ~Waiter() = default;
    // Cancelled while it waited: it never starts.
    virtual bool cancelled() const noexcept = 0;
    // Its turn: it holds the order under `token` until it calls OrderGate::release(token).
    virtual void start(OrderGate& gate, uint64_t token) noexcept = 0;
    // Refused as a self-deadlock (see above).
    virtual void refuse_reentered() noexcept = 0;
  };

  explicit OrderGate(Connection& connection) noexcept : connection_(connection) {}
  // The connection's gate, created on first use; find() does not create one.
  static OrderGate& of(Connection& connection);
  static OrderGate* find(Connection& connection) noexcept;

  // Starts `waiter` now if the order is free, else queues it (arrival order); refuses it
  // if the holder waits on a nested call over this session.
  void enter(std::shared_ptr<Waiter> waiter) noexcept;
  // The holder `token` released the order: the next waiting request starts. Idempotent.
  void release(uint64_t token) noexcept;
  // A call was made on this connection: when the holder made it from inside its own
  // invocation, it is a nested call until it finishes.
  void call_started(StreamId id);
  void call_finished(StreamId id) noexcept;

  std::size_t waiting() const noexcept { return waiting_.size(); }

 private:
  void drain() noexcept;

  Connection& connection_;
  uint64_t holder_ = 0;  // the token holding the order (0: free)
  uint64_t next_token_ = 1;
  bool in_handler_ = false;  // the holder's handler function is running right now
  bool draining_ = false;
  std::deque<std::shared_ptr<Waiter>> waiting_;
  std::vector<StreamId> nested_calls_;  // the holder's calls made inside its invocation
};

// Ordered requests waiting for the order on `connection` (0 without ordered handlers).
std::size_t ordered_waiting(Connection& connection) noexcept;

}  // namespace ringmux::mux
