#include "ringmux/mux/session/stream_state.h"

namespace ringmux::mux {

const char* describe(StreamState state) noexcept {
  switch (state) {
    case StreamState::idle: return "idle";
    case StreamState::open: return "open";
    case StreamState::local_closed: return "local_closed";
    case StreamState::remote_closed: return "remote_closed";
    case StreamState::closed: return "closed";
    case StreamState::reset: return "reset";
  }
  return "unknown";
}

bool StreamMachine::can_send() const noexcept {
  return (state_ == StreamState::open || state_ == StreamState::remote_closed) && !stop_received_;
}

bool StreamMachine::can_receive() const noexcept {
  return (state_ == StreamState::open || state_ == StreamState::local_closed) && !stop_sent_;
}

// ---- frames from the peer ------------------------------------------------------------

Result<void, MuxError> StreamMachine::on_recv_open(bool end_stream) noexcept {
  if (state_ != StreamState::idle) return Err{MuxError::protocol_violation};  // OPEN twice
  state_ = end_stream ? StreamState::remote_closed : StreamState::open;
  return {};
}

bool StreamMachine::end_direction(StreamState half_closed, StreamState other_half_closed) noexcept {
  if (state_ == StreamState::open) {
    state_ = half_closed;
    return true;
  }
  if (state_ == other_half_closed) {
    state_ = StreamState::closed;
    return true;
  }
  return false;
}

Result<void, MuxError> StreamMachine::close_remote() noexcept {
  // END from the peer in any other state (twice, before OPEN, after reset) is a violation.
  if (!end_direction(StreamState::remote_closed, StreamState::local_closed)) return Err{MuxError::protocol_violation};
  return {};
}

Result<Delivery, MuxError> StreamMachine::on_recv_data(bool end_stream) noexcept {
  switch (state_) {
    case StreamState::open:
    case StreamState::local_closed: {
      const Delivery delivery = stop_sent_ ? Delivery::discard : Delivery::deliver;
      if (end_stream) {
        auto closed = close_remote();
        if (!closed) return Err{closed.error()};
      }
      return delivery;
    }
    case StreamState::reset:
      // Sent before the peer saw our RESET: in flight, not a violation. After the peer's
      // own RESET it is.
      if (reset_by_peer_) return Err{MuxError::protocol_violation};
      return Delivery::discard;
    case StreamState::idle:           // DATA before OPEN
    case StreamState::remote_closed:  // DATA after the peer's END
    case StreamState::closed:
      return Err{MuxError::protocol_violation};
  }
  return Err{MuxError::protocol_violation};
}

Result<Delivery, MuxError> StreamMachine::on_recv_end() noexcept {
  if (state_ == StreamState::reset) {
    if (reset_by_peer_) return Err{MuxError::protocol_violation};
    return Delivery::discard;
  }
  auto closed = close_remote();
  if (!closed) return Err{closed.error()};
  return stop_sent_ ? Delivery::discard : Delivery::deliver;
}

Result<void, MuxError> StreamMachine::on_recv_reset(wire::StatusCode code) noexcept {
  switch (state_) {
    case StreamState::idle:
      return Err{MuxError::protocol_violation};
    case StreamState::reset:
      if (reset_by_peer_) return Err{MuxError::protocol_violation};  // RESET twice
      return {};  // both sides reset at once: ours stands
    case StreamState::open:
    case StreamState::local_closed:
    case StreamState::remote_closed:
    case StreamState::closed:
      // A RESET after a clean close is legal (the peer's handler may fail late); it
      // changes nothing that was already delivered.
      if (state_ == StreamState::closed) return {};
      state_ = StreamState::reset;
      reset_by_peer_ = true;
      reset_error_ = error_from_status(code);
      return {};
  }
  return Err{MuxError::protocol_violation};
}

Result<void, MuxError> StreamMachine::on_recv_stop(wire::StatusCode) noexcept {
  switch (state_) {
    case StreamState::idle:
      return Err{MuxError::protocol_violation};
    case StreamState::open:
    case StreamState::remote_closed:
      stop_received_ = true;
      return {};
    case StreamState::local_closed:  // we already sent everything: nothing to stop
    case StreamState::closed:
    case StreamState::reset:
      return {};
  }
  return Err{MuxError::protocol_violation};
}

// ---- this side's actions -------------------------------------------------------------

Result<void, MuxError> StreamMachine::send_open(bool end_stream) noexcept {
  RM_ASSERT(state_ == StreamState::idle);  // a stream is opened once, by its creator
  state_ = end_stream ? StreamState::local_closed : StreamState::open;
  return {};
}

Result<void, MuxError> StreamMachine::send_data(bool end_stream) noexcept {
  switch (state_) {
    case StreamState::open:
    case StreamState::remote_closed:
      if (stop_received_) return Err{MuxError::stream_stopped};
      if (end_stream) end_direction(StreamState::local_closed, StreamState::remote_closed);
      return {};
    case StreamState::reset:
      return Err{reset_error_};
    case StreamState::idle:
    case StreamState::local_closed:
    case StreamState::closed:
      return Err{MuxError::stream_closed};
  }
  return Err{MuxError::stream_closed};
}

Result<void, MuxError> StreamMachine::send_end() noexcept {
  if (state_ == StreamState::reset) return Err{reset_error_};
  if (!end_direction(StreamState::local_closed, StreamState::remote_closed)) return Err{MuxError::stream_closed};
  return {};
}

bool StreamMachine::send_reset(MuxError reason) noexcept {
  RM_ASSERT(reason != MuxError::none);
  if (done() || state_ == StreamState::idle) {
    if (state_ == StreamState::idle) {
      state_ = StreamState::reset;  // never opened: nothing to tell the peer
      reset_error_ = reason;
    }
    return false;
  }
  state_ = StreamState::reset;
  reset_by_peer_ = false;
  reset_error_ = reason;
  return true;
}

bool StreamMachine::send_stop() noexcept {
  if (stop_sent_ || !(state_ == StreamState::open || state_ == StreamState::local_closed)) return false;
  stop_sent_ = true;
  return true;
}

}  // namespace ringmux::mux
