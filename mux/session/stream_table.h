// StreamTable: the one table of a session's streams, keyed by stream id.
//
// Values live in a slab of fixed pages (addresses stay valid while the stream lives, even
// as other streams come and go: callbacks may open streams while a caller holds a
// pointer), reused through a free list; an open-addressing index (linear probing,
// backward-shift deletion, no tombstones) maps an id to its slot. A lookup is one hash and
// a short probe; no allocation per stream once the slab and index have grown to the
// session's high-water mark. The peer chooses its stream ids, so the hash is keyed with a
// per-table secret: ids picked to collide in one table do not collide in another.
//
// Memory: one slot (the value plus 8 bytes) per stream of the high-water mark, and a 4-byte
// index bucket for every 1/4 to 1/2 of one (the index doubles when half full, and does not
// shrink while streams are open). trim() gives everything back when the table is empty.
// Single-threaded.
#pragma once

#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "ringmux/base/assert.h"

namespace ringmux::mux {

// Keys are stream ids (32 bits) by default; any unsigned integer of up to 64 bits works.
template <typename T, typename Key = uint32_t>
class StreamTable {
 public:
  using Id = Key;
  static_assert(std::is_unsigned_v<Key> && sizeof(Key) <= sizeof(uint64_t));

  explicit StreamTable(uint64_t hash_secret = 0) noexcept : secret_(hash_secret | 1) {}
  ~StreamTable() { clear(); }
  StreamTable(const StreamTable&) = delete;
  StreamTable& operator=(const StreamTable&) = delete;

  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }

  T* find(Id id) noexcept {
    const uint32_t slot = find_slot(id);
    return slot == no_slot ? nullptr : &at(slot).value();
  }
  const T* find(Id id) const noexcept { return const_cast<StreamTable*>(this)->find(id); }

  // Inserts a value built from `args` under `id`, which must not be in the table.
  template <typename... Args>
  T& emplace(Id id, Args&&... args) {
    RM_ASSERT(find_slot(id) == no_slot);
    if ((size_ + 1) * 2 > index_.size()) grow_index();
    const uint32_t slot = take_slot();
    Slot& entry = at(slot);
    new (&entry.storage) T(std::forward<Args>(args)...);
    entry.id = id;
    entry.used = true;
    std::size_t bucket = home(id);
    while (index_[bucket] != 0) bucket = (bucket + 1) & mask();
    index_[bucket] = slot + 1;
    size_++;
    return entry.value();
  }

  // Removes `id` (no-op when absent). Its value is destroyed; other values stay put.
  void erase(Id id) noexcept {
    if (size_ == 0) return;
    std::size_t bucket = home(id);
    while (true) {
      const uint32_t held = index_[bucket];
      if (held == 0) return;  // absent
      if (at(held - 1).id == id) break;
      bucket = (bucket + 1) & mask();
    }
    const uint32_t slot = index_[bucket] - 1;
    // Backward shift: later entries of the probe run move up into the hole, so a probe
    // never stops early at an emptied bucket.
    std::size_t hole = bucket;
    std::size_t next = (hole + 1) & mask();
    while (index_[next] != 0) {
      const std::size_t wanted = home(at(index_[next] - 1).id);
      // Move it when its home is not within (hole, next] (cyclically).
      if (((next - wanted) & mask()) >= ((next - hole) & mask())) {
        index_[hole] = index_[next];
        hole = next;
      }
      next = (next + 1) & mask();
    }
    index_[hole] = 0;
    Slot& entry = at(slot);
    RM_ASSERT(entry.used && entry.id == id);
    entry.value().~T();
    entry.used = false;
    free_.push_back(slot);
    size_--;
  }

  // Calls fn(id, value) for every stream, in slot order. `fn` must not insert or erase;
  // collect ids first for that.
  template <typename F>
  void for_each(F&& fn) {
    std::size_t seen = 0;
    for (std::size_t page = 0; page < pages_.size() && seen < size_; page++) {
      for (Slot& entry : pages_[page]->slots) {
        if (!entry.used) continue;
        seen++;
        fn(entry.id, entry.value());
      }
    }
  }

  // Empties the table and gives its memory back.
  void clear() noexcept {
    for (auto& page : pages_) {
      for (Slot& entry : page->slots) {
        if (entry.used) entry.value().~T();
        entry.used = false;
      }
    }
    pages_.clear();
    pages_.shrink_to_fit();
    std::vector<uint32_t>().swap(index_);
    std::vector<uint32_t>().swap(free_);
    slots_ = 0;
    size_ = 0;
  }
  // Gives memory back when no stream is open (an idle session keeps nothing).
  void trim() noexcept {
    if (size_ == 0) clear();
  }

  // Bytes held by the table itself (slab, index, free list): for tests and memory reports.
  std::size_t bytes_held() const noexcept {
    return pages_.size() * sizeof(Page) + index_.capacity() * sizeof(uint32_t) + free_.capacity() * sizeof(uint32_t);
  }

 private:
  static constexpr uint32_t no_slot = UINT32_MAX;
  static constexpr std::size_t page_slots = 64;
  static constexpr std::size_t index_buckets_min = 16;

  struct Slot {
    alignas(T) unsigned char storage[sizeof(T)];
    Id id = 0;
    bool used = false;
    T& value() noexcept { return *std::launder(reinterpret_cast<T*>(storage)); }
  };
  struct Page {
    Slot slots[page_slots];
  };

  std::size_t mask() const noexcept { return index_.size() - 1; }
  std::size_t home(Id id) const noexcept {
    // Keyed multiplicative hash; the top bits are the best mixed.
    const uint64_t mixed = (static_cast<uint64_t>(id) ^ (secret_ >> 17)) * secret_ * 0x9E3779B97F4A7C15ull;
    return static_cast<std::size_t>(mixed >> shift_);
  }
  Slot& at(uint32_t slot) noexcept { return pages_[slot / page_slots]->slots[slot % page_slots]; }

  uint32_t find_slot(Id id) const noexcept {
    if (size_ == 0) return no_slot;
    std::size_t bucket = home(id);
    while (true) {
      const uint32_t held = index_[bucket];
      if (held == 0) return no_slot;
      if (const_cast<StreamTable*>(this)->at(held - 1).id == id) return held - 1;
      bucket = (bucket + 1) & mask();
    }
  }
  uint32_t take_slot() {
    if (!free_.empty()) {
      const uint32_t slot = free_.back();
      free_.pop_back();
      return slot;
    }
    if (slots_ % page_slots == 0) pages_.push_back(std::make_unique<Page>());
    RM_ASSERT(slots_ < no_slot - 1);
    return slots_++;
  }
  void grow_index() {
    const std::size_t buckets = index_.empty() ? index_buckets_min : index_.size() * 2;
    std::vector<uint32_t> old;
    old.swap(index_);
    index_.assign(buckets, 0);
    shift_ = 64;
    for (std::size_t b = buckets; b > 1; b >>= 1) shift_--;
    for (const uint32_t held : old) {
      if (held == 0) continue;
      std::size_t bucket = home(at(held - 1).id);
      while (index_[bucket] != 0) bucket = (bucket + 1) & mask();
      index_[bucket] = held;
    }
  }

  uint64_t secret_;
  std::vector<std::unique_ptr<Page>> pages_;
  std::vector<uint32_t> index_;  // slot + 1 per bucket; 0 = empty
  std::vector<uint32_t> free_;   // slots to reuse
  uint32_t slots_ = 0;           // slots ever handed out (the slab's high-water mark)
  std::size_t size_ = 0;
  unsigned shift_ = 64;
};

}  // namespace ringmux::mux
