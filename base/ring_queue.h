// RingQueue: a FIFO in one growable circular array. Unlike std::deque, which allocates and
// frees a node block as its ends cross block boundaries, it allocates only when it grows
// past its high-water mark (doubling) and never as it moves: a queue whose length is steady
// costs no allocation per push or pop. A vacated slot keeps its value until the slot is
// reused (pop_front() leaves it moved-from; push_back_slot() hands the slot back as it is).
// Single-threaded.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

#include "ringmux/base/assert.h"

namespace ringmux {

template <typename T>
class RingQueue {
 public:
  bool empty() const noexcept { return size_ == 0; }
  std::size_t size() const noexcept { return size_; }

  T& front() noexcept {
    RM_ASSERT(size_ > 0);
    return slots_[head_];
  }
  const T& front() const noexcept {
    RM_ASSERT(size_ > 0);
    return slots_[head_];
  }
  // The i-th from the front.
  T& operator[](std::size_t i) noexcept {
    RM_ASSERT(i < size_);
    return slots_[(head_ + i) & (slots_.size() - 1)];
  }
  const T& operator[](std::size_t i) const noexcept {
    RM_ASSERT(i < size_);
    return slots_[(head_ + i) & (slots_.size() - 1)];
  }

  // Appends a slot and returns it, still holding what it last held (a value dropped
  // earlier, or a default one): the caller overwrites or reuses it.
  T& push_back_slot() {
    if (size_ == slots_.size()) grow();
    size_++;
    return (*this)[size_ - 1];
  }
  void push_back(T value) { push_back_slot() = std::move(value); }
  // Drops the front; its slot keeps the value for a later push_back_slot().
  void drop_front() noexcept {
    RM_ASSERT(size_ > 0);
    head_ = (head_ + 1) & (slots_.size() - 1);
    size_--;
  }
  // Moves the front out.
  T pop_front() noexcept {
    T value = std::move(front());
    drop_front();
    return value;
  }
  // Slots allocated (a power of two, or 0).
  std::size_t capacity() const noexcept { return slots_.size(); }
  // Frees the array when empty.
  void release() noexcept {
    if (size_ != 0) return;
    std::vector<T>().swap(slots_);
    head_ = 0;
  }

 private:
  void grow() {
    const std::size_t capacity = slots_.empty() ? 4 : slots_.size() * 2;  // powers of two
    std::vector<T> bigger(capacity);
    // Every slot moves, the vacant ones too (what they keep is kept), in queue order.
    for (std::size_t i = 0; i < slots_.size(); i++) bigger[i] = std::move(slots_[(head_ + i) & (slots_.size() - 1)]);
    slots_.swap(bigger);
    head_ = 0;
  }

  std::vector<T> slots_;
  std::size_t head_ = 0;
  std::size_t size_ = 0;
};

}  // namespace ringmux
