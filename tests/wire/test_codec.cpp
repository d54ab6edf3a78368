// The wire format: round trips of every kind, the decoder across every split point, and
// every malformed case named in wire/SPEC.md.
#include "ringmux/wire/codec.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "tests/support.h"
#include "ringmux/wire/checksum.h"

using namespace ringmux;
using namespace ringmux::wire;

namespace {

using Bytes = std::vector<std::byte>;

Bytes bytes_of(std::string_view text) {
  Bytes out(text.size());
  std::memcpy(out.data(), text.data(), text.size());
  return out;
}

// Appends a frame produced by `encode` (given a buffer of `capacity` bytes).
template <typename Encode>
void append(Bytes& stream, std::size_t capacity, Encode encode) {
  Bytes frame(capacity);
  const std::size_t written = encode(std::span<std::byte>(frame));
  REQUIRE(written <= capacity);
  stream.insert(stream.end(), frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(written));
}

// One frame of every kind, with distinctive field values.
Bytes every_kind_stream() {
  Bytes stream;
  Hello hello;
  hello.features = 0x0102030405060708;
  for (int i = 0; i < 16; i++) hello.session_id[i] = static_cast<std::byte>(i + 1);
  hello.generation = 7;
  hello.receive_position = 123456789012;
  hello.hello_flags = hello_flag_resume;
  append(stream, 128, [&](auto out) { return encode_hello(out, hello); });
  HelloAck ack;
  ack.version = 1;
  ack.status = StatusCode::resume_position_gone;
  ack.session_id = hello.session_id;
  ack.generation = 8;
  ack.receive_position = 42;
  append(stream, 128, [&](auto out) { return encode_hello_ack(out, ack); });
  const Bytes request = bytes_of("initial request bytes");
  append(stream, 128, [&](auto out) { return encode_open(out, 1, 0, 77, 5'000'000, request); });
  const Bytes data(3000, std::byte{0xab});
  append(stream, 4096, [&](auto out) { return encode_frame(out, FrameKind::data, flag_end_stream, 1, data); });
  append(stream, 64, [&](auto out) { return encode_end(out, 3); });
  append(stream, 64, [&](auto out) { return encode_reset(out, 5, StatusCode::cancelled); });
  append(stream, 64, [&](auto out) { return encode_stop(out, 7, StatusCode::stream_stopped); });
  append(stream, 64, [&](auto out) { return encode_credit(out, 0, 65536); });
  append(stream, 64, [&](auto out) { return encode_credit(out, 9, 1); });
  append(stream, 64, [&](auto out) { return encode_ping(out, 0xfeedface); });
  append(stream, 64, [&](auto out) { return encode_pong(out, 0xfeedface); });
  append(stream, 64, [&](auto out) { return encode_ack(out, 1ull << 40); });
  append(stream, 128, [&](auto out) { return encode_goaway(out, 99, StatusCode::going_away, "draining"); });
  append(stream, 128, [&](auto out) { return encode_error(out, 11, StatusCode::handler_error, "disk full"); });
  return stream;
}

// Decodes `stream` fed in pieces cut at `cuts` (sorted offsets); collects a fingerprint of
// every frame (kind, stream, flags, payload hash) so split and unsplit runs compare.
struct Decoded {
  std::vector<std::string> frames;
  std::optional<WireError> error;
  bool mid_frame = false;
};

Decoded decode_pieces(const Bytes& stream, const std::vector<std::size_t>& cuts) {
  Decoded decoded;
  Decoder decoder;
  std::size_t start = 0;
  std::vector<std::size_t> ends = cuts;
  ends.push_back(stream.size());
  for (const std::size_t end : ends) {
    std::span<const std::byte> input(stream.data() + start, end - start);
    while (!input.empty()) {
      auto step = decoder.next(input);
      if (!step) {
        decoded.error = step.error();
        return decoded;
      }
      REQUIRE(step->consumed > 0);
      REQUIRE(step->consumed <= input.size());
      if (step->has_frame) {
        const auto& f = step->frame;
        decoded.frames.push_back(std::to_string(f.header.kind) + "/" + std::to_string(f.header.stream_id) + "/" +
                                 std::to_string(f.header.flags) + "/" + std::to_string(f.payload.size()) + "/" +
                                 std::to_string(checksum64(f.payload)));
      }
      input = input.subspan(step->consumed);
    }
    start = end;
  }
  decoded.mid_frame = decoder.mid_frame();
  return decoded;
}

// Decodes one whole encoded frame and returns it (its payload points into `encoded`).
Frame decode_one(const Bytes& encoded) {
  Decoder decoder;
  auto step = decoder.next(encoded);
  REQUIRE(step.ok());
  REQUIRE(step->has_frame);
  REQUIRE(step->consumed == encoded.size());
  return step->frame;
}

// A header with chosen raw fields and a correct header checksum, so that the check under
// test is the one that fires.
Bytes raw_frame(uint32_t length, uint8_t kind, uint8_t flags, uint16_t reserved, uint32_t stream_id,
                const Bytes& payload) {
  Bytes out(header_bytes);
  auto put = [&](std::size_t offset, uint64_t value, int size) {
    for (int i = 0; i < size; i++) out[offset + i] = static_cast<std::byte>(value >> (8 * i));
  };
  put(0, length, 4);
  out[4] = static_cast<std::byte>(kind);
  out[5] = static_cast<std::byte>(flags);
  put(6, reserved, 2);
  put(8, stream_id, 4);
  put(16, checksum64(payload), 8);
  put(12, header_checksum(std::span<const std::byte, 24>(out.data(), 24)), 4);
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

WireError decode_error_of(const Bytes& stream) {
  auto decoded = decode_pieces(stream, {});
  REQUIRE(decoded.error.has_value());
  return *decoded.error;
}

}  // namespace

// Proves every kind survives encode -> decode -> parse with every field intact.
TEST_CASE("wire: every frame kind round-trips") {
  Hello hello;
  hello.version_min = 1;
  hello.version_max = 3;
  hello.features = 0xdeadbeefcafef00d;
  for (int i = 0; i < 16; i++) hello.session_id[i] = static_cast<std::byte>(0xf0 + i);
  hello.generation = 12;
  hello.receive_position = 1ull << 50;
  hello.hello_flags = hello_flag_resume;
  Bytes buffer(256);
  Bytes encoded(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(encode_hello(buffer, hello)));
  CHECK(encoded.size() == header_bytes + hello_payload_bytes);
  auto parsed_hello = parse_hello(decode_one(encoded));
  REQUIRE(parsed_hello.ok());
  CHECK(parsed_hello->version_min == 1);
  CHECK(parsed_hello->version_max == 3);
  CHECK(parsed_hello->features == hello.features);
  CHECK(parsed_hello->session_id == hello.session_id);
  CHECK(parsed_hello->generation == 12);
  CHECK(parsed_hello->receive_position == 1ull << 50);
  CHECK(parsed_hello->hello_flags == hello_flag_resume);
  CHECK(parsed_hello->route_key == 0);  // absent: the 52-byte version 1 HELLO

  // With a route key the HELLO is 8 bytes longer and carries it; a HELLO of a later version
  // with more bytes behind the key still parses (they are ignored).
  hello.route_key = 0x0123456789abcdef;
  encoded.assign(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(encode_hello(buffer, hello)));
  CHECK(encoded.size() == header_bytes + hello_route_payload_bytes);
  auto routed_hello = parse_hello(decode_one(encoded));
  REQUIRE(routed_hello.ok());
  CHECK(routed_hello->route_key == 0x0123456789abcdef);
  CHECK(routed_hello->session_id == hello.session_id);
  Bytes longer(hello_route_payload_bytes + 4, std::byte{0x77});
  std::copy(encoded.begin() + header_bytes, encoded.end(), longer.begin());
  encoded.assign(buffer.begin(),
                 buffer.begin() + static_cast<std::ptrdiff_t>(encode_frame(buffer, FrameKind::hello, 0, 0, longer)));
  auto later_hello = parse_hello(decode_one(encoded));
  REQUIRE(later_hello.ok());
  CHECK(later_hello->route_key == 0x0123456789abcdef);
  hello.route_key = 0;

  HelloAck ack;
  ack.version = 1;
  ack.status = StatusCode::resume_unknown_session;
  ack.features = 5;
  ack.session_id = hello.session_id;
  ack.generation = 13;
  ack.receive_position = 99;
  encoded.assign(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(encode_hello_ack(buffer, ack)));
  auto parsed_ack = parse_hello_ack(decode_one(encoded));
  REQUIRE(parsed_ack.ok());
  CHECK(parsed_ack->version == 1);
  CHECK(parsed_ack->status == StatusCode::resume_unknown_session);
  CHECK(parsed_ack->features == 5);
  CHECK(parsed_ack->session_id == hello.session_id);
  CHECK(parsed_ack->generation == 13);
  CHECK(parsed_ack->receive_position == 99);

  const Bytes request = bytes_of("get block 42");
  encoded.assign(buffer.begin(),
                 buffer.begin() + static_cast<std::ptrdiff_t>(encode_open(buffer, 3, flag_end_stream, 0x1234, 7777, request)));
  const Frame open_frame = decode_one(encoded);
  CHECK(open_frame.header.stream_id == 3);
  CHECK(open_frame.header.end_stream());
  auto open = parse_open(open_frame);
  REQUIRE(open.ok());
  CHECK(open->handler_id == 0x1234);
  CHECK(open->deadline_budget_ns == 7777);
  CHECK(Bytes(open->payload.begin(), open->payload.end()) == request);

  encoded.assign(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(encode_frame(buffer, FrameKind::data, 0, 5, request)));
  const Frame data = decode_one(encoded);
  CHECK(data.header.frame_kind() == FrameKind::data);
  CHECK(!data.header.end_stream());
  CHECK(Bytes(data.payload.begin(), data.payload.end()) == request);

  encoded.assign(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(encode_end(buffer, 5)));
  CHECK(decode_one(encoded).header.frame_kind() == FrameKind::end);
  CHECK(decode_one(encoded).payload.empty());

  encoded.assign(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(encode_reset(buffer, 5, StatusCode::deadline_exceeded)));
  CHECK(parse_reset(decode_one(encoded)).value() == StatusCode::deadline_exceeded);
  encoded.assign(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(encode_stop(buffer, 5, StatusCode::stream_stopped)));
  CHECK(parse_stop(decode_one(encoded)).value() == StatusCode::stream_stopped);
  encoded.assign(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(encode_credit(buffer, 0, 1u << 20)));
  CHECK(parse_credit(decode_one(encoded)).value() == 1u << 20);
  encoded.assign(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(encode_ping(buffer, 0x1122334455667788)));
  CHECK(parse_ping(decode_one(encoded)).value() == 0x1122334455667788);
  encoded.assign(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(encode_pong(buffer, 9)));
  CHECK(decode_one(encoded).header.frame_kind() == FrameKind::pong);
  CHECK(parse_ping(decode_one(encoded)).value() == 9);
  encoded.assign(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(encode_ack(buffer, 0xffffffffffff)));
  CHECK(parse_ack(decode_one(encoded)).value() == 0xffffffffffff);

  encoded.assign(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(encode_goaway(buffer, 41, StatusCode::going_away, "bye")));
  auto goaway = parse_goaway(decode_one(encoded));
  REQUIRE(goaway.ok());
  CHECK(goaway->last_stream_id == 41);
  CHECK(goaway->code == StatusCode::going_away);
  CHECK(goaway->debug == "bye");

  encoded.assign(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(encode_error(buffer, 7, StatusCode::handler_error, "no such key")));
  auto error = parse_error(decode_one(encoded));
  REQUIRE(error.ok());
  CHECK(decode_one(encoded).header.stream_id == 7);
  CHECK(error->status == StatusCode::handler_error);
  CHECK(error->message == "no such key");
}

// Proves the decoder gives the same frames whatever the split: at every single offset,
// one byte at a time, and at random offsets.
TEST_CASE("wire: decoder accepts a stream split at every point") {
  const Bytes stream = every_kind_stream();
  const Decoded whole = decode_pieces(stream, {});
  REQUIRE(!whole.error);
  REQUIRE(whole.frames.size() == 14);
  CHECK(!whole.mid_frame);

  for (std::size_t cut = 1; cut < stream.size(); cut++) {
    const Decoded split = decode_pieces(stream, {cut});
    REQUIRE_MESSAGE(!split.error, "cut at " << cut);
    REQUIRE_MESSAGE(split.frames == whole.frames, "cut at " << cut);
  }

  std::vector<std::size_t> every_byte;
  for (std::size_t cut = 1; cut < stream.size(); cut++) every_byte.push_back(cut);
  const Decoded bytewise = decode_pieces(stream, every_byte);
  CHECK(!bytewise.error);
  CHECK(bytewise.frames == whole.frames);

  const uint64_t seed = test::test_seed("wire random splits");
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 200; round++) {
    std::vector<std::size_t> cuts;
    for (std::size_t at = 0;;) {
      at += 1 + rng() % 700;
      if (at >= stream.size()) break;
      cuts.push_back(at);
    }
    const Decoded split = decode_pieces(stream, cuts);
    REQUIRE(!split.error);
    REQUIRE(split.frames == whole.frames);
  }
}

// Proves a frame that lies whole in the input is handed out without a copy, and that only
// a split frame goes through the decoder's buffer.
TEST_CASE("wire: whole frames are zero-copy views; split frames are reassembled") {
  Bytes buffer(4096);
  const Bytes payload(1000, std::byte{7});
  const std::size_t size = encode_frame(buffer, FrameKind::data, 0, 1, payload);
  buffer.resize(size);
  Decoder decoder;
  auto step = decoder.next(buffer);
  REQUIRE(step.ok());
  REQUIRE(step->has_frame);
  CHECK(step->frame.payload.data() == buffer.data() + header_bytes);
  CHECK(decoder.buffer_capacity() == 0);

  auto first = decoder.next(std::span<const std::byte>(buffer).first(500));
  REQUIRE(first.ok());
  CHECK(!first->has_frame);
  CHECK(decoder.mid_frame());
  auto second = decoder.next(std::span<const std::byte>(buffer).subspan(500));
  REQUIRE(second.ok());
  REQUIRE(second->has_frame);
  CHECK(second->frame.payload.data() != buffer.data() + header_bytes);
  CHECK(Bytes(second->frame.payload.begin(), second->frame.payload.end()) == payload);
  CHECK(!decoder.mid_frame());
}

// Proves a truncated header is "incomplete", not an error: the decoder waits for more.
TEST_CASE("wire: a truncated header waits for more bytes") {
  Bytes buffer(64);
  buffer.resize(encode_ping(buffer, 1));
  Decoder decoder;
  auto step = decoder.next(std::span<const std::byte>(buffer).first(header_bytes / 2));
  REQUIRE(step.ok());
  CHECK(step->consumed == header_bytes / 2);
  CHECK(!step->has_frame);
  CHECK(decoder.mid_frame());
  CHECK(!decoder.failed());
}

// Proves each malformed case of wire/SPEC.md is rejected with its own error.
TEST_CASE("wire: malformed frames are rejected with a specific error") {
  const Bytes four(4, std::byte{1});
  const Bytes eight(8, std::byte{1});

  SUBCASE("bad header checksum") {
    Bytes frame = raw_frame(4, 0x06, 0, 0, 1, four);
    frame[12] ^= std::byte{0x01};
    CHECK(decode_error_of(frame) == WireError::bad_header_checksum);
  }
  SUBCASE("a flipped length bit fails the header checksum, not the length limit") {
    Bytes frame = raw_frame(4, 0x06, 0, 0, 1, four);
    frame[3] ^= std::byte{0x80};
    CHECK(decode_error_of(frame) == WireError::bad_header_checksum);
  }
  SUBCASE("bad payload checksum") {
    Bytes frame = raw_frame(4, 0x06, 0, 0, 1, four);
    frame.back() ^= std::byte{0x40};
    CHECK(decode_error_of(frame) == WireError::bad_payload_checksum);
  }
  SUBCASE("oversized length with a valid header checksum, and no allocation for it") {
    const Bytes frame = raw_frame(limits::frame_payload_bytes_max + 1, 0x04, 0, 0, 1, {});
    Decoder decoder;
    auto step = decoder.next(frame);
    REQUIRE(!step.ok());
    CHECK(step.error() == WireError::payload_too_large);
    CHECK(decoder.buffer_capacity() == 0);
    const Bytes huge = raw_frame(0xffffffff, 0x04, 0, 0, 1, {});
    CHECK(decode_error_of(huge) == WireError::payload_too_large);
  }
  SUBCASE("reserved field not zero") {
    CHECK(decode_error_of(raw_frame(4, 0x06, 0, 1, 1, four)) == WireError::reserved_nonzero);
  }
  SUBCASE("unknown kind without the ignorable bit") {
    CHECK(decode_error_of(raw_frame(0, 0x0e, 0, 0, 0, {})) == WireError::unknown_kind);
    CHECK(decode_error_of(raw_frame(0, 0x00, 0, 0, 0, {})) == WireError::unknown_kind);
    CHECK(decode_error_of(raw_frame(0, 0x7f, 0, 0, 0, {})) == WireError::unknown_kind);
  }
  SUBCASE("flags not defined for the kind") {
    CHECK(decode_error_of(raw_frame(0, 0x04, 0x02, 0, 1, {})) == WireError::bad_flags);
    CHECK(decode_error_of(raw_frame(4, 0x06, flag_end_stream, 0, 1, four)) == WireError::bad_flags);
    CHECK(decode_error_of(raw_frame(8, 0x09, flag_end_stream, 0, 0, eight)) == WireError::bad_flags);
  }
  SUBCASE("stream frames on stream 0") {
    CHECK(decode_error_of(raw_frame(12, 0x03, 0, 0, 0, Bytes(12))) == WireError::stream_id_required);
    CHECK(decode_error_of(raw_frame(0, 0x04, 0, 0, 0, {})) == WireError::stream_id_required);
    CHECK(decode_error_of(raw_frame(0, 0x05, 0, 0, 0, {})) == WireError::stream_id_required);
    CHECK(decode_error_of(raw_frame(4, 0x06, 0, 0, 0, four)) == WireError::stream_id_required);
    CHECK(decode_error_of(raw_frame(4, 0x07, 0, 0, 0, four)) == WireError::stream_id_required);
  }
  SUBCASE("connection frames on a stream") {
    CHECK(decode_error_of(raw_frame(8, 0x09, 0, 0, 3, eight)) == WireError::stream_id_forbidden);
    CHECK(decode_error_of(raw_frame(8, 0x0b, 0, 0, 3, eight)) == WireError::stream_id_forbidden);
    CHECK(decode_error_of(raw_frame(8, 0x0c, 0, 0, 3, eight)) == WireError::stream_id_forbidden);
    CHECK(decode_error_of(raw_frame(52, 0x01, 0, 0, 3, Bytes(52))) == WireError::stream_id_forbidden);
  }
  SUBCASE("payload shorter than the fixed fields") {
    CHECK(decode_error_of(raw_frame(3, 0x06, 0, 0, 1, Bytes(3))) == WireError::payload_truncated);
    CHECK(decode_error_of(raw_frame(7, 0x0b, 0, 0, 0, Bytes(7))) == WireError::payload_truncated);
    CHECK(decode_error_of(raw_frame(11, 0x03, 0, 0, 1, Bytes(11))) == WireError::payload_truncated);
    CHECK(decode_error_of(raw_frame(51, 0x01, 0, 0, 0, Bytes(51))) == WireError::payload_truncated);
    CHECK(decode_error_of(raw_frame(43, 0x02, 0, 0, 0, Bytes(43))) == WireError::payload_truncated);
    CHECK(decode_error_of(raw_frame(7, 0x0c, 0, 0, 0, Bytes(7))) == WireError::payload_truncated);
  }
  SUBCASE("payload longer than a fixed kind allows") {
    CHECK(decode_error_of(raw_frame(1, 0x05, 0, 0, 1, Bytes(1))) == WireError::trailing_bytes);
    CHECK(decode_error_of(raw_frame(5, 0x08, 0, 0, 1, Bytes(5))) == WireError::trailing_bytes);
    CHECK(decode_error_of(raw_frame(9, 0x09, 0, 0, 0, Bytes(9))) == WireError::trailing_bytes);
  }
  SUBCASE("text over the limit and zero credit") {
    const uint32_t too_long = 4 + limits::frame_text_bytes_max + 1;
    CHECK(decode_error_of(raw_frame(too_long, 0x0d, 0, 0, 0, Bytes(too_long))) == WireError::bad_value);
    const Bytes frame = raw_frame(4, 0x08, 0, 0, 0, Bytes(4));  // CREDIT of 0
    auto parsed = parse_credit(decode_one(frame));
    REQUIRE(!parsed.ok());
    CHECK(parsed.error() == WireError::bad_value);
  }
  SUBCASE("HELLO without the magic, and with an empty version range") {
    Bytes payload(52);
    auto hello = parse_hello(decode_one(raw_frame(52, 0x01, 0, 0, 0, payload)));
    REQUIRE(!hello.ok());
    CHECK(hello.error() == WireError::bad_magic);
    Bytes buffer(128);
    Hello offer;
    offer.version_min = 3;
    offer.version_max = 2;
    buffer.resize(encode_hello(buffer, offer));
    auto inverted = parse_hello(decode_one(buffer));
    REQUIRE(!inverted.ok());
    CHECK(inverted.error() == WireError::bad_value);
  }
}

// Proves errors are sticky: after a bad frame the decoder never interprets more bytes.
TEST_CASE("wire: a decoder that failed stays failed") {
  Bytes stream = raw_frame(4, 0x06, 0, 1, 1, Bytes(4));  // reserved != 0
  Bytes good(64);
  good.resize(encode_ping(good, 5));
  Decoder decoder;
  auto first = decoder.next(stream);
  REQUIRE(!first.ok());
  auto second = decoder.next(good);
  REQUIRE(!second.ok());
  CHECK(second.error() == WireError::reserved_nonzero);
  CHECK(decoder.failed());
}

// Proves ignorable unknown kinds are skipped whole, split or not, and decoding goes on.
TEST_CASE("wire: unknown ignorable kinds are skipped") {
  Bytes stream = raw_frame(300, 0x80 | 0x11, 0xff, 0, 9, Bytes(300, std::byte{3}));
  Bytes ping(64);
  ping.resize(encode_ping(ping, 77));
  stream.insert(stream.end(), ping.begin(), ping.end());
  for (const std::vector<std::size_t>& cuts : {std::vector<std::size_t>{}, {10}, {100}, {323}, {330}}) {
    const Decoded decoded = decode_pieces(stream, cuts);
    REQUIRE(!decoded.error);
    REQUIRE(decoded.frames.size() == 1);
    CHECK(decoded.frames[0].rfind("9/0/", 0) == 0);  // the PING (kind 9, stream 0)
  }
  Decoder decoder;
  auto step = decoder.next(stream);
  REQUIRE(step.ok());
  CHECK(!step->has_frame);
  CHECK(decoder.frames_skipped() == 1);
}

// Proves the frame limit is enforced on the way out too and that a maximal frame decodes.
TEST_CASE("wire: a frame of the maximum payload round-trips split in two") {
  const Bytes payload(limits::frame_payload_bytes_max, std::byte{0x5c});
  Bytes buffer(frame_bytes(payload.size()));
  CHECK(encode_frame(buffer, FrameKind::data, 0, 1, payload) == limits::frame_payload_bytes_max + header_bytes);
  const Decoded decoded = decode_pieces(buffer, {buffer.size() / 2});
  REQUIRE(!decoded.error);
  CHECK(decoded.frames.size() == 1);
  Decoder decoder;
  (void)decoder.next(std::span<const std::byte>(buffer).first(100));
  CHECK(decoder.buffer_capacity() <= limits::frame_payload_bytes_max);
}

// Proves status codes map from the wire, unknown codes becoming internal_error, and that
// the position space is as SPEC.md section 8 lists.
TEST_CASE("wire: status codes and position space") {
  CHECK(status_from_wire(3) == StatusCode::refused_stream);
  CHECK(status_from_wire(16) == StatusCode::version_unsupported);
  CHECK(status_from_wire(17) == StatusCode::resume_unauthenticated);
  CHECK(status_from_wire(18) == StatusCode::internal_error);
  CHECK(status_from_wire(0xffffffff) == StatusCode::internal_error);
  CHECK(in_position_space(FrameKind::data));
  CHECK(in_position_space(FrameKind::credit));
  CHECK(!in_position_space(FrameKind::ack));
  CHECK(!in_position_space(FrameKind::ping));
  CHECK(!in_position_space(FrameKind::hello));
  const std::error_code code = WireError::bad_payload_checksum;
  CHECK(std::string(code.category().name()) == "ringmux.wire");
  CHECK(code.message() == "frame payload checksum mismatch");
}
