#include "tools/loadgen/verify.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>

namespace ringmux::loadgen {

namespace {

uint32_t load_u32(const std::byte* p) noexcept {
  uint32_t value;
  std::memcpy(&value, p, sizeof(value));
  return value;
}
uint64_t load_u64(const std::byte* p) noexcept {
  uint64_t value;
  std::memcpy(&value, p, sizeof(value));
  return value;
}

// Digest of a message: the stamp's fields seed the hash of the body.
uint64_t digest(std::span<const std::byte> message) noexcept {
  const uint64_t seed = XXH3_64bits(message.data(), 24);
  return XXH3_64bits_withSeed(message.data() + verify_stamp_bytes, message.size() - verify_stamp_bytes, seed);
}

}  // namespace

namespace {

// Word `index` of the body of the message whose seed is `seed`: splitmix64 of a counter, so
// that any part of a body can be generated on its own (a server writing a message in pieces
// rebuilds only the piece it writes).
uint64_t body_word(uint64_t seed, uint64_t index) noexcept {
  uint64_t z = seed + (index + 1) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

void fill_message_body(std::span<std::byte> out, uint64_t stream_key, uint64_t sequence, std::size_t body_offset) noexcept {
  // No two messages of a run look alike: the seed mixes the key and the sequence.
  const uint64_t seed = stream_key ^ (sequence * 0xc2b2ae3d27d4eb4full);
  std::size_t at = 0;
  uint64_t index = body_offset / 8;
  std::size_t skip = body_offset % 8;  // a piece may start inside a word
  while (at < out.size()) {
    const uint64_t word = body_word(seed, index++);
    const std::size_t n = std::min<std::size_t>(8 - skip, out.size() - at);
    std::memcpy(out.data() + at, reinterpret_cast<const std::byte*>(&word) + skip, n);
    at += n;
    skip = 0;
  }
}

void stamp_message(std::span<std::byte> out, uint64_t stream_key, uint64_t sequence) noexcept {
  const uint32_t magic = verify_magic;
  const auto message_bytes = static_cast<uint32_t>(out.size());
  std::memcpy(out.data(), &magic, 4);
  std::memcpy(out.data() + 4, &message_bytes, 4);
  std::memcpy(out.data() + 8, &sequence, 8);
  std::memcpy(out.data() + 16, &stream_key, 8);
  fill_message_body(out.subspan(verify_stamp_bytes), stream_key, sequence, 0);
  const uint64_t d = digest(out);
  std::memcpy(out.data() + 24, &d, 8);
}

bool verify_message(std::span<const std::byte> message, uint64_t stream_key, uint64_t expected_sequence,
                    VerifyCounts& counts) noexcept {
  if (!message_intact(message) || message_stream_key(message) != stream_key) {
    counts.mismatches++;
    return false;
  }
  const uint64_t sequence = message_sequence(message);
  if (sequence > expected_sequence) {
    counts.gaps += sequence - expected_sequence;
  } else if (sequence < expected_sequence) {
    counts.duplicates++;
  }
  counts.messages++;
  return sequence == expected_sequence;
}

bool message_intact(std::span<const std::byte> message) noexcept {
  return message.size() >= verify_stamp_bytes && load_u32(message.data()) == verify_magic &&
         load_u32(message.data() + 4) == message.size() && load_u64(message.data() + 24) == digest(message);
}

uint64_t message_stream_key(std::span<const std::byte> message) noexcept {
  return message.size() >= verify_stamp_bytes ? load_u64(message.data() + 16) : 0;
}

uint64_t message_sequence(std::span<const std::byte> message) noexcept {
  return message.size() >= verify_stamp_bytes ? load_u64(message.data() + 8) : 0;
}

void StreamVerifier::check(std::span<const std::byte> message) noexcept {
  const uint64_t sequence = message_sequence(message);
  const uint64_t before = counts_.mismatches;
  (void)verify_message(message, stream_key_, expected_sequence_, counts_);
  // A damaged message says nothing reliable about its sequence: expect the next one.
  expected_sequence_ = counts_.mismatches != before ? expected_sequence_ + 1 : std::max(expected_sequence_, sequence + 1);
}

void StreamVerifier::feed(std::span<const std::byte> bytes) noexcept {
  while (!bytes.empty() && !lost_sync_) {
    // Whole messages straight from the delivered bytes when nothing is pending: no copy.
    if (partial_.empty() && bytes.size() >= verify_stamp_bytes) {
      const uint32_t length = load_u32(bytes.data() + 4);
      if (load_u32(bytes.data()) != verify_magic || length < verify_stamp_bytes || length > message_bytes_max_) {
        counts_.mismatches++;
        lost_sync_ = true;
        return;
      }
      if (bytes.size() >= length) {
        check(bytes.first(length));
        bytes = bytes.subspan(length);
        continue;
      }
    }
    // Copy: the start of a message whose end is in a later delivery.
    const std::size_t want = message_bytes_ == 0 ? verify_stamp_bytes : message_bytes_;
    const std::size_t take = std::min(bytes.size(), want - partial_.size());
    partial_.insert(partial_.end(), bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(take));
    bytes = bytes.subspan(take);
    if (partial_.size() < want) return;
    if (message_bytes_ == 0) {
      const uint32_t length = load_u32(partial_.data() + 4);
      if (load_u32(partial_.data()) != verify_magic || length < verify_stamp_bytes || length > message_bytes_max_) {
        counts_.mismatches++;
        lost_sync_ = true;
        return;
      }
      message_bytes_ = length;
      if (partial_.size() < message_bytes_) continue;
    }
    check(partial_);
    partial_.clear();
    message_bytes_ = 0;
  }
}

void StreamVerifier::finish() noexcept {
  if (!partial_.empty() && !lost_sync_) counts_.gaps++;
  partial_.clear();
  message_bytes_ = 0;
}

}  // namespace ringmux::loadgen
