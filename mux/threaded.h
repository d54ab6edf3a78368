// Access to a Connection from application threads (a storage node's workers).
//
// The connection lives on its loop and is touched only there: every call made here
// reaches the loop as a posted task (lock-free stack plus an eventfd wake-up, see
// engine::Loop::post), and results come back through memory the calling thread owns.
//
//   RemoteCaller: unary calls, blocking with a deadline or asynchronous.
//   InboundQueue: a stream's inbound bytes handed to one worker thread through an SPSC
//                 slot ring (the loop produces, the worker acquires, reads in place and
//                 releases); released bytes become flow-control credit on the loop.
//
// Lifetime: a RemoteCaller or InboundQueue must not outlive its Connection, and the
// Connection must not be destroyed while a call made through them is in flight.
#pragma once

#include <atomic>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/result.h"
#include "mux/connection.h"
#include "mux/slot_ring.h"

namespace ringmux::mux {

// The outcome of a unary call made from another thread: the response (owned), or the
// error and the peer's message.
struct CallOutcome {
  MuxError error = MuxError::none;
  std::vector<std::byte> response;
  std::string message;
};

class RemoteCaller {
 public:
  explicit RemoteCaller(Connection& connection) noexcept : connection_(connection) {}

  // Any thread but the connection's loop thread (it would deadlock: asserted). Blocks
  // until the response, the error, or `deadline_ns` (monotonic clock; 0 = none), whose
  // expiry cancels the call on the peer too. `request` is read on the loop while this
  // blocks: no copy is made of it here.
  CallOutcome call(uint32_t handler_id, std::span<const std::byte> request, uint64_t deadline_ns) noexcept;

  // Any thread. Returns at once; `done` runs on the loop thread (it must not block) with
  // the result. `request` is moved into the posted task.
  void call_async(uint32_t handler_id, std::vector<std::byte> request, uint64_t deadline_ns, CallCallback done);

 private:
  Connection& connection_;
};

// One stream's inbound data, delivered to a worker thread. Create it on the loop thread
// and pass it as the stream's observer; the worker then calls acquire / release.
class InboundQueue final : public StreamObserver {
 public:
  struct Message {
    std::vector<std::byte> bytes;  // capacity kept across uses of the slot
    bool end_stream = false;
    bool finished = false;  // the stream is over; `error` says how
    MuxError error = MuxError::none;
  };

  // `capacity` slots (a power of two). The stream's window bounds the bytes queued; the
  // slot count bounds the messages (beyond it, messages wait on the loop side).
  InboundQueue(Connection& connection, uint32_t capacity = 64);

  void set_stream(StreamId id) noexcept { id_ = id; }

  // ---- worker thread ----
  // The oldest message, waiting until one arrives or `timeout_ns` passes (nullptr then).
  // The message is borrowed: read it in place, then release().
  const Message* acquire(uint64_t timeout_ns) noexcept;
  // Hands the message back; its bytes become credit for the peer.
  void release() noexcept;

  // ---- loop thread (StreamObserver) ----
  void on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept override;
  void on_stream_finished(MuxError error) noexcept override;

 private:
  void publish() noexcept;  // moves overflow messages into the ring while there is room
  static void on_credit_task(engine::Task* task) noexcept;

  Connection& connection_;
  StreamId id_ = 0;
  SlotRing<Message> ring_;
  std::vector<Message> overflow_;  // loop side: messages waiting for a free slot
  std::atomic<uint32_t> signal_{0};  // bumped per publish; the worker waits on it
  // Released bytes not yet credited, and whether a credit task is already posted.
  std::atomic<uint64_t> released_bytes_{0};
  std::atomic<bool> credit_posted_{false};
  struct CreditTask : engine::Task {
    InboundQueue* owner = nullptr;
  } credit_task_;
  std::size_t acquired_bytes_ = 0;  // worker side
};

}  // namespace ringmux::mux
