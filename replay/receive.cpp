#include "ringmux/replay/receive.h"

#include "ringmux/base/assert.h"

namespace ringmux::replay {

AckPolicy::AckPolicy(uint64_t interval_bytes, uint64_t interval_ns) noexcept
    : interval_bytes_(interval_bytes), interval_ns_(interval_ns) {
  RM_ASSERT(interval_bytes >= 1);
}

void AckPolicy::on_handshake(uint64_t position) noexcept {
  RM_ASSERT(position >= received_);
  received_ = position;
  acked_ = position;
  RM_DEBUG_ASSERT(invariant());
}

void AckPolicy::on_received(uint64_t position, uint64_t now_ns) noexcept {
  RM_ASSERT(position >= received_);
  if (position == received_) return;
  if (received_ == acked_) first_unacked_ns_ = now_ns;  // the clock starts at the first byte
  received_ = position;
  RM_DEBUG_ASSERT(invariant());
}

bool AckPolicy::ack_due(uint64_t now_ns, bool sending) const noexcept {
  const uint64_t unacked = received_ - acked_;
  if (unacked == 0) return false;
  if (sending || unacked >= interval_bytes_) return true;
  return now_ns - first_unacked_ns_ >= interval_ns_;
}

uint64_t AckPolicy::deadline_ns() const noexcept {
  if (received_ == acked_) return no_deadline_ns;
  // Saturating: an interval near UINT64_MAX means "by bytes only".
  return interval_ns_ > no_deadline_ns - first_unacked_ns_ ? no_deadline_ns : first_unacked_ns_ + interval_ns_;
}

uint64_t AckPolicy::take() noexcept {
  acked_ = received_;
  RM_DEBUG_ASSERT(invariant());
  return acked_;
}

bool AckPolicy::invariant() const noexcept { return interval_bytes_ >= 1 && acked_ <= received_; }

}  // namespace ringmux::replay
