// End-to-end payload verification of ringmux-loadgen (verify=1), both engines.
//
// Every message of a verified stream or call carries a 32-byte stamp at its start:
//   u32 magic "RMVF" | u32 message_bytes (stamp included) | u64 sequence | u64 stream_key
//   | u64 digest
// followed by a body of pseudo-random bytes generated from (stream_key, sequence), any part
// of which can be generated on its own (fill_message_body). The digest is XXH3-64 of the
// stamp's first 24 bytes and the body, so a flipped bit anywhere in the message is a
// mismatch. Sequences start at 0 on every stream and go up by one per
// message: a sequence above the expected one counts the skipped messages as gaps, one
// below it counts a duplicate. The stamp's length makes messages self-delimiting, so the
// verifier needs no message boundaries from the transport (bssplit mixes sizes).
//
// The verifier sees the byte stream exactly as the application did: it tells whether the
// transport (and replay, after a resume) delivered every byte once, in order, unchanged.
// Pure code, no I/O; one instance per stream, used by one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace ringmux::loadgen {

inline constexpr uint32_t verify_magic = 0x46564d52;  // "RMVF" little-endian
inline constexpr uint32_t verify_stamp_bytes = 32;

// Writes a stamped message of out.size() bytes (>= verify_stamp_bytes) for `sequence`.
void stamp_message(std::span<std::byte> out, uint64_t stream_key, uint64_t sequence) noexcept;
// Writes bytes [body_offset, body_offset + out.size()) of the body (what follows the stamp)
// of message `sequence` of `stream_key`: the same bytes stamp_message writes there, for a
// writer that rebuilds a piece of a message without the rest.
void fill_message_body(std::span<std::byte> out, uint64_t stream_key, uint64_t sequence, std::size_t body_offset) noexcept;

// What one verified direction found.
struct VerifyCounts {
  uint64_t messages = 0;    // messages whose digest matched (in order or not)
  uint64_t mismatches = 0;  // messages whose stamp or body was damaged
  uint64_t gaps = 0;        // messages skipped: a later sequence arrived first
  uint64_t duplicates = 0;  // messages that arrived again (sequence already seen)
  void add(const VerifyCounts& other) noexcept {
    messages += other.messages;
    mismatches += other.mismatches;
    gaps += other.gaps;
    duplicates += other.duplicates;
  }
  uint64_t errors() const noexcept { return mismatches + gaps + duplicates; }
};

// Checks one whole message that must carry `expected_sequence` (a unary request or
// response). Returns true when it is intact; counts into `counts`.
bool verify_message(std::span<const std::byte> message, uint64_t stream_key, uint64_t expected_sequence,
                    VerifyCounts& counts) noexcept;

// True when `message` is a stamped message whose digest matches (any key, any sequence):
// what a server can check without knowing the client's sequence.
bool message_intact(std::span<const std::byte> message) noexcept;
// The stream key and sequence of a message (meaningful when it is intact).
uint64_t message_stream_key(std::span<const std::byte> message) noexcept;
uint64_t message_sequence(std::span<const std::byte> message) noexcept;

// Reassembles and checks the messages of one stream from its bytes, split anywhere.
// A stamp whose magic or length is damaged loses the message boundaries: it counts one
// mismatch and the rest of the stream is not checked (lost_sync() says so).
class StreamVerifier {
 public:
  // `reassembly_bytes_max` bounds the reassembly buffer whatever a damaged length claims.
  StreamVerifier(uint64_t stream_key, uint32_t reassembly_bytes_max) noexcept
      : stream_key_(stream_key), message_bytes_max_(reassembly_bytes_max) {}

  void feed(std::span<const std::byte> bytes) noexcept;
  // The stream ended: a partial message left over is a gap.
  void finish() noexcept;
  const VerifyCounts& counts() const noexcept { return counts_; }
  bool lost_sync() const noexcept { return lost_sync_; }

 private:
  void check(std::span<const std::byte> message) noexcept;

  uint64_t stream_key_;
  uint32_t message_bytes_max_;
  uint64_t expected_sequence_ = 0;
  std::vector<std::byte> partial_;  // Copy: a message split across deliveries
  uint32_t message_bytes_ = 0;      // length of the message in partial_, once its stamp is in
  VerifyCounts counts_;
  bool lost_sync_ = false;
};

// A per-stream key: unique per (job, stream) so that bytes delivered to the wrong stream
// are mismatches, not silently accepted.
inline uint64_t verify_stream_key(uint64_t job_index, uint64_t stream_index) noexcept {
  return (job_index + 1) * 0x9e3779b97f4a7c15ull ^ (stream_index + 1) * 0xc2b2ae3d27d4eb4full;
}

}  // namespace ringmux::loadgen
