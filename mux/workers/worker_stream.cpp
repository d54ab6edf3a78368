#include "ringmux/mux/workers/worker_stream.h"

#include <algorithm>
#include <utility>

#include "ringmux/base/assert.h"

namespace ringmux::mux {

// What the connection holds for the stream (and deletes after on_stream_finished): the
// events go to the WorkerStream it keeps alive until then.
class WorkerStream::Observer final : public StreamObserver {
 public:
  explicit Observer(std::shared_ptr<WorkerStream> stream) noexcept : stream_(std::move(stream)) {}
  void on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept override {
    stream_->on_data(bytes, end_stream);
  }
  void on_stream_writable() noexcept override { stream_->continue_write(); }
  void on_stream_stopped() noexcept override { stream_->continue_write(); }
  void on_stream_finished(MuxError error) noexcept override { stream_->on_finished(error); }

 private:
  std::shared_ptr<WorkerStream> stream_;
};

WorkerStream::WorkerStream(Private, Connection& connection, const WorkerStreamOptions& options)
    : loop_(connection.loop()), options_(options), ring_(options.slots), connection_(&connection),
      wake_reader_(&WorkerStream::on_wake_reader, this) {
  task_.run = &WorkerStream::on_task;
  task_.owner = this;
}

WorkerStream::~WorkerStream() {
  // A queued task or wake keeps the stream alive, and so does the connection until the end.
  RM_ASSERT(pending_.load(std::memory_order_acquire) == 0);
  RM_ASSERT(!wake_reader_.queued());
  RM_ASSERT(connection_ == nullptr);
}

Result<std::shared_ptr<WorkerStream>, MuxError> WorkerStream::open(Connection& connection, uint32_t handler_id,
                                                                   uint64_t deadline_ns,
                                                                   std::span<const std::byte> payload,
                                                                   bool end_stream,
                                                                   const WorkerStreamOptions& options) {
  RM_ASSERT(connection.loop().on_loop_thread());
  auto stream = std::make_shared<WorkerStream>(Private{}, connection, options);
  // The connection owns the observer even when the open fails (it hears why on the next
  // turn and is deleted then, releasing the stream).
  auto opened = connection.open_owned(handler_id, deadline_ns, payload, end_stream, *new Observer(stream));
  if (!opened) return Err{opened.error()};
  stream->id_.store(opened.value(), std::memory_order_relaxed);
  return stream;
}

WorkerStream::Served WorkerStream::serve(const StreamStart& start, const WorkerStreamOptions& options) {
  RM_ASSERT(start.connection->loop().on_loop_thread());
  auto stream = std::make_shared<WorkerStream>(Private{}, *start.connection, options);
  stream->id_.store(start.id, std::memory_order_relaxed);
  auto* observer = new Observer(stream);
  return Served{std::move(stream), observer};
}

// ---- requests to the loop ----------------------------------------------------------------

void WorkerStream::request(uint32_t bits) noexcept {
  // The release half publishes what the request is about (the write, the released count);
  // the loop's exchange in on_task acquires it.
  if (pending_.fetch_or(bits, std::memory_order_acq_rel) != 0) return;  // queued: it takes these too
  // This thread turned the bits from empty to set: it alone posts, so the task is queued at
  // most once. The loop took task_keep_ before it emptied the bits (on_task): no race.
  task_keep_ = shared_from_this();
  loop_.post(&task_);
}

void WorkerStream::on_task(engine::Task* task) noexcept {
  WorkerStream& self = *static_cast<StreamTask*>(task)->owner;
  // Taken before the bits: a request after the exchange posts again and sets it again.
  std::shared_ptr<WorkerStream> keep = std::move(self.task_keep_);
  const uint32_t bits = self.pending_.exchange(0, std::memory_order_acq_rel);
  RM_ASSERT(bits != 0);
  self.tasks_run_.store(self.tasks_run_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  if ((bits & request_write) != 0) self.start_write();
  // The abandon names its write: it may come with the writer's next write (the loop
  // finished the earlier one before it saw the abandon, and the writer went on), or with
  // the write it concerns before that one has started.
  if ((bits & request_abandon) != 0 && self.write_active_ &&
      self.abandon_sequence_.load(std::memory_order_relaxed) == self.active_sequence_) {
    if (self.connection_ != nullptr) self.connection_->reset(self.id(), MuxError::deadline_exceeded);
    self.complete_write(MuxError::deadline_exceeded);
  }
  if ((bits & request_credit) != 0) {
    self.released_total_ += self.released_bytes_.exchange(0, std::memory_order_acq_rel);
    self.credit();
    self.refill();
  }
  if ((bits & request_cancel) != 0 && self.connection_ != nullptr) self.connection_->cancel(self.id());
  // `keep` goes last: it may hold the last reference.
}

// ---- the loop: deliveries ------------------------------------------------------------------

WorkerStream::Message& WorkerStream::next_message() noexcept {
  if (queued_.empty()) {
    if (Message* slot = ring_.claim()) return *slot;
  }
  // The ring is full (or others wait already, and order is kept): the message waits here.
  // The slot handed back keeps the buffer it held last time, so this allocates only while
  // the queue grows past its high-water mark.
  Message& message = queued_.push_back_slot();
  if (queued_.size() > queued_peak_.load(std::memory_order_relaxed)) {
    queued_peak_.store(queued_.size(), std::memory_order_relaxed);
  }
  return message;
}

void WorkerStream::commit_message() noexcept {
  if (!queued_.empty()) return;  // next_message() queued it; refill() moves it in later
  ring_.commit();
  deliveries_.store(deliveries_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  wake_reader_soon();
}

void WorkerStream::wake_reader_soon() noexcept {
  // Once per turn of the loop, after all of the turn's deliveries: a reader woken by the
  // first would take it alone and sleep again before the next (one futex wake and one
  // reader wake-up per delivery; a bulk stream gets several per turn).
  if (wake_reader_.queued()) return;
  wake_reader_keep_ = shared_from_this();
  loop_.defer(wake_reader_);
}

void WorkerStream::on_wake_reader(engine::Deferred& deferred) noexcept {
  WorkerStream& self = *static_cast<WorkerStream*>(deferred.context());
  std::shared_ptr<WorkerStream> keep = std::move(self.wake_reader_keep_);  // may be the last reference
  self.reader_wake_.wake();
}

void WorkerStream::on_data(std::span<const std::byte> bytes, bool end_stream) noexcept {
  RM_ASSERT(!finished_);
  Message& message = next_message();
  // The one copy of this path: out of the receive buffer (handed back to the kernel after
  // this call) into the slot's buffer, which the reader reads in place on its own time.
  message.bytes.assign(bytes.begin(), bytes.end());
  message.end_stream = end_stream;
  message.finished = false;
  message.error = MuxError::none;
  commit_message();
  received_bytes_.store(received_bytes_.load(std::memory_order_relaxed) + bytes.size(), std::memory_order_relaxed);
  credit();
}

void WorkerStream::credit() noexcept {
  if (connection_ == nullptr) return;
  // The stream's window: every byte received may be credited once the reader has released
  // it, and up to credit_ahead_bytes before. The connection's: released bytes only, so
  // that the connection window still bounds what all of its streams hold. The loop alone
  // writes these counters: its relaxed loads see its own stores.
  const uint64_t received = received_bytes_.load(std::memory_order_relaxed);
  const uint64_t credited = credit_bytes_.load(std::memory_order_relaxed);
  const uint64_t allowed = std::min(received, engine::add_saturating(released_total_, options_.credit_ahead_bytes));
  const uint64_t stream_bytes = allowed > credited ? allowed - credited : 0;
  const uint64_t connection_bytes = released_total_ - connection_credited_;
  if (stream_bytes == 0 && connection_bytes == 0) return;
  // Of the stream's credit, the part not released yet is given ahead.
  const uint64_t ahead = allowed > released_total_ ? std::min(stream_bytes, allowed - released_total_) : 0;
  credit_bytes_.store(credited + stream_bytes, std::memory_order_relaxed);
  connection_credited_ = released_total_;
  connection_->consume(id(), stream_bytes, connection_bytes);
  credit_ahead_bytes_.store(credit_ahead_bytes_.load(std::memory_order_relaxed) + ahead, std::memory_order_relaxed);
}

void WorkerStream::on_finished(MuxError error) noexcept {
  RM_ASSERT(!finished_);
  finished_ = true;
  finished_error_ = error;
  // The connection's credit of what the reader has not released yet comes back now: the
  // connection may be gone by the time the reader gets to it, and credit that never came
  // back would shrink the connection's window for good (and in the end stop every stream
  // on it). What the reader still holds is the stream's: at most its window plus the
  // credit given ahead.
  if (const uint64_t received = received_bytes_.load(std::memory_order_relaxed); received > connection_credited_) {
    connection_->consume(id(), 0, received - connection_credited_);
    connection_credited_ = received;
  }
  connection_ = nullptr;  // the connection forgets the stream after this call
  if (write_active_) complete_write(error == MuxError::none ? MuxError::stream_closed : error);
  Message& message = next_message();
  message.bytes.clear();
  message.end_stream = false;
  message.finished = true;
  message.error = error;
  commit_message();
}

void WorkerStream::refill() noexcept {
  uint32_t moved = 0;
  while (!queued_.empty()) {
    Message* slot = ring_.claim();
    if (slot == nullptr) break;
    // Swapped, not copied: the slot's old buffer stays in the queue's vacated slot.
    std::swap(*slot, queued_.front());
    queued_.drop_front();
    ring_.commit();
    moved++;
  }
  if (moved == 0) return;
  deliveries_.store(deliveries_.load(std::memory_order_relaxed) + moved, std::memory_order_relaxed);
  wake_reader_soon();
}

// ---- the loop: writes ------------------------------------------------------------------------

void WorkerStream::start_write() noexcept {
  RM_ASSERT(!write_active_);
  write_active_ = true;
  active_sequence_ = write_sequence_;
  write_taken_ = 0;
  write_error_ = MuxError::none;
  if (finished_) {
    complete_write(finished_error_ == MuxError::none ? MuxError::stream_closed : finished_error_);
    return;
  }
  continue_write();
}

void WorkerStream::continue_write() noexcept {
  if (!write_active_ || connection_ == nullptr) return;
  // An END alone is one write of nothing; bytes go until the session takes no more.
  while (write_taken_ < write_bytes_.size() || (write_end_ && write_taken_ == write_bytes_.size())) {
    auto taken = connection_->write(id(), write_bytes_.subspan(write_taken_), write_end_);
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
  complete_write(MuxError::none);  // nothing to write and no END: done at once
}

void WorkerStream::complete_write(MuxError error) noexcept {
  RM_ASSERT(write_active_);
  write_active_ = false;
  write_error_ = error;
  write_done_.store(true, std::memory_order_release);
  writer_wake_.wake();
}

// ---- the workers -------------------------------------------------------------------------------

template <typename Ready>
bool WorkerStream::wait_for(engine::WakeWord& word, uint64_t deadline_ns, Ready&& ready) noexcept {
  // A short look before the kernel: a bulk stream's next delivery is often microseconds
  // away, and a sleep and a wake-up cost more than that.
  if (engine::spin_until(ready, options_.spin_ns)) return true;
  for (;;) {
    const uint32_t key = word.prepare();
    if (ready()) {
      word.withdraw();
      return true;
    }
    if (!word.wait(key, deadline_ns)) {
      word.withdraw();
      return ready();
    }
    if (ready()) return true;  // woken (the wake cleared the announcement)
  }
}

const WorkerStream::Message* WorkerStream::acquire(uint64_t deadline_ns) noexcept {
  RM_ASSERT(!loop_.on_loop_thread());  // the loop would wait for itself
  if (ended_.finished) return &ended_;  // the end, released already: nothing comes after it
  const Message* message = ring_.acquire();
  if (message == nullptr) {
    const bool passed = deadline_ns != 0 && engine::Loop::clock_ns() >= deadline_ns;
    if (passed || !wait_for(reader_wake_, deadline_ns, [this] { return ring_.acquire() != nullptr; })) return nullptr;
    message = ring_.acquire();
  }
  RM_ASSERT(message != nullptr);
  acquired_ = true;
  acquired_bytes_ = message->bytes.size();
  return message;
}

void WorkerStream::release() noexcept {
  if (ended_.finished) return;  // the end handed out again: not a slot
  RM_ASSERT(acquired_);
  acquired_ = false;
  if (const Message* message = ring_.acquire(); message->finished) {
    // The last message: kept, so that a reader asking again learns the end at once.
    ended_.finished = true;
    ended_.error = message->error;
  }
  ring_.release();
  released_bytes_.fetch_add(acquired_bytes_, std::memory_order_relaxed);
  acquired_bytes_ = 0;
  // Every release tells the loop, even of no bytes: a freed slot lets queued deliveries in.
  // The loop takes the requests of a whole burst of releases in one run of the task.
  request(request_credit);
}

Result<void, MuxError> WorkerStream::write(std::span<const std::byte> bytes, bool end_stream,
                                           uint64_t deadline_ns) noexcept {
  RM_ASSERT(!loop_.on_loop_thread());  // the loop would wait for itself
  RM_ASSERT(write_done_.load(std::memory_order_relaxed));  // one write at a time
  write_bytes_ = bytes;
  write_end_ = end_stream;
  write_sequence_++;
  write_done_.store(false, std::memory_order_relaxed);
  request(request_write);
  auto done = [this] { return write_done_.load(std::memory_order_acquire); };
  if (!wait_for(writer_wake_, deadline_ns, done)) {
    // The deadline passed: the loop resets the stream and completes the write (at once, or
    // it already had); wait for that without a deadline.
    abandon_sequence_.store(write_sequence_, std::memory_order_relaxed);
    request(request_abandon);
    const bool completed = wait_for(writer_wake_, 0, done);
    RM_ASSERT(completed);
  }
  if (write_error_ != MuxError::none) return Err{write_error_};
  return {};
}

void WorkerStream::cancel() noexcept { request(request_cancel); }

WorkerStreamStats WorkerStream::stats() const noexcept {
  WorkerStreamStats stats;
  stats.deliveries = deliveries_.load(std::memory_order_relaxed);
  stats.reader_sleeps = reader_wake_.sleeps();
  stats.reader_timeouts = reader_wake_.timeouts();
  stats.reader_wakes = reader_wake_.wakes();
  stats.writer_sleeps = writer_wake_.sleeps();
  stats.writer_wakes = writer_wake_.wakes();
  stats.tasks_run = tasks_run_.load(std::memory_order_relaxed);
  stats.credit_bytes = credit_bytes_.load(std::memory_order_relaxed);
  stats.credit_ahead_bytes = credit_ahead_bytes_.load(std::memory_order_relaxed);
  stats.received_bytes = received_bytes_.load(std::memory_order_relaxed);
  stats.queued_peak = queued_peak_.load(std::memory_order_relaxed);
  return stats;
}

}  // namespace ringmux::mux
