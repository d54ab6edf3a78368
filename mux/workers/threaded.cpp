#include "ringmux/mux/workers/threaded.h"

#include <chrono>
#include <memory>
#include <thread>

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

// ---- WorkerStream --------------------------------------------------------------------------

WorkerStream::WorkerStream(Connection& connection, uint32_t capacity) : connection_(connection), ring_(capacity) {
  credit_task_.run = &WorkerStream::on_credit_task;
  credit_task_.owner = this;
}

void WorkerStream::on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept {
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

void WorkerStream::on_stream_finished(MuxError error) noexcept {
  finished_ = true;
  finished_error_ = error;
  if (write_active_) complete_write(error == MuxError::none ? MuxError::stream_closed : error);
  Message message;
  message.finished = true;
  message.error = error;
  overflow_.push_back(std::move(message));
  publish();
}

void WorkerStream::publish() noexcept {
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

const WorkerStream::Message* WorkerStream::acquire(uint64_t timeout_ns) noexcept {
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

void WorkerStream::release() noexcept {
  ring_.release();
  released_bytes_.fetch_add(acquired_bytes_, std::memory_order_release);
  acquired_bytes_ = 0;
  // One credit task in flight at a time: releases in between add to the same count.
  if (!credit_posted_.exchange(true, std::memory_order_acq_rel)) connection_.loop().post(&credit_task_);
}

Result<void, MuxError> WorkerStream::write(std::span<const std::byte> bytes, bool end_stream,
                                           uint64_t deadline_ns) noexcept {
  RM_ASSERT(!connection_.loop().on_loop_thread());
  write_done_.store(0, std::memory_order_relaxed);
  connection_.loop().post_fn([this, bytes, end_stream] {
    write_bytes_ = bytes;
    write_taken_ = 0;
    write_end_ = end_stream;
    write_active_ = true;
    write_error_ = MuxError::none;
    if (finished_) {
      complete_write(finished_error_ == MuxError::none ? MuxError::stream_closed : finished_error_);
      return;
    }
    continue_write();
  });
  // Wait in slices so that the deadline holds (std::atomic::wait has no timeout).
  while (write_done_.load(std::memory_order_acquire) == 0) {
    if (deadline_ns != 0 && Loop::clock_ns() >= deadline_ns) {
      // Give up: reset the stream on the loop, which completes the write with our error.
      connection_.loop().post_fn([this] {
        if (write_active_) {
          // The reset reports the stream's end on a later turn: the write completes now.
          connection_.reset(id_, MuxError::deadline_exceeded);
          complete_write(MuxError::deadline_exceeded);
        }
      });
      write_done_.wait(0, std::memory_order_acquire);
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  if (write_error_ != MuxError::none) return Err{write_error_};
  return {};
}

void WorkerStream::continue_write() noexcept {
  if (!write_active_) return;
  while (write_taken_ < write_bytes_.size() || (write_end_ && write_taken_ == write_bytes_.size())) {
    auto taken = connection_.write(id_, write_bytes_.subspan(write_taken_), write_end_);
    RM_ASSERT(write_active_);  // a write never calls back: a stream it ends is reported later
    if (!taken) {
      complete_write(taken.error());
      return;
    }
    write_taken_ += taken.value();
    if (write_taken_ == write_bytes_.size()) {
      complete_write(MuxError::none);
      return;
    }
    if (taken.value() == 0) return;  // on_stream_writable continues
  }
}

void WorkerStream::complete_write(MuxError error) noexcept {
  write_active_ = false;
  if (write_error_ == MuxError::none) write_error_ = error;
  write_done_.store(1, std::memory_order_release);
  write_done_.notify_one();
}

void WorkerStream::cancel() noexcept {
  connection_.loop().post_fn([this] { connection_.reset(id_, MuxError::cancelled); });
}

void WorkerStream::on_credit_task(engine::Task* task) noexcept {
  WorkerStream* self = static_cast<CreditTask*>(task)->owner;
  self->credit_posted_.store(false, std::memory_order_release);
  const uint64_t bytes = self->released_bytes_.exchange(0, std::memory_order_acq_rel);
  if (bytes > 0 && self->id_ != 0) self->connection_.consume(self->id_, bytes);
  self->publish();  // slots were freed: move waiting messages in
}

}  // namespace ringmux::mux
