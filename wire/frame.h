// Frame vocabulary of the ringmux wire format, version 1 (normative text: wire/SPEC.md).
//
// Holds the frame kinds, flags and status codes, the fixed 24-byte header and the typed
// payloads of every kind. A Frame is a view: its payload points into the caller's input
// or into the decoder's buffer and is valid only as long as that memory (see Decoder).
// Plain data and pure functions: callable from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>

#include "ringmux/base/limits.h"

namespace ringmux::wire {

enum class FrameKind : uint8_t {
  hello = 0x01,      // connection: handshake offer (new session or resume)
  hello_ack = 0x02,  // connection: handshake answer (accepted or refused)
  open = 0x03,       // stream: open with handler id, deadline and initial payload
  data = 0x04,       // stream: payload bytes
  end = 0x05,        // stream: half-close, "I will send no more"
  reset = 0x06,      // stream: abort both directions, with a status code
  stop = 0x07,       // stream: "I will read no more; stop sending", with a status code
  credit = 0x08,     // stream (id != 0) or connection (id 0) flow-control credit
  ping = 0x09,       // connection: liveness probe carrying 8 opaque bytes
  pong = 0x0a,       // connection: answer to ping, echoing its bytes
  ack = 0x0b,        // connection: replay position received so far
  goaway = 0x0c,     // connection: last stream id that will be served, code, debug text
  error = 0x0d,      // connection (id 0) or stream: status code and message
};

// Kinds with this bit set are ignorable: a receiver that does not know one skips it.
// An unknown kind without it is fatal (WireError::unknown_kind).
inline constexpr uint8_t kind_ignorable_bit = 0x80;

// The one flag of version 1: the sender's half of the stream ends with this frame.
// Valid on OPEN and DATA only; every other flag bit must be zero.
inline constexpr uint8_t flag_end_stream = 0x01;

// Status codes carried by RESET, STOP, GOAWAY, ERROR and HELLO_ACK (wire/SPEC.md,
// "Status codes"). A receiver maps a code it does not know to internal_error.
enum class StatusCode : uint32_t {
  ok = 0,
  cancelled = 1,           // the caller cancelled the call or stream
  deadline_exceeded = 2,   // the deadline passed before completion
  refused_stream = 3,      // over the concurrency limit; retryable, nothing was processed
  unknown_handler = 4,     // no handler registered under the id
  handler_error = 5,       // the handler failed; message in ERROR
  flow_control_error = 6,  // the peer sent beyond its credit
  protocol_error = 7,      // the peer broke the protocol
  internal_error = 8,      // a bug or unexpected condition on the sender
  session_lost = 9,        // the session cannot resume; every stream fails
  stream_stopped = 10,     // the receiver sent STOP; writes fail
  going_away = 11,         // the sender is draining (GOAWAY)
  resource_exhausted = 12, // a memory or rate limit was hit (rapid reset, floods)
  resume_position_ahead = 13,    // resume refused: the position is beyond what was sent
  resume_position_gone = 14,     // resume refused: those bytes are no longer held
  resume_unknown_session = 15,   // resume refused: no such session (the peer restarted)
  version_unsupported = 16,      // handshake refused: no common protocol version
  resume_unauthenticated = 17,   // resume refused: no valid proof of the session's secret, or
                                 // another peer identity (SPEC §8.2); the session goes on
};
const char* describe(StatusCode code) noexcept;
// Maps any u32 to a StatusCode; unknown values become internal_error.
StatusCode status_from_wire(uint32_t value) noexcept;

// The fixed header, decoded. Encoded layout (little-endian), 24 bytes:
//   0 u32 payload_length | 4 u8 kind | 5 u8 flags | 6 u16 reserved (0)
//   8 u32 stream_id | 12 u32 header_checksum | 16 u64 payload_checksum
struct FrameHeader {
  uint32_t payload_length = 0;
  uint8_t kind = 0;  // raw: may be an ignorable kind this version does not know
  uint8_t flags = 0;
  uint32_t stream_id = 0;
  uint64_t payload_checksum = 0;

  FrameKind frame_kind() const noexcept { return static_cast<FrameKind>(kind); }
  bool end_stream() const noexcept { return (flags & flag_end_stream) != 0; }
};
inline constexpr uint32_t header_bytes = limits::frame_header_bytes;
static_assert(header_bytes == 4 + 1 + 1 + 2 + 4 + 4 + 8, "header layout of wire/SPEC.md");

struct Frame {
  FrameHeader header;
  std::span<const std::byte> payload;
};

// "RMUX" as the first four payload bytes of HELLO.
inline constexpr uint32_t hello_magic = 0x58554d52;
inline constexpr uint32_t hello_flag_resume = 0x1;  // HELLO resumes an existing session

using SessionId = std::array<std::byte, 16>;

// Typed payloads. Spans point into the frame's payload.
// HMAC-SHA256 of a resume (SPEC §8.2).
using ResumeProof = std::array<std::byte, 32>;

struct Hello {
  uint16_t version_min = limits::protocol_version_min;
  uint16_t version_max = limits::protocol_version_max;
  uint64_t features = 0;
  SessionId session_id{};
  uint64_t generation = 0;
  uint64_t receive_position = 0;
  uint32_t hello_flags = 0;
  // Which of the acceptor's loops the session belongs to (SPEC §4.1); 0: none, sent as the
  // 52-byte HELLO without the field.
  uint64_t route_key = 0;
  // The dialer's receive windows (SPEC §4.1): the initial credit of every stream the
  // acceptor opens or writes to, and of the connection. 0: not announced (a peer that
  // predates the fields), the defaults apply. Sent with route_key as the 68-byte HELLO.
  uint32_t stream_window_bytes = 0;
  uint32_t connection_window_bytes = 0;
  // A resume's proof of the session's secret (SPEC §8.2): HMAC-SHA256 by the key both sides
  // derived on the session's first transport. Sent as the 100-byte HELLO, after the windows.
  bool has_resume_proof = false;
  ResumeProof resume_proof{};
};
inline constexpr uint32_t hello_payload_bytes = 4 + 2 + 2 + 8 + 16 + 8 + 8 + 4;
inline constexpr uint32_t hello_route_payload_bytes = hello_payload_bytes + 8;     // with route_key
inline constexpr uint32_t hello_window_payload_bytes = hello_route_payload_bytes + 8;  // and windows
inline constexpr uint32_t hello_proof_payload_bytes = hello_window_payload_bytes + 32;  // and a resume proof
// The payload length `hello` is encoded with.
constexpr uint32_t hello_payload_size(const Hello& hello) noexcept {
  if (hello.has_resume_proof) return hello_proof_payload_bytes;
  if (hello.stream_window_bytes != 0 || hello.connection_window_bytes != 0) return hello_window_payload_bytes;
  return hello.route_key != 0 ? hello_route_payload_bytes : hello_payload_bytes;
}

struct HelloAck {
  uint16_t version = 0;
  StatusCode status = StatusCode::ok;  // ok: accepted; otherwise why it was refused
  uint64_t features = 0;
  SessionId session_id{};
  uint64_t generation = 0;
  uint64_t receive_position = 0;
  // The acceptor's receive windows, as in Hello; 0: not announced (sent as 44 bytes).
  uint32_t stream_window_bytes = 0;
  uint32_t connection_window_bytes = 0;
};
inline constexpr uint32_t hello_ack_payload_bytes = 2 + 2 + 8 + 16 + 8 + 8;
inline constexpr uint32_t hello_ack_window_payload_bytes = hello_ack_payload_bytes + 8;  // with windows
constexpr uint32_t hello_ack_payload_size(const HelloAck& ack) noexcept {
  return ack.stream_window_bytes != 0 || ack.connection_window_bytes != 0 ? hello_ack_window_payload_bytes
                                                                          : hello_ack_payload_bytes;
}

struct Open {
  uint32_t handler_id = 0;
  uint64_t deadline_budget_ns = 0;  // time left when sent; 0 = no deadline
  std::span<const std::byte> payload;
};
inline constexpr uint32_t open_prefix_bytes = 4 + 8;

struct Goaway {
  uint32_t last_stream_id = 0;
  StatusCode code = StatusCode::ok;
  std::string_view debug;
};
struct ErrorFrame {
  StatusCode status = StatusCode::ok;
  std::string_view message;
};

// Frame kinds whose bytes are session state and so carry replay positions; the others
// (HELLO, HELLO_ACK, PING, PONG, ACK) concern only the current TCP connection.
bool in_position_space(FrameKind kind) noexcept;
// Whether version 1 defines `kind`.
bool is_known_kind(uint8_t kind) noexcept;
const char* describe(FrameKind kind) noexcept;

}  // namespace ringmux::wire
