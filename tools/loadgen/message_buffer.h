// MessageBuffer: where one server loop builds the messages its clients ask for (unary
// responses, source streams' messages) before a write copies them into a send batch.
//
// Connection::write and Responder::reply copy what they take, so nothing points into the
// buffer once the call returns and every stream of the loop can share it: however many
// clients ask, a loop holds one message of at most bytes_max (ringmux-serve --max_message),
// grown on demand. A stamped message (verify.h) depends only on (stream key, sequence,
// size): the buffer remembers which bytes of which message it holds. A stream that comes
// back to a message whose bytes another stream's write displaced gets the piece it writes
// next rebuilt on its own (the stamp, with its digest of the whole message, went first).
// Invariant: when held_, bytes_ holds bytes [held_from_, held_to_) of message
// (stream_key_, sequence_, message_bytes_) at its start. Loop thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace ringmux::loadgen {

class MessageBuffer {
 public:
  explicit MessageBuffer(uint32_t bytes_max) noexcept : bytes_max_(bytes_max) {}

  uint32_t bytes_max() const noexcept { return bytes_max_; }
  // `bytes` (<= bytes_max) of filler: what an unverified message carries does not matter.
  std::span<const std::byte> plain(uint32_t bytes);
  // Filler of at least `bytes` (<= bytes_max) that the caller may hold past the call: an
  // unverified unary response goes out with Responder::reply(response, keep_alive), held by
  // reference until sent instead of copied per call (a larger ask replaces the filler; the
  // old one lives while responses hold it).
  std::shared_ptr<const std::vector<std::byte>> shared_plain(uint32_t bytes);
  // Message `sequence` of the stream `stream_key`, `bytes` long (verify_stamp_bytes to
  // bytes_max), whole and stamped.
  std::span<const std::byte> stamped(uint32_t bytes, uint64_t stream_key, uint64_t sequence) {
    return stamped_from(bytes, stream_key, sequence, 0);
  }
  // The same message from byte `offset` on: its whole rest while the buffer holds it, else
  // (another message was built since) the next piece of it, at least one byte.
  std::span<const std::byte> stamped_from(uint32_t bytes, uint64_t stream_key, uint64_t sequence, std::size_t offset);
  // Whole messages stamped, and pieces rebuilt (a test checks what an interleaving costs).
  uint64_t stamps() const noexcept { return stamps_; }
  uint64_t pieces() const noexcept { return pieces_; }

 private:
  std::span<std::byte> reserve(uint32_t bytes);

  uint32_t bytes_max_;
  std::vector<std::byte> bytes_;
  std::shared_ptr<const std::vector<std::byte>> filler_;
  uint64_t stream_key_ = 0;
  uint64_t sequence_ = 0;
  uint32_t message_bytes_ = 0;
  std::size_t held_from_ = 0;
  std::size_t held_to_ = 0;
  bool held_ = false;
  uint64_t stamps_ = 0;
  uint64_t pieces_ = 0;
};

}  // namespace ringmux::loadgen
