// Access to a Connection from application threads (a storage node's workers).
//
// The connection lives on its loop and is touched only there: every call made here
// reaches the loop as a posted task (lock-free stack plus an eventfd wake-up, see
// engine::Loop::post), and results come back through memory the calling thread owns.
//
//   RemoteCaller: unary calls, blocking with a deadline or asynchronous.
//   WorkerStream: one stream driven by a worker thread. Inbound bytes reach it through an
//                 SPSC slot ring (the loop produces, the worker acquires, reads in place
//                 and releases; released bytes become flow-control credit on the loop);
//                 outbound, write() blocks until the loop has taken the bytes (credit
//                 permitting) or the deadline passes; cancel() resets the stream.
//
// Lifetime: a RemoteCaller or WorkerStream must not outlive its Connection, and the
// Connection must not be destroyed while a call made through them is in flight.
#pragma once

#include <atomic>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "ringmux/base/result.h"
#include "ringmux/mux/link/connection.h"
#include "ringmux/mux/rpc/call.h"
#include "ringmux/mux/workers/slot_ring.h"

namespace ringmux::mux {

// The outcome of a unary call made from another thread: the response (owned), or the
// error and the peer's message.
struct CallOutcome {
  MuxError error = MuxError::none;
  std::vector<std::byte> response;
  std::string message;

  // Copies the response out of the loop's receive buffer.
  static CallOutcome of(const CallResult& result);
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

// One stream driven by a worker thread. Create it on the loop thread and pass it as the
// observer of Connection::open (the caller owns it and keeps it until the stream has
// finished, i.e. until acquire() returned the message with `finished`); one worker
// thread then calls acquire / release / write / cancel.
class WorkerStream final : public StreamObserver {
 public:
  struct Message {
    std::vector<std::byte> bytes;  // capacity kept across uses of the slot
    bool end_stream = false;
    bool finished = false;  // the stream is over; `error` says how
    MuxError error = MuxError::none;
  };

  // `capacity` slots (a power of two). The stream's window bounds the bytes queued; the
  // slot count bounds the messages (beyond it, messages wait on the loop side).
  WorkerStream(Connection& connection, uint32_t capacity = 64);

  void set_stream(StreamId id) noexcept { id_ = id; }

  // ---- worker thread ----
  // The oldest message, waiting until one arrives or `timeout_ns` passes (nullptr then).
  // The message is borrowed: read it in place, then release().
  const Message* acquire(uint64_t timeout_ns) noexcept;
  // Hands the message back; its bytes become credit for the peer.
  void release() noexcept;
  // Sends `bytes` (then half-closes if `end_stream`), blocking until the loop has taken
  // all of them into its send batches or `deadline_ns` passes (0: no deadline). `bytes`
  // is read on the loop while this blocks: no copy is made of it here. Errors: the
  // stream's (stream_stopped, stream_closed, its reset reason), deadline_exceeded (the
  // stream is then reset so that nothing is left half-written).
  Result<void, MuxError> write(std::span<const std::byte> bytes, bool end_stream, uint64_t deadline_ns) noexcept;
  // Resets the stream with cancelled; the peer's handler observes it.
  void cancel() noexcept;

  // ---- loop thread (StreamObserver) ----
  void on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept override;
  void on_stream_writable() noexcept override { continue_write(); }
  void on_stream_stopped() noexcept override { continue_write(); }
  void on_stream_finished(MuxError error) noexcept override;

 private:
  void publish() noexcept;  // moves overflow messages into the ring while there is room
  // Loop side of write(): takes what the session accepts; completes the waiting worker
  // when all is taken or the stream fails.
  void continue_write() noexcept;
  void complete_write(MuxError error) noexcept;
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
    WorkerStream* owner = nullptr;
  } credit_task_;
  std::size_t acquired_bytes_ = 0;  // worker side
  // The write in progress (loop side while write_done_ == 0).
  std::span<const std::byte> write_bytes_;
  std::size_t write_taken_ = 0;
  bool write_end_ = false;
  bool write_active_ = false;
  MuxError write_error_ = MuxError::none;
  MuxError finished_error_ = MuxError::none;
  bool finished_ = false;
  std::atomic<uint32_t> write_done_{0};
};

}  // namespace ringmux::mux
