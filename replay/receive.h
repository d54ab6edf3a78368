// The receiver's side of replay: when to acknowledge the bytes received.
//
// There is no duplicate filter on this side, by construction: each side replays from
// exactly the receive position the other announced in the handshake (wire/SPEC.md §8.1),
// and positions are frame boundaries, so the sender drops what the receiver already has
// (HeldBatches::rewind) and a receiver never sees a position-space byte twice.
//
// AckPolicy decides when to send an ACK carrying the receive position: at once when the
// connection is sending a batch anyway (the ACK rides along), otherwise when
// ack_interval_bytes are unacknowledged or ack_interval_ns have passed since the first
// unacknowledged byte arrived.
// Invariant: acked position <= received position; the time of the first unacknowledged
// byte is kept, and meaningful, exactly while the two differ.
//
// Sans-I/O: no clock is read (callers pass now_ns) and no frame is written.
// Threads: one thread (the session's loop) owns it.
#pragma once

#include <cstdint>

#include "ringmux/base/limits.h"

namespace ringmux::replay {

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
