#include "replay/held.h"

#include <algorithm>

#include "base/assert.h"

namespace ringmux::replay {

uint64_t HeldBatches::push(ByteVector& control, ByteVector& data) noexcept {
  const uint64_t bytes = control.size() + data.size();
  RM_ASSERT(bytes > 0);
  RM_ASSERT(fits(bytes));
  Batch batch;
  if (!spare_.empty()) {
    batch = std::move(spare_.back());
    spare_.pop_back();
  }
  batch.start = tail_;
  batch.control.swap(control);  // the caller gets the spare's (empty) buffers back
  batch.data.swap(data);
  batches_.push_back(std::move(batch));
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
    Batch& front = batches_.front();
    if (spare_.size() < spare_batches_max) {
      front.control.clear();  // capacity kept for the next push
      front.data.clear();
      spare_.push_back(std::move(front));
    }
    batches_.pop_front();
  }
  RM_DEBUG_ASSERT(invariant());
  return released;
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
  for (auto it = batches_.rbegin(); it != batches_.rend(); ++it) {
    if (it->start <= position && position < it->end()) return &*it;
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
  for (const Batch& batch : batches_) {
    if (batch.start != expect || batch.size() == 0) return false;
    expect = batch.end();
  }
  return expect == tail_;
}

}  // namespace ringmux::replay
