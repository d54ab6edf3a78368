// Pooled allocation of small fixed-size objects made and destroyed once per call or stream
// (a unary call's client and server objects, its responder): a per-thread free list per
// block size, so that in steady state such an object costs no heap allocation.
//
//   class Call final : public Observer, public Pooled<Call> { ... };   // new/delete pooled
//   std::allocate_shared<Responder>(PoolAllocator<Responder>(), ...);  // shared_ptr pooled
//
// Each thread keeps at most pool_blocks_max free blocks of each size (the rest go back to
// the heap), so what a burst left behind is bounded. A block freed on another thread than
// the one that allocated it joins that thread's list: correct, and rare (a responder
// released by a worker). Thread-safe by being per-thread; no locks, no atomics.
#pragma once

#include <cstddef>
#include <new>

#include "ringmux/base/assert.h"

namespace ringmux {

namespace pool_detail {

// Free blocks kept per thread and block size: 4096 covers thousands of calls in flight on
// a loop; beyond it a burst's leftovers go back to the heap.
inline constexpr std::size_t pool_blocks_max = 4096;

constexpr std::size_t block_bytes(std::size_t bytes) noexcept { return (bytes + 15) / 16 * 16; }

template <std::size_t Bytes>
struct FreeList {
  struct Node {
    Node* next;
  };
  // False once this thread's list was destroyed (thread exit): a plain thread_local bool,
  // trivially destructible, so reading it after the list's destructor ran is defined.
  static inline thread_local bool alive = true;
  Node* head = nullptr;
  std::size_t count = 0;
  ~FreeList() {
    alive = false;
    while (head != nullptr) {
      Node* next = head->next;
      ::operator delete(static_cast<void*>(head));
      head = next;
    }
  }
};

template <std::size_t Bytes>
FreeList<Bytes>& free_list() noexcept {
  thread_local FreeList<Bytes> list;
  return list;
}

}  // namespace pool_detail

template <std::size_t Bytes>
void* pool_allocate() {
  static_assert(Bytes >= sizeof(void*) && Bytes % 16 == 0);
  auto& list = pool_detail::free_list<Bytes>();
  if (list.head != nullptr) {
    auto* node = list.head;
    list.head = node->next;
    list.count--;
    return node;
  }
  return ::operator new(Bytes);
}

template <std::size_t Bytes>
void pool_free(void* block) noexcept {
  if (!pool_detail::FreeList<Bytes>::alive) {
    ::operator delete(block);
    return;
  }
  auto& list = pool_detail::free_list<Bytes>();
  if (list.count >= pool_detail::pool_blocks_max) {
    ::operator delete(block);
    return;
  }
  auto* node = static_cast<typename pool_detail::FreeList<Bytes>::Node*>(block);
  node->next = list.head;
  list.head = node;
  list.count++;
}

// A base that makes `new T` / `delete` of T use the pool (also through a base pointer
// with a virtual destructor: the deleting destructor calls T's operator delete).
template <typename T>
struct Pooled {
  static void* operator new(std::size_t bytes) {
    static_assert(alignof(T) <= 16, "pooled blocks are 16-byte aligned");
    RM_ASSERT(bytes == sizeof(T));  // not a derived class of another size
    return pool_allocate<pool_detail::block_bytes(sizeof(T))>();
  }
  static void operator delete(void* block) noexcept { pool_free<pool_detail::block_bytes(sizeof(T))>(block); }
};

// An allocator for std::allocate_shared: single objects (the shared_ptr's control block
// with the object in it) come from the pool.
template <typename T>
struct PoolAllocator {
  using value_type = T;
  PoolAllocator() noexcept = default;
  template <typename U>
  PoolAllocator(const PoolAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    static_assert(alignof(T) <= 16, "pooled blocks are 16-byte aligned");
    if (n == 1) return static_cast<T*>(pool_allocate<pool_detail::block_bytes(sizeof(T))>());
    return static_cast<T*>(::operator new(n * sizeof(T)));
  }
  void deallocate(T* block, std::size_t n) noexcept {
    if (n == 1) return pool_free<pool_detail::block_bytes(sizeof(T))>(block);
    ::operator delete(static_cast<void*>(block));
  }
  template <typename U>
  bool operator==(const PoolAllocator<U>&) const noexcept {
    return true;
  }
};

}  // namespace ringmux
