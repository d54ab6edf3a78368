// BufferRing: a provided-buffer ring (IORING_REGISTER_PBUF_RING) that multishot receives
// of one loop pick their buffers from.
//
// Debian's liburing 2.3 has no io_uring_setup_buf_ring, so this is the shim: the ring
// memory is mapped here, registered with the raw registration call, and filled with
// buffers carved from one block allocated at setup. The kernel takes buffers from the
// head; the loop gives each one back (recycle) as soon as its CQE has been handled.
// Invariant: every buffer id is either in the ring (kernel side) or held by exactly one
// CQE being handled; `held_` counts the latter. Loop thread only.
#pragma once

#include <liburing.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "ringmux/engine/errors.h"
#include "ringmux/base/result.h"

namespace ringmux::engine {

class BufferRing {
 public:
  // Maps, registers and fills a ring of `count` buffers of `buffer_bytes` each under
  // buffer group `group_id`. `count` is a power of two <= 32768. Errors: no_memory,
  // not_supported (kernel without provided-buffer rings), other.
  static Result<std::unique_ptr<BufferRing>, IoError> create(io_uring& ring, uint16_t group_id,
                                                             uint32_t count, uint32_t buffer_bytes);
  ~BufferRing();
  BufferRing(const BufferRing&) = delete;
  BufferRing& operator=(const BufferRing&) = delete;

  uint16_t group_id() const noexcept { return group_id_; }
  uint32_t buffer_bytes() const noexcept { return buffer_bytes_; }
  uint32_t count() const noexcept { return count_; }

  // The first `length` bytes of buffer `id`, which a CQE just handed to the loop.
  std::span<const std::byte> take(uint16_t id, uint32_t length) noexcept;
  // Hands buffer `id` back to the kernel. Every take() is followed by exactly one recycle().
  void recycle(uint16_t id) noexcept;

 private:
  BufferRing(io_uring& ring, uint16_t group_id, uint32_t count, uint32_t buffer_bytes) noexcept;

  io_uring& ring_;
  uint16_t group_id_;
  uint32_t count_;
  uint32_t buffer_bytes_;
  io_uring_buf_ring* entries_ = nullptr;  // mmap'ed, shared with the kernel
  std::size_t entries_bytes_ = 0;
  std::byte* buffers_ = nullptr;  // count_ * buffer_bytes_, one block
  uint32_t held_ = 0;
  bool registered_ = false;
};

}  // namespace ringmux::engine
