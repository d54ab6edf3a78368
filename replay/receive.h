// The receiver's side of replay: which incoming position-space bytes are new, and when to
// acknowledge them.
//
// ReceiveTracker keeps the receive position: every position-space byte before it has been
// handed on exactly once, in order. After a resume the peer replays from the position we
// announced in the handshake; a peer that replays more than asked sends a prefix we already
// have, which is dropped by position. A batch that starts beyond our position would skip
// bytes: that is an error, never a silent hole.
// Invariant: position() only grows, by exactly the bytes admit() returned.
//
// AckPolicy decides when to send an ACK carrying the receive position: at once when the
// connection is sending a batch anyway (the ACK rides along), otherwise when
// ack_interval_bytes are unacknowledged or ack_interval_ns have passed since the first
// unacknowledged byte arrived.
// Invariant: acked position <= received position; the time of the first unacknowledged
// byte is kept, and meaningful, exactly while the two differ.
//
// Both are sans-I/O: no clock is read (callers pass now_ns) and no frame is written.
// Threads: one thread (the session's loop) owns each object.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "engine/limits.h"
#include "engine/result.h"
#include "replay/errors.h"

namespace ringmux::replay {

class ReceiveTracker {
 public:
  // Starts at `position`: 0 for a new session, or the position a session resumes from.
  explicit ReceiveTracker(uint64_t position = 0) noexcept : position_(position) {}

  // A batch of position-space bytes that starts at `start_position` arrived. Returns the
  // part not seen before: a suffix of `bytes` (possibly empty, when the whole batch is a
  // duplicate), starting at position() on entry; position() moves past it. The span points
  // into `bytes`. Error receive_gap when start_position > position() (connection-scoped:
  // the bytes in between are missing; the peer still holds them and a resume can fetch
  // them); position() is then unchanged.
  //
  // Callers that track positions per frame pass whole frames (header and payload as they
  // were on the wire). A result shorter than the frame but not empty means the peer's
  // replay does not start on one of our frame boundaries; new_bytes_inside() tells which.
  Result<std::span<const std::byte>, ReplayError> admit(uint64_t start_position,
                                                        std::span<const std::byte> bytes) noexcept;

  uint64_t position() const noexcept { return position_; }
  // Bytes dropped as duplicates since construction (for statistics and tests).
  uint64_t duplicate_bytes() const noexcept { return duplicate_bytes_; }

 private:
  uint64_t position_;
  uint64_t duplicate_bytes_ = 0;
};

// True when admit() returned `fresh` out of `batch` with the new part starting inside it:
// neither the whole batch nor none of it. For a caller that admits whole frames this is a
// replay that is not frame-aligned, a protocol violation.
inline bool new_bytes_inside(std::span<const std::byte> batch, std::span<const std::byte> fresh) noexcept {
  return !fresh.empty() && fresh.size() < batch.size();
}

class AckPolicy {
 public:
  // Sentinel of deadline_ns(): no ACK is pending, so no timer is needed.
  static constexpr uint64_t no_deadline_ns = UINT64_MAX;

  // An ACK is due after `interval_bytes` (>= 1) unacknowledged bytes or `interval_ns` after
  // the first of them arrived.
  explicit AckPolicy(uint64_t interval_bytes = limits::ack_interval_bytes,
                     uint64_t interval_ns = limits::ack_interval_ns) noexcept;

  // A new connection's handshake told the peer our receive position `position`: that acts
  // as an ACK of everything before it. `position` >= received_position() (asserted).
  void on_handshake(uint64_t position) noexcept;

  // The receive position advanced to `position` (>= received_position(), asserted) at
  // `now_ns`.
  void on_received(uint64_t position, uint64_t now_ns) noexcept;

  // Whether to queue an ACK now. `sending` is true when the connection is about to send a
  // batch anyway: then any unacknowledged byte is acknowledged, since the ACK costs no
  // extra send. Otherwise only when a threshold is reached.
  bool ack_due(uint64_t now_ns, bool sending) const noexcept;

  // The time at which ack_due(now_ns, false) becomes true by the clock, for the loop's
  // timer; no_deadline_ns when nothing is unacknowledged.
  uint64_t deadline_ns() const noexcept;

  // An ACK is being queued: returns the position it must carry and counts it as sent.
  uint64_t take() noexcept;

  uint64_t received_position() const noexcept { return received_; }
  uint64_t acked_position() const noexcept { return acked_; }
  uint64_t unacked_bytes() const noexcept { return received_ - acked_; }

  // Checks the invariant stated at the top of this file.
  bool invariant() const noexcept;

 private:
  uint64_t interval_bytes_;
  uint64_t interval_ns_;
  uint64_t received_ = 0;
  uint64_t acked_ = 0;
  uint64_t first_unacked_ns_ = 0;  // meaningful only while received_ > acked_
};

}  // namespace ringmux::replay
