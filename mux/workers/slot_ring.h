// SlotRing<T>: a bounded single-producer / single-consumer ring of slots, addressed by
// 64-bit positions that never wrap (slot index = position & mask).
//
// The producer claims the next free slot, fills it in place and commits it (or aborts);
// the consumer acquires the oldest committed slot, reads it in place (a borrowed view,
// no copy) and releases it, which hands the slot back to the producer. "Full" and
// "empty" are return values (nullptr), never errors.
//
// Invariant: released_ <= committed_ <= released_ + capacity, where committed_ is written
// only by the producer and released_ only by the consumer; slots in [released_,
// committed_) belong to the consumer, the rest to the producer. Each side keeps a cached
// copy of the other's position on its own cache line, so the shared lines move between
// cores only when a side runs out of what it last saw.
//
// Threads: exactly one producer thread and one consumer thread at a time (they may be the
// same). claim/commit/abort are the producer's; acquire/release the consumer's.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>

#include "ringmux/base/assert.h"

namespace ringmux::mux {

inline constexpr std::size_t cache_line_bytes = 64;

template <typename T>
class SlotRing {
 public:
  // `capacity` slots, a power of two >= 2. Slots are default-constructed once, here.
  explicit SlotRing(uint32_t capacity) : mask_(capacity - 1), slots_(new T[capacity]) {
    RM_ASSERT(capacity >= 2 && (capacity & (capacity - 1)) == 0);
  }
  SlotRing(const SlotRing&) = delete;
  SlotRing& operator=(const SlotRing&) = delete;

  uint32_t capacity() const noexcept { return mask_ + 1; }

  // ---- producer ----

  // The next free slot, or nullptr when all are committed and not yet released. Claiming
  // twice without a commit or abort in between is a programmer error.
  T* claim() noexcept {
    RM_DEBUG_ASSERT(!producer_.claimed);
    const uint64_t position = producer_.committed;
    if (position - producer_.released_seen > mask_) {
      producer_.released_seen = released_.load(std::memory_order_acquire);
      if (position - producer_.released_seen > mask_) return nullptr;  // full
    }
#ifndef NDEBUG
    producer_.claimed = true;
#endif
    return &slots_[position & mask_];
  }
  // Publishes the claimed slot to the consumer.
  void commit() noexcept {
#ifndef NDEBUG
    RM_ASSERT(producer_.claimed);
    producer_.claimed = false;
#endif
    producer_.committed++;
    committed_.store(producer_.committed, std::memory_order_release);
  }
  // Gives the claimed slot up; the next claim returns it again.
  void abort() noexcept {
#ifndef NDEBUG
    RM_ASSERT(producer_.claimed);
    producer_.claimed = false;
#endif
  }
  // Committed positions so far (the producer's own count).
  uint64_t committed_position() const noexcept { return producer_.committed; }

  // ---- consumer ----

  // The oldest committed slot, or nullptr when none is waiting. The slot stays the
  // consumer's until release(); acquiring again first returns the same slot.
  const T* acquire() noexcept {
    const uint64_t position = consumer_.released;
    if (position == consumer_.committed_seen) {
      consumer_.committed_seen = committed_.load(std::memory_order_acquire);
      if (position == consumer_.committed_seen) return nullptr;  // empty
    }
    return &slots_[position & mask_];
  }
  // Mutable access for a consumer that moves data out of the slot before releasing it.
  T* acquire_mutable() noexcept { return const_cast<T*>(acquire()); }
  // Hands the acquired slot back to the producer.
  void release() noexcept {
    RM_ASSERT(consumer_.released < consumer_.committed_seen);
    consumer_.released++;
    released_.store(consumer_.released, std::memory_order_release);
  }
  uint64_t released_position() const noexcept { return consumer_.released; }

  // Slots committed and not yet released, as seen from any thread (a snapshot).
  uint64_t size_approx() const noexcept {
    const uint64_t released = released_.load(std::memory_order_acquire);
    const uint64_t committed = committed_.load(std::memory_order_acquire);
    return committed - released;
  }

 private:
  // Shared positions, each alone on its cache line.
  alignas(cache_line_bytes) std::atomic<uint64_t> committed_{0};
  alignas(cache_line_bytes) std::atomic<uint64_t> released_{0};
  // Producer-private state.
  struct alignas(cache_line_bytes) Producer {
    uint64_t committed = 0;
    uint64_t released_seen = 0;
    bool claimed = false;
  } producer_;
  // Consumer-private state.
  struct alignas(cache_line_bytes) Consumer {
    uint64_t released = 0;
    uint64_t committed_seen = 0;
  } consumer_;
  const uint64_t mask_;
  std::unique_ptr<T[]> slots_;
};

}  // namespace ringmux::mux
