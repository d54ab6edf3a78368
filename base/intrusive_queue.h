// IntrusiveQueue: a FIFO of objects that carry their own links. Pushing, popping and
// removing an object from anywhere in the queue cost O(1) and never allocate, whatever
// the queue's length: the shape of a scheduler's run queue (the session's writable
// streams, served round robin). An object is in at most one queue per Links member, and
// must leave it (remove) before it is destroyed. Single-threaded.
#pragma once

#include <cstddef>

#include "ringmux/base/assert.h"

namespace ringmux {

// The links an object embeds, one per queue it can be in.
template <typename T>
struct QueueLinks {
  T* prev = nullptr;
  T* next = nullptr;
  bool queued = false;
};

template <typename T, QueueLinks<T> T::*links>
class IntrusiveQueue {
 public:
  IntrusiveQueue() = default;
  IntrusiveQueue(const IntrusiveQueue&) = delete;
  IntrusiveQueue& operator=(const IntrusiveQueue&) = delete;

  bool empty() const noexcept { return head_ == nullptr; }
  std::size_t size() const noexcept { return size_; }
  static bool queued(const T& item) noexcept { return (item.*links).queued; }

  T& front() noexcept {
    RM_ASSERT(head_ != nullptr);
    return *head_;
  }

  void push_back(T& item) noexcept {
    QueueLinks<T>& link = item.*links;
    RM_ASSERT(!link.queued);
    link.prev = tail_;
    link.next = nullptr;
    link.queued = true;
    if (tail_ != nullptr) {
      (tail_->*links).next = &item;
    } else {
      head_ = &item;
    }
    tail_ = &item;
    size_++;
  }

  void push_front(T& item) noexcept {
    QueueLinks<T>& link = item.*links;
    RM_ASSERT(!link.queued);
    link.prev = nullptr;
    link.next = head_;
    link.queued = true;
    if (head_ != nullptr) {
      (head_->*links).prev = &item;
    } else {
      tail_ = &item;
    }
    head_ = &item;
    size_++;
  }

  T& pop_front() noexcept {
    T& item = front();
    remove(item);
    return item;
  }

  // Takes `item`, which must be in this queue, out of it.
  void remove(T& item) noexcept {
    QueueLinks<T>& link = item.*links;
    RM_ASSERT(link.queued && size_ > 0);
    if (link.prev != nullptr) {
      (link.prev->*links).next = link.next;
    } else {
      RM_ASSERT(head_ == &item);
      head_ = link.next;
    }
    if (link.next != nullptr) {
      (link.next->*links).prev = link.prev;
    } else {
      RM_ASSERT(tail_ == &item);
      tail_ = link.prev;
    }
    link = QueueLinks<T>{};
    size_--;
  }

 private:
  T* head_ = nullptr;
  T* tail_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace ringmux
