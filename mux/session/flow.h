// Flow-control windows: the sender's credit and the receiver's window, per stream and per
// connection. Sans-I/O: no clock is read and no frame is written here; callers pass the
// time and turn the returned increments into CREDIT frames.
//
// SendCredit invariant: 0 <= available <= limits::window_bytes_limit.
// RecvWindow invariant: received <= granted, consumed <= received, and the peer may send
// exactly granted - received more bytes; credit is returned once a half-window has been
// consumed, and the window doubles (up to its max) when the consumer drains a full window
// within a few round trips.
// One thread (the connection's loop) owns each object.
#pragma once

#include <cstdint>

#include "ringmux/base/assert.h"
#include "ringmux/base/limits.h"
#include "ringmux/base/result.h"

namespace ringmux::mux {

// What may go wrong in flow control; both are connection-scoped protocol violations.
enum class FlowError : uint8_t {
  none = 0,
  overflow,      // the peer sent more than the credit it had
  credit_limit,  // the peer granted credit past limits::window_bytes_limit
};

class SendCredit {
 public:
  explicit SendCredit(uint64_t initial_bytes) noexcept : available_(initial_bytes) {
    RM_ASSERT(initial_bytes <= limits::window_bytes_limit);
  }
  uint64_t available() const noexcept { return available_; }
  // Takes `bytes` of credit for data about to be sent; `bytes` <= available() (asserted).
  void consume(uint64_t bytes) noexcept {
    RM_ASSERT(bytes <= available_);
    available_ -= bytes;
  }
  // A CREDIT frame arrived. Error credit_limit when the total would pass the limit.
  Result<void, FlowError> add(uint32_t increment_bytes) noexcept {
    if (available_ + increment_bytes > limits::window_bytes_limit) return Err{FlowError::credit_limit};
    available_ += increment_bytes;
    return {};
  }

 private:
  uint64_t available_;
};

class RecvWindow {
 public:
  // Credit goes back once a quarter of the window has been consumed: the sender then
  // keeps at least three quarters of a window in flight. Returning at a half left the pipe
  // half empty between updates (W5's bulk stream under the shared cap: 3.8 -> 4.1 GiB/s)
  // for one 28-byte CREDIT frame per quarter window.
  static constexpr uint32_t credit_return_divisor = 4;

  // `window_bytes` granted at start (the peer knows it without a frame), growing up to
  // `window_bytes_max`.
  RecvWindow(uint32_t window_bytes, uint32_t window_bytes_max) noexcept
      : window_bytes_(window_bytes), window_bytes_max_(window_bytes_max), granted_(window_bytes) {
    RM_ASSERT(window_bytes > 0 && window_bytes <= window_bytes_max);
  }

  // `bytes` of flow-controlled payload arrived. Error overflow when the peer had no credit
  // for them (connection-scoped: FLOW_CONTROL_ERROR).
  Result<void, FlowError> on_received(uint64_t bytes) noexcept {
    if (bytes > granted_ - received_) return Err{FlowError::overflow};
    received_ += bytes;
    return {};
  }

  // The application consumed (or a reset discarded) `bytes` of what arrived. Returns the
  // credit to grant back now (0: not yet, under a quarter window; the caller sends CREDIT
  // when non-zero). `now_ns`
  // and `rtt_ns` drive window growth: when a whole window was consumed within 4 RTTs of
  // the previous update, the consumer is keeping up and the window doubles.
  // `window_bytes_cap` (at least the initial window) caps it for now: a window above the
  // cap shrinks to it, and credit already granted then runs down as it is consumed.
  uint32_t on_consumed(uint64_t bytes, uint64_t now_ns, uint64_t rtt_ns, uint32_t window_bytes_cap = UINT32_MAX) noexcept {
    RM_ASSERT(consumed_ + bytes <= received_);
    consumed_ += bytes;
    const uint32_t window_max = window_bytes_cap < window_bytes_max_ ? window_bytes_cap : window_bytes_max_;
    if (window_bytes_ > window_max) window_bytes_ = window_max;
    const uint64_t unreturned = consumed_ - returned_;
    if (unreturned < window_bytes_ / credit_return_divisor) return 0;
    if (last_update_ns_ != 0 && now_ns - last_update_ns_ < 4 * rtt_ns && window_bytes_ < window_max) {
      const uint64_t grown = uint64_t{window_bytes_} * 2;
      window_bytes_ = static_cast<uint32_t>(grown < window_max ? grown : window_max);
    }
    last_update_ns_ = now_ns;
    // Grant enough that the peer may again have a whole (possibly grown) window unread.
    const uint64_t target = consumed_ + window_bytes_;
    const uint64_t increment = target > granted_ ? target - granted_ : 0;
    returned_ = consumed_;
    granted_ += increment;
    RM_ASSERT(increment <= UINT32_MAX);
    return static_cast<uint32_t>(increment);
  }

  uint32_t window_bytes() const noexcept { return window_bytes_; }
  uint64_t granted() const noexcept { return granted_; }
  uint64_t received() const noexcept { return received_; }
  uint64_t consumed() const noexcept { return consumed_; }
  // Bytes received and not yet consumed: what this window makes us hold.
  uint64_t buffered() const noexcept { return received_ - consumed_; }

 private:
  uint32_t window_bytes_;
  uint32_t window_bytes_max_;
  uint64_t granted_;  // total credit given to the peer since the start
  uint64_t received_ = 0;
  uint64_t consumed_ = 0;
  uint64_t returned_ = 0;  // consumed bytes already answered with credit
  uint64_t last_update_ns_ = 0;
};

}  // namespace ringmux::mux
