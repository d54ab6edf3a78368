// HeldBatches: the sender's replay store. The batches the writer sent, kept whole until the
// peer acknowledges them, and the send queue at the same time.
//
// The writer builds each batch in two buffers (control frames, then data frames: the mux
// session's double buffer), and every byte of both lies in the position space. push()
// moves the pair in without a copy (the vectors are swapped, and recycled ones with their
// capacity handed back; a small batch is copied into the newest one's spare room instead),
// and the connection sends straight from the held batches with
// take_unsent(). A peer's ACK releases the batches it covers; after a resume, rewind()
// points the send cursor at the peer's receive position and the same take_unsent() replays
// from there. So the held batches are the send buffer and the replay ring in one: the bytes
// a resume needs cost no copy beyond the one into the batch.
//
// Bound: push() is only allowed while fits() (the caller holds its batch back otherwise:
// back-pressure, never overwriting and never dropping). fits() counts the memory held, from
// the first byte of the oldest batch (partly acknowledged batches are held whole).
//
// Invariant: acked <= cursor <= tail; the batches are contiguous in position order and
// cover [front.start, tail) with front.start <= acked < front.end (or no batch and
// acked == tail); held bytes <= bytes_max, unless one batch alone is larger.
// Threads: one thread (the session's loop) owns it and makes every call.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "ringmux/base/limits.h"
#include "ringmux/base/memory.h"
#include "ringmux/base/ring_queue.h"
#include "ringmux/base/result.h"
#include "ringmux/replay/errors.h"

namespace ringmux::replay {

// The positions held for replay: [acked, tail). A resume may start anywhere in it.
struct HeldRange {
  uint64_t acked = 0;
  uint64_t tail = 0;
};

// Up to two spans of held bytes in position order (`second` empty when one is enough).
// They stay valid until an ack() releases their batch; a send in flight may use them (the
// peer can only acknowledge bytes the kernel has already copied out).
struct HeldSpans {
  std::span<const std::byte> first;
  std::span<const std::byte> second;

  std::size_t size() const noexcept { return first.size() + second.size(); }
  bool empty() const noexcept { return first.empty() && second.empty(); }
};

class HeldBatches {
 public:
  explicit HeldBatches(uint64_t bytes_max = limits::replay_bytes_max) noexcept : bytes_max_(bytes_max) {}

  // ---- writer ----

  // Whether a batch of `bytes` may be pushed now. Always true when nothing is held, so a
  // batch larger than the bound (never built by the mux writer) cannot dead-lock.
  bool fits(uint64_t bytes) const noexcept { return batches_.empty() || bytes_held() + bytes <= bytes_max_; }
  // Appends the batch `control` then `data` (at least one non-empty; fits() asserted) at
  // the tail, taking the vectors; they come back empty, with a recycled batch's capacity
  // when there is one. Returns the batch's first position.
  uint64_t push(ByteVector& control, ByteVector& data) noexcept;

  // ---- acknowledgement and replay ----

  // The peer has received everything before `position`: releases the batches wholly before
  // it and returns how many bytes that acknowledged. At or below acked() it is stale and
  // releases nothing. Error ack_ahead when position > tail() (never sent).
  Result<uint64_t, ReplayError> ack(uint64_t position) noexcept;
  // Moves the send cursor to `position` (a resume: the peer's receive position). Errors:
  // position_gone before acked() (released), position_ahead beyond tail() (never written).
  Result<void, ReplayError> rewind(uint64_t position) noexcept;

  // ---- sending ----

  // The bytes from the cursor to the end of the cursor's batch (one or two spans: the
  // batch's control and data parts); the cursor moves past them. Empty when cursor == tail.
  HeldSpans take_unsent() noexcept;

  // Frees the recycled batches kept for their capacity (an idle or detached session keeps
  // only what it holds for replay).
  void release_spares() noexcept {
    spare_.clear();
    spare_.shrink_to_fit();
    spare_bytes_ = 0;
    spare_low_water_ = 0;
    batches_.release();
  }

  // Frees the spares that were not taken since the last call (the bottom of the spare list
  // stayed at least that deep all along): a busy session keeps what its traffic reuses
  // and no more, instead of holding its spare budget once a burst has filled it. Called
  // periodically (a connection's keepalive tick).
  void decay_spares() noexcept;

  // ---- state ----

  uint64_t acked() const noexcept { return acked_; }
  uint64_t cursor() const noexcept { return cursor_; }
  uint64_t tail() const noexcept { return tail_; }
  HeldRange held() const noexcept { return {acked_, tail_}; }
  uint64_t bytes_unsent() const noexcept { return tail_ - cursor_; }
  uint64_t bytes_unacked() const noexcept { return tail_ - acked_; }
  // Memory held: from the first byte of the oldest batch kept.
  uint64_t bytes_held() const noexcept { return batches_.empty() ? 0 : tail_ - batches_.front().start; }

  uint64_t bytes_max() const noexcept { return bytes_max_; }
  // The most bytes_held() has ever been (for tests and statistics).
  uint64_t bytes_held_peak() const noexcept { return bytes_held_peak_; }
  std::size_t batches() const noexcept { return batches_.size(); }

  // Checks the invariant stated at the top of this file.
  bool invariant() const noexcept;

 private:
  struct Batch {
    uint64_t start = 0;
    ByteVector control;
    ByteVector data;
    uint64_t size() const noexcept { return control.size() + data.size(); }
    uint64_t end() const noexcept { return start + size(); }
  };
  // Recycled batches are kept for their capacity while it adds up to at most this; more
  // are freed. The budget was 8 batches (up to a send batch, ~0.5 MiB, each): a bulk
  // stream's steady state holds 2-6 batches between ACKs, and what an idle session that once
  // ran bulk keeps stays ~4 MiB (trim() frees it all). Counting bytes instead of batches also
  // keeps the many small batches of small messages in flight between two ACKs (an ACK comes
  // every 1 MiB or 5 ms): then a message costs no allocation once warm. W3 (2026-11-29,
  // 4 runs each, interleaved): 8 spares 2.77-4.02 GiB/s, 64 spares 2.35-3.96: no difference.
  static constexpr std::size_t spare_bytes_max = 4u << 20;
  // A batch up to this size is copied into the newest batch when that one's buffer has room
  // (push()): one copy of a few frames, instead of a batch (and a buffer) each.
  static constexpr std::size_t coalesce_bytes_max = 2048;
  const Batch* batch_at(uint64_t position) const noexcept;

  uint64_t bytes_max_;
  uint64_t acked_ = 0;
  uint64_t cursor_ = 0;
  uint64_t tail_ = 0;
  uint64_t bytes_held_peak_ = 0;
  RingQueue<Batch> batches_;
  std::vector<Batch> spare_;     // released batches kept for their buffers (most recent last)
  std::size_t spare_bytes_ = 0;  // their buffers' capacity
  std::size_t spare_low_water_ = 0;  // fewest spares since the last decay_spares()
};

}  // namespace ringmux::replay
