// StreamMachine: the state of one stream and every transition DESIGN.md allows, as a
// pure state machine (no I/O, no buffers, no clock).
//
// States:  idle -> open -> local_closed / remote_closed -> closed, and reset from any
// state but idle. "local" is this side: local_closed means we sent END (we may still
// receive); remote_closed means the peer sent END (we may still send). STOP is a flag
// beside the state: stop_received means the peer reads no more, so our writes fail at
// once with stream_stopped instead of waiting on a window that will not reopen;
// stop_sent means we read no more and discard (and credit) what still arrives.
//
// Peer events return connection-scoped errors for frames the state does not allow
// (protocol_violation); our own actions return stream-scoped errors. Data that arrives
// after we reset or stopped is not a violation (it was in flight) and is discarded.
// Invariant: done() exactly when the state is closed or reset.
// One thread (the connection's loop) owns each machine.
#pragma once

#include <cstdint>

#include "ringmux/base/result.h"
#include "ringmux/mux/session/errors.h"
#include "ringmux/wire/frame.h"

namespace ringmux::mux {

enum class StreamState : uint8_t { idle, open, local_closed, remote_closed, closed, reset };
const char* describe(StreamState state) noexcept;

// What to do with a DATA frame the machine accepted.
enum class Delivery : uint8_t {
  deliver,  // hand the payload to the application
  discard,  // drop it, but return its credit (we stopped reading or reset the stream)
};

class StreamMachine {
 public:
  StreamState state() const noexcept { return state_; }
  bool done() const noexcept { return state_ == StreamState::closed || state_ == StreamState::reset; }
  bool stop_received() const noexcept { return stop_received_; }
  bool stop_sent() const noexcept { return stop_sent_; }
  bool reset_by_peer() const noexcept { return state_ == StreamState::reset && reset_by_peer_; }
  // Why the stream was reset (valid in state reset).
  MuxError reset_error() const noexcept { return reset_error_; }
  // Whether this side may still send DATA (the error it would get otherwise is send_data's).
  bool can_send() const noexcept;
  // Whether the peer may still send DATA that we deliver.
  bool can_receive() const noexcept;

  // ---- frames from the peer (errors are connection-scoped) ----
  Result<void, MuxError> on_recv_open(bool end_stream) noexcept;
  Result<Delivery, MuxError> on_recv_data(bool end_stream) noexcept;
  Result<Delivery, MuxError> on_recv_end() noexcept;
  Result<void, MuxError> on_recv_reset(wire::StatusCode code) noexcept;
  Result<void, MuxError> on_recv_stop(wire::StatusCode code) noexcept;

  // ---- this side's actions (errors are stream-scoped) ----
  Result<void, MuxError> send_open(bool end_stream) noexcept;
  Result<void, MuxError> send_data(bool end_stream) noexcept;
  Result<void, MuxError> send_end() noexcept;
  // Resets the stream with `reason`. Returns false (nothing to send) when it is already
  // done; true when a RESET frame must go out.
  bool send_reset(MuxError reason) noexcept;
  // Tells the peer we read no more. Returns false when there is nothing to stop (the
  // peer already ended its side, or the stream is done).
  bool send_stop() noexcept;

 private:
  // Ends one direction: open -> `half_closed`, `other_half_closed` -> closed. False (and
  // no change) in any other state.
  bool end_direction(StreamState half_closed, StreamState other_half_closed) noexcept;
  Result<void, MuxError> close_remote() noexcept;

  StreamState state_ = StreamState::idle;
  MuxError reset_error_ = MuxError::none;
  bool reset_by_peer_ = false;
  bool stop_received_ = false;
  bool stop_sent_ = false;
};

}  // namespace ringmux::mux
