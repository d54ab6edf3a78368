// ReplayRing: the sender's bounded ring of position-space bytes sent and not yet
// acknowledged, usable as the send buffer itself.
//
// Bytes are addressed by 64-bit positions that never wrap (slot = position & mask). The
// writer encodes frames straight into claim()ed space and commits them, which moves the
// tail; the connection sends spans from read(); the peer's ACK releases everything before
// its position; after a resume the connection replays with read() from the peer's receive
// position. Nothing unacknowledged is ever overwritten: a claim or append that does not fit
// is back-pressured (an empty span, or 0 bytes), never an error.
//
// Invariant: acked <= tail <= acked + capacity, capacity a power of two; the bytes of
// positions [acked, tail) are held at slot position & mask; at most one claim is open, and
// an open claim of n bytes satisfies tail + n <= acked + capacity.
//
// Contiguity (the choice): a claim is always one contiguous span, so encoders that take a
// single span (wire/codec.h) write a frame into the ring in place. The buffer is
// allocated with claim_bytes_max() bytes of spill area past its capacity; a claim that
// crosses the wrap point runs on into the spill area, and commit copies the part past the
// wrap point back to the start of the ring (the slots there are free: the claim fitted).
// That copy happens at most once per capacity bytes and is at most one frame. Padding to
// the wrap point was rejected because padding bytes would have to enter the position space
// (the peer numbers every byte it receives); double-mapped memory because it needs a
// file descriptor, which replay/ must not touch.
//
// Threads: one thread (the session's loop) owns a ring and makes every call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "engine/limits.h"
#include "engine/result.h"
#include "replay/errors.h"

namespace ringmux::replay {

// The positions a replay ring holds: the bytes of [acked, tail). A resume or replay may
// start anywhere in [acked, tail] (tail: nothing to replay).
struct HeldRange {
  uint64_t acked = 0;
  uint64_t tail = 0;
};

// Up to two spans of ring bytes in position order: `first`, then `second` (non-empty only
// when the range crosses the wrap point). They point into the ring and stay valid until an
// ack() releases their bytes (after that a claim or append may overwrite them). A send in
// flight may therefore use them: the peer can only acknowledge bytes it has received, and
// the kernel is done reading those.
struct ReplaySpans {
  std::span<const std::byte> first;
  std::span<const std::byte> second;

  std::size_t size() const noexcept { return first.size() + second.size(); }
  bool empty() const noexcept { return first.empty(); }
};

class ReplayRing {
 public:
  // A ring of `capacity_bytes` (a power of two) that allows claims of up to
  // `claim_bytes_max` bytes (1 <= claim_bytes_max <= capacity_bytes); both asserted. The
  // memory (capacity + claim_bytes_max) is allocated here, once. Error: out_of_memory.
  static Result<std::unique_ptr<ReplayRing>, ReplayError> create(
      uint64_t capacity_bytes = limits::replay_ring_bytes_default,
      uint32_t claim_bytes_max = limits::replay_claim_bytes_max) noexcept;
  ~ReplayRing();
  ReplayRing(const ReplayRing&) = delete;
  ReplayRing& operator=(const ReplayRing&) = delete;

  // ---- writer ----

  // `bytes` (1..claim_bytes_max(), asserted) contiguous writable bytes at the tail, or an
  // empty span when they do not fit (back-pressured: tail + bytes - acked > capacity; an
  // ACK will make room). The span belongs to the caller until commit or abort; claiming
  // again first, or appending, is a programmer error.
  std::span<std::byte> claim(std::size_t bytes) noexcept;
  // Publishes the first `bytes` of the open claim (at most what was claimed; the rest is
  // given back) and moves the tail past them.
  void commit(std::size_t bytes) noexcept;
  // Gives the open claim back; the tail does not move.
  void abort() noexcept;
  // Copies as many bytes of `bytes` as fit to the tail and returns how many (0 when
  // back-pressured). No claim may be open.
  std::size_t append(std::span<const std::byte> bytes) noexcept;

  // ---- acknowledgement ----

  // The peer has received everything before `position`: releases those bytes and returns
  // how many were released. A position at or below acked() is stale (an older or repeated
  // ACK) and releases nothing. Error ack_ahead when position > tail(): the peer claims
  // bytes that were never written (session-scoped).
  Result<uint64_t, ReplayError> ack(uint64_t position) noexcept;

  // ---- sending and replay ----

  // Up to `bytes_max` committed bytes starting at `from_position`, in one or two spans.
  // Empty when from_position == tail(). Errors: position_gone when from_position < acked()
  // (released), position_ahead when from_position > tail() (never written).
  Result<ReplaySpans, ReplayError> read(uint64_t from_position, std::size_t bytes_max) const noexcept;

  // ---- state ----

  uint64_t tail() const noexcept { return tail_; }
  uint64_t acked() const noexcept { return acked_; }
  HeldRange held() const noexcept { return {acked_, tail_}; }
  uint64_t bytes_unacked() const noexcept { return tail_ - acked_; }
  uint64_t bytes_free() const noexcept { return capacity() - bytes_unacked(); }
  uint64_t capacity() const noexcept { return mask_ + 1; }
  uint32_t claim_bytes_max() const noexcept { return claim_bytes_max_; }
  bool claim_open() const noexcept { return claimed_bytes_ != 0; }

  // Checks the invariant stated at the top of this file; true when it holds. Called by the
  // ring itself in debug builds after every change, and by tests.
  bool invariant() const noexcept;

 private:
  ReplayRing(uint64_t capacity_bytes, uint32_t claim_bytes_max, std::byte* buffer) noexcept;

  const uint64_t mask_;
  const uint32_t claim_bytes_max_;
  std::byte* const buffer_;  // capacity + claim_bytes_max bytes; the last are the spill area
  uint64_t tail_ = 0;
  uint64_t acked_ = 0;
  std::size_t claimed_bytes_ = 0;  // size of the open claim, 0 when none
};

}  // namespace ringmux::replay
