#include "replay/ring.h"

#include <algorithm>
#include <cstring>

#include "engine/assert.h"
#include "engine/memory.h"

namespace ringmux::replay {

namespace {

// Page alignment: the ring is sent from directly, and page-aligned buffers keep a future
// registered-buffer or zero-copy send simple.
constexpr std::size_t ring_alignment_bytes = 4096;

}  // namespace

ReplayRing::ReplayRing(uint64_t capacity_bytes, uint32_t claim_bytes_max, std::byte* buffer) noexcept
    : mask_(capacity_bytes - 1), claim_bytes_max_(claim_bytes_max), buffer_(buffer) {}

Result<std::unique_ptr<ReplayRing>, ReplayError> ReplayRing::create(uint64_t capacity_bytes,
                                                                    uint32_t claim_bytes_max) noexcept {
  RM_ASSERT(capacity_bytes >= 2 && (capacity_bytes & (capacity_bytes - 1)) == 0);
  RM_ASSERT(claim_bytes_max >= 1 && claim_bytes_max <= capacity_bytes);
  void* block = large_alloc(capacity_bytes + claim_bytes_max, ring_alignment_bytes);
  if (block == nullptr) return Err{ReplayError::out_of_memory};
  std::unique_ptr<ReplayRing> ring(new (std::nothrow) ReplayRing(capacity_bytes, claim_bytes_max,
                                                                 static_cast<std::byte*>(block)));
  if (ring == nullptr) {
    large_free(block);
    return Err{ReplayError::out_of_memory};
  }
  return ring;
}

ReplayRing::~ReplayRing() { large_free(buffer_); }

std::span<std::byte> ReplayRing::claim(std::size_t bytes) noexcept {
  RM_ASSERT(!claim_open());
  RM_ASSERT(bytes >= 1 && bytes <= claim_bytes_max_);
  if (bytes > bytes_free()) return {};  // back-pressured: only an ACK makes room
  claimed_bytes_ = bytes;
  RM_DEBUG_ASSERT(invariant());
  // Contiguous even across the wrap point: the spill area past the capacity takes the rest.
  return {buffer_ + (tail_ & mask_), bytes};
}

void ReplayRing::commit(std::size_t bytes) noexcept {
  RM_ASSERT(claim_open());
  RM_ASSERT(bytes <= claimed_bytes_);
  const uint64_t offset = tail_ & mask_;
  const uint64_t end = offset + bytes;
  if (end > capacity()) {
    // The claim ran into the spill area: move that part to its slots at the ring's start,
    // which are free because the claim fitted (they held bytes before acked).
    std::memcpy(buffer_, buffer_ + capacity(), end - capacity());
  }
  tail_ += bytes;
  claimed_bytes_ = 0;
  RM_DEBUG_ASSERT(invariant());
}

void ReplayRing::abort() noexcept {
  RM_ASSERT(claim_open());
  claimed_bytes_ = 0;
}

std::size_t ReplayRing::append(std::span<const std::byte> bytes) noexcept {
  RM_ASSERT(!claim_open());
  const std::size_t count = static_cast<std::size_t>(std::min<uint64_t>(bytes.size(), bytes_free()));
  if (count == 0) return 0;
  const uint64_t offset = tail_ & mask_;
  const std::size_t first = static_cast<std::size_t>(std::min<uint64_t>(count, capacity() - offset));
  std::memcpy(buffer_ + offset, bytes.data(), first);
  if (count > first) std::memcpy(buffer_, bytes.data() + first, count - first);
  tail_ += count;
  RM_DEBUG_ASSERT(invariant());
  return count;
}

Result<uint64_t, ReplayError> ReplayRing::ack(uint64_t position) noexcept {
  if (position > tail_) return Err{ReplayError::ack_ahead};
  if (position <= acked_) return uint64_t{0};  // stale: an older or repeated ACK
  const uint64_t released = position - acked_;
  acked_ = position;
  RM_DEBUG_ASSERT(invariant());
  return released;
}

Result<ReplaySpans, ReplayError> ReplayRing::read(uint64_t from_position, std::size_t bytes_max) const noexcept {
  if (from_position < acked_) return Err{ReplayError::position_gone};
  if (from_position > tail_) return Err{ReplayError::position_ahead};
  const uint64_t count = std::min<uint64_t>(tail_ - from_position, bytes_max);
  const uint64_t offset = from_position & mask_;
  const uint64_t first = std::min<uint64_t>(count, capacity() - offset);
  ReplaySpans spans;
  spans.first = {buffer_ + offset, static_cast<std::size_t>(first)};
  if (count > first) spans.second = {buffer_, static_cast<std::size_t>(count - first)};
  return spans;
}

bool ReplayRing::invariant() const noexcept {
  const uint64_t capacity_bytes = mask_ + 1;
  if ((capacity_bytes & mask_) != 0) return false;  // a power of two
  if (claim_bytes_max_ == 0 || claim_bytes_max_ > capacity_bytes) return false;
  if (acked_ > tail_) return false;
  if (tail_ - acked_ > capacity_bytes) return false;
  if (claimed_bytes_ > claim_bytes_max_) return false;
  if (tail_ - acked_ + claimed_bytes_ > capacity_bytes) return false;
  return true;
}

}  // namespace ringmux::replay
