// StreamMachine: every transition of DESIGN.md scripted frame by frame, and every frame a
// state does not allow, with the scope of the resulting error.
#include "ringmux/mux/session/stream_state.h"

#include <doctest/doctest.h>

using namespace ringmux;
using namespace ringmux::mux;
using wire::StatusCode;

namespace {

// A stream the peer opened (we are the server side of it).
StreamMachine opened_by_peer(bool end_stream = false) {
  StreamMachine m;
  REQUIRE(m.on_recv_open(end_stream).ok());
  return m;
}

void check_violation(const Result<void, MuxError>& r) {
  REQUIRE(!r.ok());
  CHECK(r.error() == MuxError::protocol_violation);
  CHECK(scope_of(r.error()) == Scope::connection);
}

template <typename T>
void check_violation(const Result<T, MuxError>& r) {
  REQUIRE(!r.ok());
  CHECK(r.error() == MuxError::protocol_violation);
  CHECK(scope_of(r.error()) == Scope::connection);
}

}  // namespace

// Proves the full life of a bidirectional stream: open, data both ways, each side's END,
// closed only when both have ended.
TEST_CASE("stream: open, data both ways, half-close each side, closed") {
  StreamMachine m = opened_by_peer();
  CHECK(m.state() == StreamState::open);
  CHECK(m.on_recv_data(false).value() == Delivery::deliver);
  CHECK(m.send_data(false).ok());
  CHECK(m.on_recv_end().value() == Delivery::deliver);
  CHECK(m.state() == StreamState::remote_closed);
  CHECK(!m.can_receive());
  CHECK(m.can_send());
  CHECK(m.send_data(false).ok());  // half-close: we may still send
  CHECK(m.send_end().ok());
  CHECK(m.state() == StreamState::closed);
  CHECK(m.done());
}

// Proves the other half-close order and END_STREAM carried on OPEN and DATA.
TEST_CASE("stream: local half-close first, END_STREAM flags") {
  StreamMachine client;
  CHECK(client.send_open(false).ok());
  CHECK(client.send_data(true).ok());
  CHECK(client.state() == StreamState::local_closed);
  CHECK(!client.can_send());
  CHECK(client.on_recv_data(false).value() == Delivery::deliver);
  CHECK(client.on_recv_data(true).value() == Delivery::deliver);
  CHECK(client.state() == StreamState::closed);

  StreamMachine unary;  // a unary call: OPEN with END_STREAM, one response ending it
  CHECK(unary.send_open(true).ok());
  CHECK(unary.state() == StreamState::local_closed);
  CHECK(unary.on_recv_data(true).value() == Delivery::deliver);
  CHECK(unary.done());

  StreamMachine server = opened_by_peer(true);
  CHECK(server.state() == StreamState::remote_closed);
  CHECK(server.send_data(true).ok());
  CHECK(server.state() == StreamState::closed);
}

// Proves local errors for sending when we may not are stream-scoped, not violations.
TEST_CASE("stream: sending after END or on a done stream is a stream-scoped error") {
  StreamMachine m = opened_by_peer();
  CHECK(m.send_end().ok());
  auto again = m.send_data(false);
  REQUIRE(!again.ok());
  CHECK(again.error() == MuxError::stream_closed);
  CHECK(scope_of(again.error()) == Scope::stream);
  CHECK(m.send_end().error() == MuxError::stream_closed);
}

// Proves RESET from the peer ends both directions with the peer's reason, and that our
// writes then fail with it.
TEST_CASE("stream: reset by the peer") {
  StreamMachine m = opened_by_peer();
  CHECK(m.on_recv_reset(StatusCode::cancelled).ok());
  CHECK(m.state() == StreamState::reset);
  CHECK(m.reset_by_peer());
  CHECK(m.reset_error() == MuxError::cancelled);
  CHECK(m.send_data(false).error() == MuxError::cancelled);
  CHECK(m.send_end().error() == MuxError::cancelled);
  CHECK(!m.send_reset(MuxError::cancelled));  // nothing more to tell
  // The peer may not keep talking after its own RESET.
  check_violation(m.on_recv_data(false));
  check_violation(m.on_recv_end());
  check_violation(m.on_recv_reset(StatusCode::cancelled));
}

// Proves a local reset discards (and lets the caller credit) data that was in flight,
// and that a crossing RESET from the peer is accepted.
TEST_CASE("stream: reset by us; frames in flight are discarded, not violations") {
  StreamMachine m = opened_by_peer();
  CHECK(m.send_reset(MuxError::cancelled));
  CHECK(m.state() == StreamState::reset);
  CHECK(!m.reset_by_peer());
  CHECK(m.on_recv_data(false).value() == Delivery::discard);
  CHECK(m.on_recv_end().value() == Delivery::discard);
  CHECK(m.on_recv_reset(StatusCode::cancelled).ok());
  CHECK(m.send_data(false).error() == MuxError::cancelled);
}

// Proves STOP (the yamux half-close stall answer): once received, our writes fail at
// once with stream_stopped; once sent, arriving data is discarded for credit.
TEST_CASE("stream: STOP received fails writes promptly; STOP sent discards data") {
  StreamMachine writer;
  CHECK(writer.send_open(false).ok());
  CHECK(writer.send_data(false).ok());
  CHECK(writer.on_recv_stop(StatusCode::stream_stopped).ok());
  CHECK(writer.stop_received());
  CHECK(!writer.can_send());
  auto write = writer.send_data(false);
  REQUIRE(!write.ok());
  CHECK(write.error() == MuxError::stream_stopped);
  CHECK(scope_of(write.error()) == Scope::stream);
  CHECK(writer.on_recv_data(false).value() == Delivery::deliver);  // the other direction still works

  StreamMachine reader = opened_by_peer();
  CHECK(reader.send_stop());
  CHECK(!reader.send_stop());  // once
  CHECK(reader.on_recv_data(false).value() == Delivery::discard);
  CHECK(reader.send_data(false).ok());  // our direction is unaffected
  CHECK(reader.on_recv_end().value() == Delivery::discard);
  CHECK(!reader.send_stop());  // the peer ended: nothing left to stop
}

// Proves every frame that the state does not allow is a connection-scoped violation.
TEST_CASE("stream: protocol violations are connection-scoped") {
  SUBCASE("OPEN twice") {
    StreamMachine m = opened_by_peer();
    check_violation(m.on_recv_open(false));
  }
  SUBCASE("DATA before OPEN") {
    StreamMachine m;
    check_violation(m.on_recv_data(false));
  }
  SUBCASE("END before OPEN") {
    StreamMachine m;
    check_violation(m.on_recv_end());
  }
  SUBCASE("RESET and STOP before OPEN") {
    StreamMachine m;
    check_violation(m.on_recv_reset(StatusCode::cancelled));
    check_violation(m.on_recv_stop(StatusCode::stream_stopped));
  }
  SUBCASE("DATA after the peer's END") {
    StreamMachine m = opened_by_peer();
    REQUIRE(m.on_recv_end().ok());
    check_violation(m.on_recv_data(false));
  }
  SUBCASE("END twice") {
    StreamMachine m = opened_by_peer(true);
    check_violation(m.on_recv_end());
  }
  SUBCASE("DATA on a closed stream") {
    StreamMachine m = opened_by_peer(true);
    REQUIRE(m.send_end().ok());
    check_violation(m.on_recv_data(false));
  }
}

// Proves a RESET after a clean close, and STOP on a half we already ended, are harmless.
TEST_CASE("stream: late RESET and STOP are accepted") {
  StreamMachine m = opened_by_peer(true);
  REQUIRE(m.send_end().ok());
  CHECK(m.on_recv_reset(StatusCode::handler_error).ok());
  CHECK(m.state() == StreamState::closed);
  StreamMachine ended;
  REQUIRE(ended.send_open(true).ok());
  CHECK(ended.on_recv_stop(StatusCode::stream_stopped).ok());
  CHECK(!ended.stop_received());
}

// Proves the status codes of RESET map to the errors waiters see, and back.
TEST_CASE("stream: status codes and errors") {
  CHECK(error_from_status(StatusCode::cancelled) == MuxError::cancelled);
  CHECK(error_from_status(StatusCode::deadline_exceeded) == MuxError::deadline_exceeded);
  CHECK(error_from_status(StatusCode::refused_stream) == MuxError::refused);
  CHECK(error_from_status(StatusCode::internal_error) == MuxError::stream_reset);
  for (const MuxError e : {MuxError::cancelled, MuxError::deadline_exceeded, MuxError::refused,
                           MuxError::unknown_handler, MuxError::handler_error, MuxError::stream_stopped}) {
    CHECK(error_from_status(status_of(e)) == e);
  }
  const std::error_code code = MuxError::stream_stopped;
  CHECK(code.message() == "peer stopped reading the stream");
}
