#include "tools/loadgen/message_buffer.h"

#include <algorithm>

#include "ringmux/base/assert.h"
#include "ringmux/base/limits.h"
#include "tools/loadgen/verify.h"

namespace ringmux::loadgen {

namespace {

// A rebuilt piece: a stream's share of one send batch while other streams write too, the
// most one write of an interleaved stream takes. Building more would be thrown away when
// the next stream's message displaces it.
constexpr std::size_t piece_bytes_max = limits::stream_batch_bytes_max;

}  // namespace

std::span<std::byte> MessageBuffer::reserve(uint32_t bytes) {
  // Handlers refuse larger asks before they get here (protocol.h).
  RM_ASSERT(bytes <= bytes_max_);
  // Grown, not replaced: the bytes held stay intact.
  if (bytes_.size() < bytes) bytes_.resize(bytes, std::byte{0x5a});
  return std::span<std::byte>(bytes_).first(bytes);
}

std::span<const std::byte> MessageBuffer::plain(uint32_t bytes) { return reserve(bytes); }

std::shared_ptr<const std::vector<std::byte>> MessageBuffer::shared_plain(uint32_t bytes) {
  RM_ASSERT(bytes <= bytes_max_);
  if (filler_ == nullptr || filler_->size() < bytes) {
    filler_ = std::make_shared<const std::vector<std::byte>>(bytes, std::byte{0x5a});
  }
  return filler_;
}

std::span<const std::byte> MessageBuffer::stamped_from(uint32_t bytes, uint64_t stream_key, uint64_t sequence,
                                                       std::size_t offset) {
  RM_ASSERT(bytes >= verify_stamp_bytes && offset < bytes);
  const bool same = held_ && stream_key_ == stream_key && sequence_ == sequence && message_bytes_ == bytes;
  if (same && offset >= held_from_ && offset < held_to_) {
    return std::span<const std::byte>(bytes_).subspan(offset - held_from_, held_to_ - offset);
  }
  stream_key_ = stream_key;
  sequence_ = sequence;
  message_bytes_ = bytes;
  held_ = true;
  if (offset < verify_stamp_bytes) {
    // The stamp carries the digest of the whole message: built whole.
    const std::span<std::byte> message = reserve(bytes);
    stamp_message(message, stream_key, sequence);
    stamps_++;
    held_from_ = 0;
    held_to_ = bytes;
    return message.subspan(offset);
  }
  // Past the stamp: only the piece written next.
  const std::size_t piece_bytes = std::min<std::size_t>(bytes - offset, piece_bytes_max);
  const std::span<std::byte> piece = reserve(static_cast<uint32_t>(piece_bytes));
  fill_message_body(piece, stream_key, sequence, offset - verify_stamp_bytes);
  pieces_++;
  held_from_ = offset;
  held_to_ = offset + piece_bytes;
  return piece;
}

}  // namespace ringmux::loadgen
