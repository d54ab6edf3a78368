// WorkerStream: one stream served by application threads (a storage node's workers)
// while its connection lives on a loop.
//
// Inbound: the loop pushes each delivery of the stream into the stream's SPSC slot ring
// (the loop claims and commits; the reader acquires a slot, reads it in place and
// releases it). A reader with nothing to read sleeps on a futex (engine::WakeWord) until
// the loop commits, or until its deadline; the loop wakes it once per turn, after the
// turn's deliveries, and makes that syscall only when the reader is asleep. A release adds the slot's bytes to an atomic count and the loop turns
// the count into flow-control credit (Connection::consume) through the stream's task. The
// loop also credits up to WorkerStreamOptions::credit_ahead_bytes of what it delivered
// before the reader released it, so a reader that waits for a CPU does not stop the sender.
//
// The stream's task: one intrusive engine::Task per stream, posted to the loop's lock-free
// MPSC stack by whichever thread finds the stream's request bits empty (so at most one is
// queued), and run on the loop, which takes all the bits at once: credit, a write, a write
// given up at its deadline, a cancel. The loop takes the stack every iteration; a post
// writes the loop's eventfd only when the loop may be asleep (engine::Loop::post), so a
// busy loop costs the reader and the writer no syscall, and a burst of requests to a
// sleeping loop costs one eventfd write.
//
// Outbound: write() hands its bytes to the loop through the task (no copy here: the loop
// reads them while the writer sleeps) and sleeps until the loop has taken them all into
// its send batches (credit permitting) or its deadline passes; then the stream is reset
// (deadline_exceeded), so nothing is left half-written.
//
// Memory: the ring's slots keep their buffers' capacity, and deliveries that find the ring
// full wait on the loop side in a queue that keeps its slots' buffers too; what both hold
// is bounded by the stream's receive window plus the credit given ahead. No allocation per
// message once warm.
//
// Threads and lifetime: created on the loop thread (open() or serve()). One reader thread
// at a time calls acquire/release; one writer thread at a time calls write/end (the same
// thread or another); any thread may cancel(). Held by shared_ptr: the connection holds
// it until the stream's end is delivered, a queued task until it has run, the worker as
// long as it likes. It may outlive its stream and its connection, not its loop.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "ringmux/base/limits.h"
#include "ringmux/base/result.h"
#include "ringmux/base/ring_queue.h"
#include "ringmux/engine/loop.h"
#include "ringmux/engine/wake_word.h"
#include "ringmux/mux/link/connection.h"
#include "ringmux/mux/workers/slot_ring.h"

namespace ringmux::mux {

struct WorkerStreamOptions {
  // Slots of the ring, a power of two >= 2: deliveries the reader may have waiting before
  // more wait on the loop side.
  uint32_t slots = limits::worker_stream_slots_default;
  // How long acquire() and write() look for their event before they sleep in the kernel
  // (0: sleep at once). See limits::worker_spin_ns_default.
  uint64_t spin_ns = limits::worker_spin_ns_default;
  // Received bytes the loop may credit to the peer before the reader has released them, so
  // that a reader waiting for a CPU does not stop the sender (the credit round trip would
  // otherwise pass through the reader's scheduling). The stream then holds at most its
  // window plus this; the connection's credit still waits for the release, so all streams
  // together hold no more than the connection window. 0: credit on release only. See
  // limits::worker_stream_credit_ahead_bytes_default.
  uint64_t credit_ahead_bytes = limits::worker_stream_credit_ahead_bytes_default;
};

// What a WorkerStream counted (WorkerStream::stats(): a snapshot, any thread).
struct WorkerStreamStats {
  uint64_t deliveries = 0;       // messages the loop committed to the ring (data, end, finish)
  uint64_t received_bytes = 0;   // bytes the loop received for the stream (in the ring or queued)
  uint64_t reader_sleeps = 0;    // futex waits of the reader (acquire)
  uint64_t reader_timeouts = 0;  // of those, ended by the deadline
  uint64_t reader_wakes = 0;     // futex wakes the loop made for a sleeping reader
  uint64_t writer_sleeps = 0;    // futex waits of the writer (write / end)
  uint64_t writer_wakes = 0;     // futex wakes the loop made for a sleeping writer
  uint64_t tasks_run = 0;        // runs of the stream's task on the loop
  uint64_t credit_bytes = 0;     // received bytes the loop returned as stream credit (ahead or on release)
  uint64_t credit_ahead_bytes = 0;  // of those, credited before the reader released them (the
                                    // connection's credit waits for the release)
  uint64_t queued_peak = 0;      // most deliveries that waited on the loop side for a slot
};

class WorkerStream final : public std::enable_shared_from_this<WorkerStream> {
 public:
  // One delivery of the stream, borrowed from its slot between acquire() and release().
  struct Message {
    std::vector<std::byte> bytes;  // capacity kept across uses of the slot
    bool end_stream = false;       // the peer half-closed after these bytes
    bool finished = false;         // the stream is over; `error` says how (the last message)
    MuxError error = MuxError::none;
  };

  // ---- loop thread: creation ----

  // Opens a stream to `handler_id` on `connection` (Connection::open_owned: a payload larger
  // than the window follows as DATA). Errors: those of open_owned (refused, stream_closed,
  // deadline_exceeded); the stream is then not returned.
  static Result<std::shared_ptr<WorkerStream>, MuxError> open(Connection& connection, uint32_t handler_id,
                                                              uint64_t deadline_ns,
                                                              std::span<const std::byte> payload, bool end_stream,
                                                              const WorkerStreamOptions& options = {});
  // Serves a stream the peer opened, from inside a Registry stream handler: the handler
  // returns `observer` to the connection (which owns it) and hands `stream` to a worker.
  // The OPEN's payload is the first message.
  struct Served {
    std::shared_ptr<WorkerStream> stream;
    StreamObserver* observer;
  };
  static Served serve(const StreamStart& start, const WorkerStreamOptions& options = {});

  // ---- the reader ----

  // The oldest message, sleeping until one arrives or until `deadline_ns` (monotonic, as
  // engine::Loop::clock_ns; 0 = none; a passed deadline only looks). nullptr at the
  // deadline. Acquiring again before release() returns the same message; after the
  // finished message was released, every acquire returns it again at once.
  const Message* acquire(uint64_t deadline_ns) noexcept;
  // Hands the acquired message back; its bytes become credit for the peer.
  void release() noexcept;

  // ---- the writer ----

  // Sends `bytes` (then half-closes if `end_stream`), sleeping until the loop has taken all
  // of them into its send batches or until `deadline_ns` (0 = none). `bytes` is read on the
  // loop while this sleeps: no copy is made of it. Errors: the stream's (stream_stopped,
  // stream_closed once it ended, its reset reason such as cancelled), deadline_exceeded
  // (the stream is then reset so that nothing is left half-written).
  Result<void, MuxError> write(std::span<const std::byte> bytes, bool end_stream, uint64_t deadline_ns) noexcept;
  // Half-closes: write(nothing, end).
  Result<void, MuxError> end(uint64_t deadline_ns) noexcept { return write({}, true, deadline_ns); }

  // ---- any thread ----

  // Resets the stream with cancelled: the peer's handler observes it; a blocked write
  // fails with cancelled; the reader gets the finished message (error cancelled).
  void cancel() noexcept;
  WorkerStreamStats stats() const noexcept;
  StreamId id() const noexcept { return id_.load(std::memory_order_relaxed); }

  // Public for std::make_shared only: use open() or serve().
  struct Private {};
  WorkerStream(Private, Connection& connection, const WorkerStreamOptions& options);
  ~WorkerStream();
  WorkerStream(const WorkerStream&) = delete;
  WorkerStream& operator=(const WorkerStream&) = delete;

 private:
  class Observer;  // what the connection holds: forwards the stream's events to the loop side
  // Requests the loop takes in the stream's task (bits of pending_).
  enum Request : uint32_t {
    request_credit = 1,   // bytes were released (or slots freed): credit, and refill the ring
    request_write = 2,    // write_bytes_ / write_end_ hold a new write
    request_abandon = 4,  // the write's deadline passed
    request_cancel = 8,
  };

  // Any thread: sets `bits`, and posts the task if none is queued.
  void request(uint32_t bits) noexcept;
  static void on_task(engine::Task* task) noexcept;

  // Loop side.
  void on_data(std::span<const std::byte> bytes, bool end_stream) noexcept;
  void on_finished(MuxError error) noexcept;
  // Commits one message into the ring (the reader is woken) or queues it behind the others.
  Message& next_message() noexcept;
  void commit_message() noexcept;
  void refill() noexcept;  // moves queued messages into the ring while there is room
  // Credits what the rule allows now: every byte received, less those held unreleased
  // beyond options_.credit_ahead_bytes.
  void credit() noexcept;
  // Wakes the reader at the end of the loop's turn (engine::Loop::defer), once.
  void wake_reader_soon() noexcept;
  static void on_wake_reader(engine::Deferred& deferred) noexcept;
  void start_write() noexcept;
  void continue_write() noexcept;
  void complete_write(MuxError error) noexcept;

  // The waits of the reader and the writer: spin for options_.spin_ns, then sleep on
  // `word` until `ready()` or `deadline_ns`. Returns ready().
  template <typename Ready>
  bool wait_for(engine::WakeWord& word, uint64_t deadline_ns, Ready&& ready) noexcept;

  engine::Loop& loop_;
  const WorkerStreamOptions options_;

  // ---- shared between the loop and the workers ----
  SlotRing<Message> ring_;
  engine::WakeWord reader_wake_;
  engine::WakeWord writer_wake_;
  alignas(cache_line_bytes) std::atomic<uint32_t> pending_{0};  // Request bits not yet taken
  std::atomic<uint64_t> released_bytes_{0};                     // released, not yet credited
  std::atomic<StreamId> id_{0};
  // The write request: set by the writer before request(request_write), read by the loop
  // after it took the bit; the result is set by the loop before write_done_. Writes are
  // numbered, so that an abandon names the write it gives up (abandon_sequence_ may be
  // rewritten for a later write while the loop looks at an earlier abandon: atomic).
  std::span<const std::byte> write_bytes_;
  bool write_end_ = false;
  uint64_t write_sequence_ = 0;
  std::atomic<uint64_t> abandon_sequence_{0};
  MuxError write_error_ = MuxError::none;
  std::atomic<bool> write_done_{true};
  struct StreamTask : engine::Task {
    WorkerStream* owner = nullptr;
  } task_;
  // Keeps the stream alive while its task is queued: set by the poster, taken by the task.
  std::shared_ptr<WorkerStream> task_keep_;

  // ---- the reader's ----
  std::size_t acquired_bytes_ = 0;
  bool acquired_ = false;
  Message ended_;  // the finished message, once released (ended_.finished)

  // ---- the loop's ----
  Connection* connection_;  // null once the stream has finished: never touched after
  RingQueue<Message> queued_;  // deliveries waiting for a free slot, oldest first
  bool finished_ = false;
  MuxError finished_error_ = MuxError::none;
  engine::Deferred wake_reader_;
  std::shared_ptr<WorkerStream> wake_reader_keep_;  // alive while the wake is queued
  std::size_t write_taken_ = 0;
  bool write_active_ = false;
  uint64_t active_sequence_ = 0;  // write_sequence_ of the write in progress
  // Flow control: bytes released by the reader (as the task has taken them) and credited
  // on the connection (released bytes only); received_bytes_ and credit_bytes_ below count
  // the bytes received and credited on the stream (credit_bytes_ - released_total_, the
  // credit given ahead, never exceeds options_.credit_ahead_bytes).
  uint64_t released_total_ = 0;
  uint64_t connection_credited_ = 0;
  std::atomic<uint64_t> deliveries_{0};
  std::atomic<uint64_t> tasks_run_{0};
  std::atomic<uint64_t> credit_bytes_{0};
  std::atomic<uint64_t> credit_ahead_bytes_{0};
  std::atomic<uint64_t> received_bytes_{0};
  std::atomic<uint64_t> queued_peak_{0};
};

}  // namespace ringmux::mux
