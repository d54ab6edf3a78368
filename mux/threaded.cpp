#include "mux/threaded.h"

#include <chrono>
#include <thread>

#include "engine/assert.h"

namespace ringmux::mux {

using engine::Loop;

// ---- RemoteCaller --------------------------------------------------------------------------

CallOutcome RemoteCaller::call(uint32_t handler_id, std::span<const std::byte> request, uint64_t deadline_ns) noexcept {
  RM_ASSERT(!connection_.loop().on_loop_thread());  // it would wait for itself forever
  struct Pending {
    CallOutcome outcome;
    std::atomic<uint32_t> done{0};
  } pending;
  Connection& connection = connection_;
  connection.loop().post_fn([&connection, &pending, handler_id, request, deadline_ns] {
    connection.call(handler_id, request, deadline_ns, [&pending](const CallResult& result) {
      pending.outcome.error = result.error;
      // Copy: the response leaves the loop's receive buffer for the caller's thread.
      pending.outcome.response.assign(result.response.begin(), result.response.end());
      pending.outcome.message = result.message;
      pending.done.store(1, std::memory_order_release);
      pending.done.notify_one();
    });
  });
  pending.done.wait(0, std::memory_order_acquire);
  return std::move(pending.outcome);
}

void RemoteCaller::call_async(uint32_t handler_id, std::vector<std::byte> request, uint64_t deadline_ns,
                              CallCallback done) {
  Connection& connection = connection_;
  connection.loop().post_fn(
      [&connection, handler_id, request = std::move(request), deadline_ns, done = std::move(done)]() mutable {
        connection.call(handler_id, request, deadline_ns, std::move(done));
      });
}

// ---- InboundQueue --------------------------------------------------------------------------

InboundQueue::InboundQueue(Connection& connection, uint32_t capacity) : connection_(connection), ring_(capacity) {
  credit_task_.run = &InboundQueue::on_credit_task;
  credit_task_.owner = this;
}

void InboundQueue::on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept {
  // Copy: out of the receive buffer (returned to the kernel after this call) into memory
  // the worker reads on its own time. A slot's vector keeps its capacity, so a ring in
  // steady state copies without allocating.
  if (overflow_.empty()) {
    if (Message* slot = ring_.claim()) {
      slot->bytes.assign(bytes.begin(), bytes.end());
      slot->end_stream = end_stream;
      slot->finished = false;
      slot->error = MuxError::none;
      ring_.commit();
      signal_.fetch_add(1, std::memory_order_release);
      signal_.notify_one();
      return;
    }
  }
  Message message;
  message.bytes.assign(bytes.begin(), bytes.end());
  message.end_stream = end_stream;
  overflow_.push_back(std::move(message));
  publish();
}

void InboundQueue::on_stream_finished(MuxError error) noexcept {
  Message message;
  message.finished = true;
  message.error = error;
  overflow_.push_back(std::move(message));
  publish();
}

void InboundQueue::publish() noexcept {
  std::size_t moved = 0;
  while (moved < overflow_.size()) {
    Message* slot = ring_.claim();
    if (slot == nullptr) break;
    slot->bytes.swap(overflow_[moved].bytes);
    slot->end_stream = overflow_[moved].end_stream;
    slot->finished = overflow_[moved].finished;
    slot->error = overflow_[moved].error;
    ring_.commit();
    moved++;
  }
  if (moved > 0) {
    overflow_.erase(overflow_.begin(), overflow_.begin() + static_cast<std::ptrdiff_t>(moved));
    signal_.fetch_add(1, std::memory_order_release);
    signal_.notify_one();
  }
}

const InboundQueue::Message* InboundQueue::acquire(uint64_t timeout_ns) noexcept {
  const uint64_t deadline_ns = Loop::clock_ns() + timeout_ns;
  for (;;) {
    const uint32_t seen = signal_.load(std::memory_order_acquire);
    if (const Message* message = ring_.acquire()) {
      acquired_bytes_ = message->bytes.size();
      return message;
    }
    const uint64_t now = Loop::clock_ns();
    if (now >= deadline_ns) return nullptr;
    // std::atomic::wait has no timeout: wait in short slices so the deadline holds.
    const uint64_t slice_ns = std::min<uint64_t>(deadline_ns - now, 1'000'000);
    if (signal_.load(std::memory_order_acquire) == seen) {
      std::this_thread::sleep_for(std::chrono::nanoseconds(slice_ns < 50'000 ? slice_ns : 50'000));
    }
  }
}

void InboundQueue::release() noexcept {
  ring_.release();
  released_bytes_.fetch_add(acquired_bytes_, std::memory_order_release);
  acquired_bytes_ = 0;
  // One credit task in flight at a time: releases in between add to the same count.
  if (!credit_posted_.exchange(true, std::memory_order_acq_rel)) connection_.loop().post(&credit_task_);
}

void InboundQueue::on_credit_task(engine::Task* task) noexcept {
  InboundQueue* self = static_cast<CreditTask*>(task)->owner;
  self->credit_posted_.store(false, std::memory_order_release);
  const uint64_t bytes = self->released_bytes_.exchange(0, std::memory_order_acq_rel);
  if (bytes > 0 && self->id_ != 0) self->connection_.consume(self->id_, bytes);
  self->publish();  // slots were freed: move waiting messages in
}

}  // namespace ringmux::mux
