#include "ringmux/wire/codec.h"

#include <algorithm>
#include <cstring>

#include "ringmux/base/assert.h"
#include "ringmux/wire/checksum.h"

namespace ringmux::wire {

namespace {

// Little-endian stores and loads, byte by byte: correct on any host, and compilers turn
// them into single moves on little-endian ones.
void store_u16(std::byte* p, uint16_t v) noexcept {
  for (int i = 0; i < 2; i++) p[i] = static_cast<std::byte>(v >> (8 * i));
}
void store_u32(std::byte* p, uint32_t v) noexcept {
  for (int i = 0; i < 4; i++) p[i] = static_cast<std::byte>(v >> (8 * i));
}
void store_u64(std::byte* p, uint64_t v) noexcept {
  for (int i = 0; i < 8; i++) p[i] = static_cast<std::byte>(v >> (8 * i));
}
uint16_t load_u16(const std::byte* p) noexcept {
  return static_cast<uint16_t>(static_cast<uint16_t>(p[0]) | static_cast<uint16_t>(p[1]) << 8);
}
uint32_t load_u32(const std::byte* p) noexcept {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = v << 8 | static_cast<uint32_t>(p[i]);
  return v;
}
uint64_t load_u64(const std::byte* p) noexcept {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | static_cast<uint64_t>(p[i]);
  return v;
}

// Writes a frame whose payload is `prefix` followed by `body` (either may be empty).
std::size_t encode_parts(std::span<std::byte> out, FrameKind kind, uint8_t flags, uint32_t stream_id,
                         std::span<const std::byte> prefix, std::span<const std::byte> body) noexcept {
  const std::size_t payload_bytes = prefix.size() + body.size();
  RM_ASSERT(payload_bytes <= limits::frame_payload_bytes_max);
  RM_ASSERT(out.size() >= frame_bytes(payload_bytes));
  std::byte* payload = out.data() + header_bytes;
  if (!prefix.empty()) std::memcpy(payload, prefix.data(), prefix.size());
  if (!body.empty()) std::memcpy(payload + prefix.size(), body.data(), body.size());
  encode_header(out.first<header_bytes>(), kind, flags, stream_id, {payload, payload_bytes});
  return frame_bytes(payload_bytes);
}

std::span<const std::byte> text_bytes(std::string_view text) noexcept {
  return {reinterpret_cast<const std::byte*>(text.data()), text.size()};
}
std::string_view bytes_text(std::span<const std::byte> bytes) noexcept {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// The payload size rules of each kind that can be checked from the header alone.
Result<void, WireError> check_length(FrameKind kind, uint32_t length) noexcept {
  auto exact = [length](uint32_t want) -> Result<void, WireError> {
    if (length < want) return Err{WireError::payload_truncated};
    if (length > want) return Err{WireError::trailing_bytes};
    return {};
  };
  auto at_least = [length](uint32_t want) -> Result<void, WireError> {
    if (length < want) return Err{WireError::payload_truncated};
    return {};
  };
  auto text = [length](uint32_t fixed) -> Result<void, WireError> {
    if (length < fixed) return Err{WireError::payload_truncated};
    if (length - fixed > limits::frame_text_bytes_max) return Err{WireError::bad_value};
    return {};
  };
  switch (kind) {
    case FrameKind::hello: return at_least(hello_payload_bytes);
    case FrameKind::hello_ack: return at_least(hello_ack_payload_bytes);
    case FrameKind::open: return at_least(open_prefix_bytes);
    case FrameKind::data: return {};
    case FrameKind::end: return exact(0);
    case FrameKind::reset:
    case FrameKind::stop:
    case FrameKind::credit:
      return exact(4);
    case FrameKind::ping:
    case FrameKind::pong:
    case FrameKind::ack:
      return exact(8);
    case FrameKind::goaway: return text(8);
    case FrameKind::error: return text(4);
  }
  return Err{WireError::unknown_kind};
}

enum class StreamRule : uint8_t { required, forbidden, any };

StreamRule stream_rule(FrameKind kind) noexcept {
  switch (kind) {
    case FrameKind::open:
    case FrameKind::data:
    case FrameKind::end:
    case FrameKind::reset:
    case FrameKind::stop:
      return StreamRule::required;
    case FrameKind::hello:
    case FrameKind::hello_ack:
    case FrameKind::ping:
    case FrameKind::pong:
    case FrameKind::ack:
    case FrameKind::goaway:
      return StreamRule::forbidden;
    case FrameKind::credit:
    case FrameKind::error:
      return StreamRule::any;
  }
  return StreamRule::any;
}

uint8_t allowed_flags(FrameKind kind) noexcept {
  return kind == FrameKind::open || kind == FrameKind::data ? flag_end_stream : 0;
}

}  // namespace

// ---- encoding ------------------------------------------------------------------------

void encode_header(std::span<std::byte, header_bytes> out, FrameKind kind, uint8_t flags, uint32_t stream_id,
                   std::span<const std::byte> payload) noexcept {
  RM_ASSERT(payload.size() <= limits::frame_payload_bytes_max);
  RM_ASSERT((flags & ~allowed_flags(kind)) == 0);
  std::byte* p = out.data();
  store_u32(p + 0, static_cast<uint32_t>(payload.size()));
  p[4] = static_cast<std::byte>(kind);
  p[5] = static_cast<std::byte>(flags);
  store_u16(p + 6, 0);
  store_u32(p + 8, stream_id);
  store_u32(p + 12, 0);
  store_u64(p + 16, checksum64(payload));
  store_u32(p + 12, header_checksum(out));
}

std::size_t encode_frame(std::span<std::byte> out, FrameKind kind, uint8_t flags, uint32_t stream_id,
                         std::span<const std::byte> payload) noexcept {
  return encode_parts(out, kind, flags, stream_id, {}, payload);
}

std::size_t encode_hello(std::span<std::byte> out, const Hello& hello) noexcept {
  // The proof follows the windows: a HELLO with one announces them (SPEC §4.1).
  RM_ASSERT(!hello.has_resume_proof || (hello.stream_window_bytes != 0 && hello.connection_window_bytes != 0));
  std::byte b[hello_proof_payload_bytes];
  store_u32(b + 0, hello_magic);
  store_u16(b + 4, hello.version_min);
  store_u16(b + 6, hello.version_max);
  store_u64(b + 8, hello.features);
  std::memcpy(b + 16, hello.session_id.data(), 16);
  store_u64(b + 32, hello.generation);
  store_u64(b + 40, hello.receive_position);
  store_u32(b + 48, hello.hello_flags);
  store_u64(b + 52, hello.route_key);
  store_u32(b + 60, hello.stream_window_bytes);
  store_u32(b + 64, hello.connection_window_bytes);
  std::memcpy(b + 68, hello.resume_proof.data(), hello.resume_proof.size());
  return encode_parts(out, FrameKind::hello, 0, 0, std::span<const std::byte>(b, hello_payload_size(hello)), {});
}

std::size_t encode_hello_ack(std::span<std::byte> out, const HelloAck& ack) noexcept {
  std::byte b[hello_ack_window_payload_bytes];
  store_u16(b + 0, ack.version);
  store_u16(b + 2, static_cast<uint16_t>(ack.status));
  store_u64(b + 4, ack.features);
  std::memcpy(b + 12, ack.session_id.data(), 16);
  store_u64(b + 28, ack.generation);
  store_u64(b + 36, ack.receive_position);
  store_u32(b + 44, ack.stream_window_bytes);
  store_u32(b + 48, ack.connection_window_bytes);
  return encode_parts(out, FrameKind::hello_ack, 0, 0, std::span<const std::byte>(b, hello_ack_payload_size(ack)), {});
}

std::size_t encode_open(std::span<std::byte> out, uint32_t stream_id, uint8_t flags, uint32_t handler_id,
                        uint64_t deadline_budget_ns, std::span<const std::byte> payload) noexcept {
  RM_ASSERT(stream_id != 0);
  std::byte b[open_prefix_bytes];
  store_u32(b + 0, handler_id);
  store_u64(b + 4, deadline_budget_ns);
  return encode_parts(out, FrameKind::open, flags, stream_id, b, payload);
}

std::size_t encode_end(std::span<std::byte> out, uint32_t stream_id) noexcept {
  RM_ASSERT(stream_id != 0);
  return encode_parts(out, FrameKind::end, 0, stream_id, {}, {});
}

std::size_t encode_reset(std::span<std::byte> out, uint32_t stream_id, StatusCode code) noexcept {
  RM_ASSERT(stream_id != 0);
  std::byte b[4];
  store_u32(b, static_cast<uint32_t>(code));
  return encode_parts(out, FrameKind::reset, 0, stream_id, b, {});
}

std::size_t encode_stop(std::span<std::byte> out, uint32_t stream_id, StatusCode code) noexcept {
  RM_ASSERT(stream_id != 0);
  std::byte b[4];
  store_u32(b, static_cast<uint32_t>(code));
  return encode_parts(out, FrameKind::stop, 0, stream_id, b, {});
}

std::size_t encode_credit(std::span<std::byte> out, uint32_t stream_id, uint32_t increment_bytes) noexcept {
  RM_ASSERT(increment_bytes != 0);
  std::byte b[4];
  store_u32(b, increment_bytes);
  return encode_parts(out, FrameKind::credit, 0, stream_id, b, {});
}

std::size_t encode_ping(std::span<std::byte> out, uint64_t opaque) noexcept {
  std::byte b[8];
  store_u64(b, opaque);
  return encode_parts(out, FrameKind::ping, 0, 0, b, {});
}

std::size_t encode_pong(std::span<std::byte> out, uint64_t opaque) noexcept {
  std::byte b[8];
  store_u64(b, opaque);
  return encode_parts(out, FrameKind::pong, 0, 0, b, {});
}

std::size_t encode_ack(std::span<std::byte> out, uint64_t position) noexcept {
  std::byte b[8];
  store_u64(b, position);
  return encode_parts(out, FrameKind::ack, 0, 0, b, {});
}

std::size_t encode_goaway(std::span<std::byte> out, uint32_t last_stream_id, StatusCode code,
                          std::string_view debug) noexcept {
  RM_ASSERT(debug.size() <= limits::frame_text_bytes_max);
  std::byte b[8];
  store_u32(b + 0, last_stream_id);
  store_u32(b + 4, static_cast<uint32_t>(code));
  return encode_parts(out, FrameKind::goaway, 0, 0, b, text_bytes(debug));
}

std::size_t encode_error(std::span<std::byte> out, uint32_t stream_id, StatusCode status,
                         std::string_view message) noexcept {
  RM_ASSERT(message.size() <= limits::frame_text_bytes_max);
  std::byte b[4];
  store_u32(b, static_cast<uint32_t>(status));
  return encode_parts(out, FrameKind::error, 0, stream_id, b, text_bytes(message));
}

// ---- typed payloads ------------------------------------------------------------------

namespace {

// Announced receive windows (SPEC §4.1): at least the minimums a pipelining dialer assumes,
// at most what a credit counter may hold.
bool windows_valid(uint32_t stream_bytes, uint32_t connection_bytes) noexcept {
  return stream_bytes >= limits::stream_window_bytes_min && stream_bytes <= limits::window_bytes_limit &&
         connection_bytes >= limits::connection_window_bytes_min && connection_bytes <= limits::window_bytes_limit &&
         stream_bytes <= connection_bytes;
}

}  // namespace

Result<Hello, WireError> parse_hello(const Frame& frame) noexcept {
  RM_ASSERT(frame.header.frame_kind() == FrameKind::hello);
  const auto p = frame.payload;
  // Longer payloads are allowed: later versions may append fields (wire/SPEC.md).
  if (p.size() < hello_payload_bytes) return Err{WireError::payload_truncated};
  if (load_u32(p.data()) != hello_magic) return Err{WireError::bad_magic};
  Hello hello;
  hello.version_min = load_u16(p.data() + 4);
  hello.version_max = load_u16(p.data() + 6);
  if (hello.version_min > hello.version_max) return Err{WireError::bad_value};
  hello.features = load_u64(p.data() + 8);
  std::memcpy(hello.session_id.data(), p.data() + 16, 16);
  hello.generation = load_u64(p.data() + 32);
  hello.receive_position = load_u64(p.data() + 40);
  hello.hello_flags = load_u32(p.data() + 48);
  if (p.size() >= hello_route_payload_bytes) hello.route_key = load_u64(p.data() + 52);
  if (p.size() >= hello_window_payload_bytes) {
    hello.stream_window_bytes = load_u32(p.data() + 60);
    hello.connection_window_bytes = load_u32(p.data() + 64);
    if (!windows_valid(hello.stream_window_bytes, hello.connection_window_bytes)) return Err{WireError::bad_value};
  }
  if (p.size() >= hello_proof_payload_bytes) {
    hello.has_resume_proof = true;
    std::memcpy(hello.resume_proof.data(), p.data() + 68, hello.resume_proof.size());
  }
  return hello;
}

Result<HelloAck, WireError> parse_hello_ack(const Frame& frame) noexcept {
  RM_ASSERT(frame.header.frame_kind() == FrameKind::hello_ack);
  const auto p = frame.payload;
  if (p.size() < hello_ack_payload_bytes) return Err{WireError::payload_truncated};
  HelloAck ack;
  ack.version = load_u16(p.data());
  ack.status = status_from_wire(load_u16(p.data() + 2));
  ack.features = load_u64(p.data() + 4);
  std::memcpy(ack.session_id.data(), p.data() + 12, 16);
  ack.generation = load_u64(p.data() + 28);
  ack.receive_position = load_u64(p.data() + 36);
  if (p.size() >= hello_ack_window_payload_bytes) {
    ack.stream_window_bytes = load_u32(p.data() + 44);
    ack.connection_window_bytes = load_u32(p.data() + 48);
    if (!windows_valid(ack.stream_window_bytes, ack.connection_window_bytes)) return Err{WireError::bad_value};
  }
  return ack;
}

Result<Open, WireError> parse_open(const Frame& frame) noexcept {
  RM_ASSERT(frame.header.frame_kind() == FrameKind::open);
  const auto p = frame.payload;
  if (p.size() < open_prefix_bytes) return Err{WireError::payload_truncated};
  Open open;
  open.handler_id = load_u32(p.data());
  open.deadline_budget_ns = load_u64(p.data() + 4);
  open.payload = p.subspan(open_prefix_bytes);
  return open;
}

namespace {
Result<uint32_t, WireError> parse_u32_payload(const Frame& frame) noexcept {
  if (frame.payload.size() < 4) return Err{WireError::payload_truncated};
  if (frame.payload.size() > 4) return Err{WireError::trailing_bytes};
  return load_u32(frame.payload.data());
}
Result<uint64_t, WireError> parse_u64_payload(const Frame& frame) noexcept {
  if (frame.payload.size() < 8) return Err{WireError::payload_truncated};
  if (frame.payload.size() > 8) return Err{WireError::trailing_bytes};
  return load_u64(frame.payload.data());
}
}  // namespace

Result<StatusCode, WireError> parse_reset(const Frame& frame) noexcept {
  RM_ASSERT(frame.header.frame_kind() == FrameKind::reset);
  auto value = parse_u32_payload(frame);
  if (!value) return Err{value.error()};
  return status_from_wire(value.value());
}

Result<StatusCode, WireError> parse_stop(const Frame& frame) noexcept {
  RM_ASSERT(frame.header.frame_kind() == FrameKind::stop);
  auto value = parse_u32_payload(frame);
  if (!value) return Err{value.error()};
  return status_from_wire(value.value());
}

Result<uint32_t, WireError> parse_credit(const Frame& frame) noexcept {
  RM_ASSERT(frame.header.frame_kind() == FrameKind::credit);
  auto value = parse_u32_payload(frame);
  if (!value) return Err{value.error()};
  if (value.value() == 0) return Err{WireError::bad_value};
  return value.value();
}

Result<uint64_t, WireError> parse_ping(const Frame& frame) noexcept {
  RM_ASSERT(frame.header.frame_kind() == FrameKind::ping || frame.header.frame_kind() == FrameKind::pong);
  return parse_u64_payload(frame);
}

Result<uint64_t, WireError> parse_ack(const Frame& frame) noexcept {
  RM_ASSERT(frame.header.frame_kind() == FrameKind::ack);
  return parse_u64_payload(frame);
}

Result<Goaway, WireError> parse_goaway(const Frame& frame) noexcept {
  RM_ASSERT(frame.header.frame_kind() == FrameKind::goaway);
  const auto p = frame.payload;
  if (p.size() < 8) return Err{WireError::payload_truncated};
  if (p.size() - 8 > limits::frame_text_bytes_max) return Err{WireError::bad_value};
  Goaway goaway;
  goaway.last_stream_id = load_u32(p.data());
  goaway.code = status_from_wire(load_u32(p.data() + 4));
  goaway.debug = bytes_text(p.subspan(8));
  return goaway;
}

Result<ErrorFrame, WireError> parse_error(const Frame& frame) noexcept {
  RM_ASSERT(frame.header.frame_kind() == FrameKind::error);
  const auto p = frame.payload;
  if (p.size() < 4) return Err{WireError::payload_truncated};
  if (p.size() - 4 > limits::frame_text_bytes_max) return Err{WireError::bad_value};
  ErrorFrame error;
  error.status = status_from_wire(load_u32(p.data()));
  error.message = bytes_text(p.subspan(4));
  return error;
}

// ---- decoding ------------------------------------------------------------------------

Result<void, WireError> validate_header(const FrameHeader& header, uint32_t payload_bytes_max) noexcept {
  if (header.payload_length > payload_bytes_max) return Err{WireError::payload_too_large};
  if (!is_known_kind(header.kind)) {
    if ((header.kind & kind_ignorable_bit) != 0) return {};  // skipped whole, flags and all
    return Err{WireError::unknown_kind};
  }
  const FrameKind kind = header.frame_kind();
  if ((header.flags & ~allowed_flags(kind)) != 0) return Err{WireError::bad_flags};
  switch (stream_rule(kind)) {
    case StreamRule::required:
      if (header.stream_id == 0) return Err{WireError::stream_id_required};
      break;
    case StreamRule::forbidden:
      if (header.stream_id != 0) return Err{WireError::stream_id_forbidden};
      break;
    case StreamRule::any:
      break;
  }
  return check_length(kind, header.payload_length);
}

Decoder::Decoder(uint32_t payload_bytes_max) noexcept : payload_bytes_max_(payload_bytes_max) {
  RM_ASSERT(payload_bytes_max <= limits::frame_payload_bytes_max);
}

Result<Decoder::Step, WireError> Decoder::fail(WireError error) noexcept {
  error_ = error;
  return Err{error};
}

Result<void, WireError> Decoder::accept_header(std::span<const std::byte, header_bytes> raw) noexcept {
  // The checksum first: until it matches, the length field is noise.
  if (load_u32(raw.data() + 12) != header_checksum(raw)) return Err{WireError::bad_header_checksum};
  FrameHeader header;
  header.payload_length = load_u32(raw.data());
  header.kind = static_cast<uint8_t>(raw[4]);
  header.flags = static_cast<uint8_t>(raw[5]);
  header.stream_id = load_u32(raw.data() + 8);
  header.payload_checksum = load_u64(raw.data() + 16);
  // The length limit is checked before anything else is looked at, so that whatever else
  // is wrong, a huge claimed length is reported as what it is.
  if (header.payload_length > payload_bytes_max_) return Err{WireError::payload_too_large};
  if (load_u16(raw.data() + 6) != 0) return Err{WireError::reserved_nonzero};
  auto valid = validate_header(header, payload_bytes_max_);
  if (!valid) return Err{valid.error()};
  header_ = header;
  skipping_ = !is_known_kind(header.kind);
  in_payload_ = true;
  payload_have_ = 0;
  return {};
}

Result<Decoder::Step, WireError> Decoder::finish_frame(std::span<const std::byte> payload,
                                                       std::size_t consumed) noexcept {
  in_payload_ = false;
  Step step;
  step.consumed = consumed;
  if (skipping_) {
    skipping_ = false;
    frames_skipped_++;
    return step;
  }
  if (checksum64(payload) != header_.payload_checksum) return fail(WireError::bad_payload_checksum);
  step.has_frame = true;
  step.frame.header = header_;
  step.frame.payload = payload;
  return step;
}

Result<Decoder::Step, WireError> Decoder::next(std::span<const std::byte> input) noexcept {
  if (failed()) return Err{error_};
  std::size_t consumed = 0;
  if (!in_payload_) {
    if (header_have_ == 0 && input.size() >= header_bytes) {
      auto accepted = accept_header(input.first<header_bytes>());
      if (!accepted) return fail(accepted.error());
      consumed = header_bytes;
    } else {
      const std::size_t take = std::min<std::size_t>(header_bytes - header_have_, input.size());
      std::memcpy(header_raw_ + header_have_, input.data(), take);
      header_have_ += static_cast<uint32_t>(take);
      consumed = take;
      if (header_have_ < header_bytes) return Step{consumed, false, {}};
      header_have_ = 0;
      auto accepted = accept_header(std::span<const std::byte, header_bytes>(header_raw_, header_bytes));
      if (!accepted) return fail(accepted.error());
    }
    const std::size_t length = header_.payload_length;
    const auto rest = input.subspan(consumed);
    if (rest.size() >= length) {
      // The whole payload is in this input: hand out a view, no copy.
      return finish_frame(rest.first(length), consumed + length);
    }
    if (!skipping_) {
      payload_.clear();
      payload_.reserve(length);  // the validated length, never more than the limit
    }
  }
  // The one copy of the decoder: a payload split across inputs is gathered here so that
  // the frame can be handed out contiguous.
  const std::size_t length = header_.payload_length;
  const auto rest = input.subspan(consumed);
  const std::size_t take = std::min<std::size_t>(length - payload_have_, rest.size());
  if (!skipping_) payload_.insert(payload_.end(), rest.begin(), rest.begin() + static_cast<std::ptrdiff_t>(take));
  payload_have_ += static_cast<uint32_t>(take);
  consumed += take;
  if (payload_have_ < length) return Step{consumed, false, {}};
  return finish_frame(skipping_ ? std::span<const std::byte>() : std::span<const std::byte>(payload_.data(), length),
                      consumed);
}

}  // namespace ringmux::wire
