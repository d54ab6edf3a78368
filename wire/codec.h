// Encoding and decoding of ringmux frames: plain functions and an incremental decoder,
// no I/O (wire/SPEC.md is the normative layout).
//
// Encoders write into caller-provided memory and never allocate; they assert that the
// memory is large enough and that the arguments are valid (a bad frame is a bug of the
// caller, not a peer error). Parsers of typed payloads and the Decoder return WireError
// for anything a peer could have sent wrong. Everything here may be used from any
// thread; one Decoder belongs to one reader at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "ringmux/base/limits.h"
#include "ringmux/base/result.h"
#include "ringmux/wire/errors.h"
#include "ringmux/wire/frame.h"

namespace ringmux::wire {

// ---- encoding ------------------------------------------------------------------------

// Bytes of a whole frame with `payload_bytes` of payload.
constexpr std::size_t frame_bytes(std::size_t payload_bytes) noexcept { return header_bytes + payload_bytes; }

// Writes the 24-byte header of a frame whose payload is `payload` into `out`. The payload
// need not follow the header in memory: a writer can place the header in front of
// payload bytes already in its buffer (or send the two with a gather write).
// `payload_checksum` false: the payload checksum field is 0 (a session whose transport
// authenticates every byte: feature_unchecked_payloads).
void encode_header(std::span<std::byte, header_bytes> out, FrameKind kind, uint8_t flags, uint32_t stream_id,
                   std::span<const std::byte> payload, bool payload_checksum = true) noexcept;

// Writes header + payload into `out` (at least frame_bytes(payload.size()) bytes) and
// returns the bytes written. This copies the payload: use encode_header to avoid it.
std::size_t encode_frame(std::span<std::byte> out, FrameKind kind, uint8_t flags, uint32_t stream_id,
                         std::span<const std::byte> payload, bool payload_checksum = true) noexcept;

// Typed encoders: each writes a whole frame into `out` and returns its size.
std::size_t encode_hello(std::span<std::byte> out, const Hello& hello) noexcept;
std::size_t encode_hello_ack(std::span<std::byte> out, const HelloAck& ack) noexcept;
std::size_t encode_open(std::span<std::byte> out, uint32_t stream_id, uint8_t flags, uint32_t handler_id,
                        uint64_t deadline_budget_ns, std::span<const std::byte> payload,
                        bool payload_checksum = true) noexcept;
std::size_t encode_end(std::span<std::byte> out, uint32_t stream_id) noexcept;
std::size_t encode_reset(std::span<std::byte> out, uint32_t stream_id, StatusCode code) noexcept;
std::size_t encode_stop(std::span<std::byte> out, uint32_t stream_id, StatusCode code) noexcept;
std::size_t encode_credit(std::span<std::byte> out, uint32_t stream_id, uint32_t increment_bytes) noexcept;
std::size_t encode_ping(std::span<std::byte> out, uint64_t opaque) noexcept;
std::size_t encode_pong(std::span<std::byte> out, uint64_t opaque) noexcept;
std::size_t encode_ack(std::span<std::byte> out, uint64_t position) noexcept;
std::size_t encode_goaway(std::span<std::byte> out, uint32_t last_stream_id, StatusCode code,
                          std::string_view debug) noexcept;
std::size_t encode_error(std::span<std::byte> out, uint32_t stream_id, StatusCode status,
                         std::string_view message) noexcept;

// ---- typed payloads ------------------------------------------------------------------
// Each parser takes a frame of its kind (asserted) and returns the typed view or:
// payload_truncated (shorter than the fixed fields), trailing_bytes (longer than a fixed
// kind), bad_value (zero credit, text over limits::frame_text_bytes_max), bad_magic.

Result<Hello, WireError> parse_hello(const Frame& frame) noexcept;
Result<HelloAck, WireError> parse_hello_ack(const Frame& frame) noexcept;
Result<Open, WireError> parse_open(const Frame& frame) noexcept;
Result<StatusCode, WireError> parse_reset(const Frame& frame) noexcept;
Result<StatusCode, WireError> parse_stop(const Frame& frame) noexcept;
Result<uint32_t, WireError> parse_credit(const Frame& frame) noexcept;
Result<uint64_t, WireError> parse_ping(const Frame& frame) noexcept;  // PING and PONG
Result<uint64_t, WireError> parse_ack(const Frame& frame) noexcept;
Result<Goaway, WireError> parse_goaway(const Frame& frame) noexcept;
Result<ErrorFrame, WireError> parse_error(const Frame& frame) noexcept;

// ---- decoding ------------------------------------------------------------------------

// Checks a decoded header against the rules of wire/SPEC.md that need no payload: the
// reserved field, the length limit, the kind, its flags and its stream id. (The header
// checksum is checked before this, on the raw bytes.)
Result<void, WireError> validate_header(const FrameHeader& header, uint32_t payload_bytes_max) noexcept;

// Incremental decoder: bytes in, frames out, split anywhere.
//
// Invariant: either the decoder is between frames (nothing buffered), or it holds the
// first header_have_ < 24 bytes of a header, or a validated header and the first
// payload_have_ < length payload bytes. After an error it stays failed and says which.
//
// Copies: a frame that lies whole inside one input span is handed out as a view into
// that span (no copy). Only a frame split across inputs is copied, once, into the
// decoder's own buffer, whose size never exceeds the validated frame length, so a peer
// claiming a huge length cannot make it allocate more than payload_bytes_max.
class Decoder {
 public:
  struct Step {
    std::size_t consumed = 0;  // bytes of the input used by this step
    bool has_frame = false;    // `frame` holds a complete, verified frame
    Frame frame;               // valid until the next call, or as long as the input
  };

  explicit Decoder(uint32_t payload_bytes_max = limits::frame_payload_bytes_max) noexcept;

  // Decodes at most one frame from the front of `input`. Call again with the rest of the
  // input while consumed < input.size(). An ignorable unknown kind is skipped (counted,
  // never returned). Errors are sticky: every later call returns the same error.
  Result<Step, WireError> next(std::span<const std::byte> input) noexcept;

  // True while a frame has started but not finished (the input ended inside it).
  bool mid_frame() const noexcept { return header_have_ > 0 || in_payload_; }
  bool failed() const noexcept { return error_ != WireError::none; }
  WireError error() const noexcept { return error_; }
  uint64_t frames_skipped() const noexcept { return frames_skipped_; }
  // Whether payload checksums are checked (the default); off once a session negotiated
  // feature_unchecked_payloads (its transport authenticates every byte). Header checksums
  // are always checked.
  void set_payload_checksums(bool checked) noexcept { check_payloads_ = checked; }
  // Capacity of the reassembly buffer: never above payload_bytes_max.
  std::size_t buffer_capacity() const noexcept { return payload_.capacity(); }
  // Frees the reassembly buffer between frames (an idle connection keeps none); a no-op
  // while a frame is partly received.
  void trim() noexcept {
    if (!mid_frame()) std::vector<std::byte>().swap(payload_);
  }

 private:
  Result<Step, WireError> fail(WireError error) noexcept;
  Result<void, WireError> accept_header(std::span<const std::byte, header_bytes> raw) noexcept;
  Result<Step, WireError> finish_frame(std::span<const std::byte> payload, std::size_t consumed) noexcept;

  uint32_t payload_bytes_max_;
  WireError error_ = WireError::none;
  std::byte header_raw_[header_bytes] = {};
  uint32_t header_have_ = 0;
  bool in_payload_ = false;
  bool skipping_ = false;  // the current frame is an ignorable unknown kind
  bool check_payloads_ = true;
  FrameHeader header_{};
  uint32_t payload_have_ = 0;
  std::vector<std::byte> payload_;
  uint64_t frames_skipped_ = 0;
};

}  // namespace ringmux::wire
