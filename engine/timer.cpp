#include "ringmux/engine/timer.h"

#include "ringmux/base/assert.h"

namespace ringmux::engine {

void TimerHeap::place(Timer* timer, uint32_t index) noexcept {
  heap_[index] = timer;
  timer->heap_index_ = index;
}

void TimerHeap::sift_up(uint32_t index) noexcept {
  Timer* timer = heap_[index];
  while (index > 0) {
    const uint32_t parent = (index - 1) / 2;
    if (heap_[parent]->deadline_ns_ <= timer->deadline_ns_) break;
    place(heap_[parent], index);
    index = parent;
  }
  place(timer, index);
}

void TimerHeap::sift_down(uint32_t index) noexcept {
  const auto count = static_cast<uint32_t>(heap_.size());
  Timer* timer = heap_[index];
  for (;;) {
    uint32_t child = 2 * index + 1;
    if (child >= count) break;
    if (child + 1 < count && heap_[child + 1]->deadline_ns_ < heap_[child]->deadline_ns_) child++;
    if (timer->deadline_ns_ <= heap_[child]->deadline_ns_) break;
    place(heap_[child], index);
    index = child;
  }
  place(timer, index);
}

void TimerHeap::arm(Timer& timer, uint64_t deadline_ns) {
  RM_ASSERT(timer.callback_ != nullptr);
  if (timer.armed()) disarm(timer);
  timer.deadline_ns_ = deadline_ns;
  heap_.push_back(&timer);
  sift_up(static_cast<uint32_t>(heap_.size() - 1));
  RM_DEBUG_ASSERT((check_invariant(), true));
}

void TimerHeap::remove_at(uint32_t index) noexcept {
  RM_ASSERT(index < heap_.size());
  Timer* removed = heap_[index];
  Timer* last = heap_.back();
  heap_.pop_back();
  removed->heap_index_ = Timer::npos;
  if (removed == last) return;
  place(last, index);
  sift_down(index);
  sift_up(last->heap_index_);
}

void TimerHeap::disarm(Timer& timer) noexcept {
  if (!timer.armed()) return;
  RM_ASSERT(heap_[timer.heap_index_] == &timer);
  remove_at(timer.heap_index_);
  RM_DEBUG_ASSERT((check_invariant(), true));
}

uint64_t TimerHeap::next_deadline_ns() const noexcept {
  return heap_.empty() ? UINT64_MAX : heap_[0]->deadline_ns_;
}

uint32_t TimerHeap::fire_expired(uint64_t now_ns, uint32_t budget) noexcept {
  uint32_t fired = 0;
  while (fired < budget && !heap_.empty() && heap_[0]->deadline_ns_ <= now_ns) {
    Timer* timer = heap_[0];
    remove_at(0);
    fired++;
    timer->callback_(*timer);  // may re-arm itself or touch other timers
  }
  return fired;
}

void TimerHeap::check_invariant() const noexcept {
  for (uint32_t i = 0; i < heap_.size(); i++) {
    RM_ASSERT(heap_[i]->heap_index_ == i);
    if (i > 0) RM_ASSERT(heap_[(i - 1) / 2]->deadline_ns_ <= heap_[i]->deadline_ns_);
  }
}

}  // namespace ringmux::engine
