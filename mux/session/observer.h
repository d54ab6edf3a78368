// StreamObserver: the events of one stream, for the layer above the session (a client's
// stream, a server handler's, a unary call). The session keeps a pointer to it in its
// stream table (StreamBinding); the link delivers the events (mux/link/connection.h).
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

#include "ringmux/mux/session/errors.h"

namespace ringmux::mux {

// Events of one stream, client or server side, on the loop thread. Spans are valid only
// during the call; every delivered byte must be handed back with Connection::consume
// (or the reader's credit never returns).
class StreamObserver {
 public:
  virtual ~StreamObserver() = default;
  // The peer's explanation, when it ended the stream with an ERROR frame: called as the
  // frame is received (the text is valid only during the call), before on_stream_finished.
  virtual void on_stream_message(std::string_view) noexcept {}
  virtual void on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept = 0;
  virtual void on_stream_writable() noexcept {}
  virtual void on_stream_stopped() noexcept {}
  // The last event: MuxError::none when the stream completed cleanly, else why it ended
  // (the peer's reset reason, cancelled, deadline_exceeded, a connection error, ...).
  // Delivered on the loop's turn after the stream ended (mux/link/connection.h), never
  // inside a call made on the connection, so never in the middle of a call the observer
  // itself made. The connection forgets the observer after this call, and deletes one it
  // owns (a server handler's, a unary call's) right after.
  virtual void on_stream_finished(MuxError error) noexcept = 0;
};

}  // namespace ringmux::mux
