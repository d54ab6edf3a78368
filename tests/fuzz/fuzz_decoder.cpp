// libFuzzer target: the wire decoder and the typed payload parsers on arbitrary bytes.
//
// The first input byte picks how the rest is split into feeds (so the fuzzer explores
// split points too). Checked on every input: the decoder never reads past what it was
// given, never hands out a frame over the limit, never buffers more than the limit, stays
// failed once failed, and every frame it accepts re-encodes to bytes that decode to the
// same frame. Run: build-fuzz/tests/fuzz/fuzz_decoder tests/fuzz/corpus/decoder
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "ringmux/base/assert.h"
#include "ringmux/wire/checksum.h"
#include "ringmux/wire/codec.h"

using namespace ringmux;
using namespace ringmux::wire;

namespace {

void parse_typed(const Frame& frame) {
  switch (frame.header.frame_kind()) {
    case FrameKind::hello: (void)parse_hello(frame); break;
    case FrameKind::hello_ack: (void)parse_hello_ack(frame); break;
    case FrameKind::open: (void)parse_open(frame); break;
    case FrameKind::data:
    case FrameKind::end:
      break;
    case FrameKind::reset: (void)parse_reset(frame); break;
    case FrameKind::stop: (void)parse_stop(frame); break;
    case FrameKind::credit: (void)parse_credit(frame); break;
    case FrameKind::ping:
    case FrameKind::pong:
      (void)parse_ping(frame);
      break;
    case FrameKind::ack: (void)parse_ack(frame); break;
    case FrameKind::goaway: (void)parse_goaway(frame); break;
    case FrameKind::error: (void)parse_error(frame); break;
  }
}

// Re-encodes an accepted frame and checks it decodes to the same header and payload.
void check_reencode(const Frame& frame) {
  std::vector<std::byte> buffer(frame_bytes(frame.payload.size()));
  encode_frame(buffer, frame.header.frame_kind(), frame.header.flags, frame.header.stream_id, frame.payload);
  Decoder again;
  auto step = again.next(buffer);
  RM_ASSERT(step.ok());
  RM_ASSERT(step->has_frame);
  RM_ASSERT(step->consumed == buffer.size());
  RM_ASSERT(step->frame.header.kind == frame.header.kind);
  RM_ASSERT(step->frame.header.flags == frame.header.flags);
  RM_ASSERT(step->frame.header.stream_id == frame.header.stream_id);
  RM_ASSERT(step->frame.payload.size() == frame.payload.size());
  RM_ASSERT(frame.payload.empty() || std::memcmp(step->frame.payload.data(), frame.payload.data(), frame.payload.size()) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::size_t piece_bytes = 1 + data[0] % 64;  // feed size; 64 means "all at once" below
  std::span<const std::byte> input(reinterpret_cast<const std::byte*>(data + 1), size - 1);
  Decoder decoder;
  bool failed = false;
  while (!input.empty()) {
    const std::size_t feed_bytes = piece_bytes == 64 ? input.size() : std::min(piece_bytes, input.size());
    std::span<const std::byte> feed = input.first(feed_bytes);
    input = input.subspan(feed_bytes);
    while (!feed.empty()) {
      auto step = decoder.next(feed);
      if (!step) {
        RM_ASSERT(decoder.failed());
        RM_ASSERT(!decoder.next(feed).ok());  // sticky
        failed = true;
        break;
      }
      RM_ASSERT(step->consumed > 0 && step->consumed <= feed.size());
      RM_ASSERT(decoder.buffer_capacity() <= limits::frame_payload_bytes_max);
      if (step->has_frame) {
        RM_ASSERT(step->frame.payload.size() == step->frame.header.payload_length);
        RM_ASSERT(step->frame.payload.size() <= limits::frame_payload_bytes_max);
        RM_ASSERT(checksum64(step->frame.payload) == step->frame.header.payload_checksum);
        parse_typed(step->frame);
        check_reencode(step->frame);
      }
      feed = feed.subspan(step->consumed);
    }
    if (failed) break;
  }
  return 0;
}
