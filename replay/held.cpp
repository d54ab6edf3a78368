#include "ringmux/replay/held.h"

#include <algorithm>

#include "ringmux/base/assert.h"

namespace ringmux::replay {

uint64_t HeldBatches::push(ByteVector& control, ByteVector& data) noexcept {
  const uint64_t bytes = control.size() + data.size();
  RM_ASSERT(bytes > 0);
  RM_ASSERT(fits(bytes));
  if (!batches_.empty() && bytes <= coalesce_bytes_max) {
    // Copy: a small batch joins the newest one when its buffer has room (no reallocation,
    // so the spans of a send in flight stay valid). Small messages then fill a few
    // buffers instead of a batch each between two ACKs, and cost no allocation.
    ByteVector& last = batches_[batches_.size() - 1].data;
    if (last.capacity() - last.size() >= bytes) {
      last.insert(last.end(), control.begin(), control.end());
      last.insert(last.end(), data.begin(), data.end());
      control.clear();
      data.clear();
      tail_ += bytes;
      bytes_held_peak_ = std::max(bytes_held_peak_, bytes_held());
      RM_DEBUG_ASSERT(invariant());
      return tail_ - bytes;
    }
  }
  Batch& batch = batches_.push_back_slot();
  RM_ASSERT(batch.control.capacity() == 0 && batch.data.capacity() == 0);  // slots keep nothing
  // The spare list can hold every batch the ring holds: it never grows on its own (no
  // allocation per ack), only with the ring (a new high-water mark of batches in flight).
  if (spare_.capacity() < batches_.capacity()) spare_.reserve(batches_.capacity());
  if (!spare_.empty()) {
    // The most recently released first: the buffers in rotation stay few, and warm.
    Batch& spare = spare_.back();
    spare_bytes_ -= spare.control.capacity() + spare.data.capacity();
    batch.control.swap(spare.control);
    batch.data.swap(spare.data);
    spare_.pop_back();
    spare_low_water_ = std::min(spare_low_water_, spare_.size());
  }
  batch.start = tail_;
  batch.control.swap(control);  // the caller gets the spare's (empty) buffers back
  batch.data.swap(data);
  tail_ += bytes;
  bytes_held_peak_ = std::max(bytes_held_peak_, bytes_held());
  RM_DEBUG_ASSERT(invariant());
  return tail_ - bytes;
}

Result<uint64_t, ReplayError> HeldBatches::ack(uint64_t position) noexcept {
  if (position > tail_) return Err{ReplayError::ack_ahead};
  if (position <= acked_) return uint64_t{0};
  const uint64_t released = position - acked_;
  acked_ = position;
  cursor_ = std::max(cursor_, acked_);  // the peer has them: no need to send them again
  while (!batches_.empty() && batches_.front().end() <= acked_) {
    Batch front = batches_.pop_front();
    const std::size_t capacity = front.control.capacity() + front.data.capacity();
    if (spare_bytes_ + capacity > spare_bytes_max) continue;  // freed here
    front.control.clear();  // capacity kept for the next push
    front.data.clear();
    spare_bytes_ += capacity;
    // Reserved with the ring, so no allocation here, except after release_spares() gave
    // the list back (an idle session's trim) while batches were still held.
    if (spare_.size() == spare_.capacity()) spare_.reserve(std::max(batches_.capacity(), spare_.size() + 1));
    spare_.push_back(std::move(front));
  }
  RM_DEBUG_ASSERT(invariant());
  return released;
}

void HeldBatches::decay_spares() noexcept {
  // The oldest spares are at the front (the list is used from the back).
  const std::size_t unused = std::min(spare_low_water_, spare_.size());
  for (std::size_t i = 0; i < unused; i++) {
    spare_bytes_ -= spare_[i].control.capacity() + spare_[i].data.capacity();
  }
  spare_.erase(spare_.begin(), spare_.begin() + static_cast<std::ptrdiff_t>(unused));
  spare_low_water_ = spare_.size();
}

Result<void, ReplayError> HeldBatches::rewind(uint64_t position) noexcept {
  if (position < acked_) return Err{ReplayError::position_gone};
  if (position > tail_) return Err{ReplayError::position_ahead};
  cursor_ = position;
  RM_DEBUG_ASSERT(invariant());
  return {};
}

const HeldBatches::Batch* HeldBatches::batch_at(uint64_t position) const noexcept {
  // Few batches are held (the bound over the batch size): the newest are searched first,
  // since the cursor is almost always in the last one.
  for (std::size_t i = batches_.size(); i-- > 0;) {
    const Batch& batch = batches_[i];
    if (batch.start <= position && position < batch.end()) return &batch;
  }
  return nullptr;
}

HeldSpans HeldBatches::take_unsent() noexcept {
  if (cursor_ == tail_) return {};
  const Batch* batch = batch_at(cursor_);
  RM_ASSERT(batch != nullptr);  // [acked, tail) is held and acked <= cursor < tail
  const uint64_t offset = cursor_ - batch->start;
  HeldSpans spans;
  if (offset < batch->control.size()) {
    spans.first = std::span<const std::byte>(batch->control).subspan(offset);
    spans.second = std::span<const std::byte>(batch->data);
  } else {
    spans.first = std::span<const std::byte>(batch->data).subspan(offset - batch->control.size());
  }
  cursor_ = batch->end();
  RM_DEBUG_ASSERT(invariant());
  return spans;
}

bool HeldBatches::invariant() const noexcept {
  if (!(acked_ <= cursor_ && cursor_ <= tail_)) return false;
  if (batches_.empty()) return acked_ == tail_;
  if (!(batches_.front().start <= acked_ && acked_ < batches_.front().end())) return false;
  uint64_t expect = batches_.front().start;
  for (std::size_t i = 0; i < batches_.size(); i++) {
    const Batch& batch = batches_[i];
    if (batch.start != expect || batch.size() == 0) return false;
    expect = batch.end();
  }
  return expect == tail_;
}

}  // namespace ringmux::replay
