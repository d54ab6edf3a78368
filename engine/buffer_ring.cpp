#include "ringmux/engine/buffer_ring.h"

#include <sys/mman.h>

#include "ringmux/base/assert.h"
#include "ringmux/base/memory.h"

namespace ringmux::engine {

BufferRing::BufferRing(io_uring& ring, uint16_t group_id, uint32_t count, uint32_t buffer_bytes) noexcept
    : ring_(ring), group_id_(group_id), count_(count), buffer_bytes_(buffer_bytes) {}

Result<std::unique_ptr<BufferRing>, IoError> BufferRing::create(io_uring& ring, uint16_t group_id,
                                                                uint32_t count, uint32_t buffer_bytes) {
  RM_ASSERT(count > 0 && count <= 32768 && (count & (count - 1)) == 0);
  RM_ASSERT(buffer_bytes > 0);
  std::unique_ptr<BufferRing> self(new BufferRing(ring, group_id, count, buffer_bytes));

  // The ring of io_uring_buf entries must be page aligned: mmap gives that.
  self->entries_bytes_ = count * sizeof(io_uring_buf);
  void* mapped = mmap(nullptr, self->entries_bytes_, PROT_READ | PROT_WRITE,
                      MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (mapped == MAP_FAILED) return Err{IoError::no_memory};
  self->entries_ = static_cast<io_uring_buf_ring*>(mapped);
  io_uring_buf_ring_init(self->entries_);

  self->buffers_ = static_cast<std::byte*>(large_alloc(std::size_t{count} * buffer_bytes, 4096));
  if (self->buffers_ == nullptr) return Err{IoError::no_memory};

  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uint64_t>(self->entries_);
  reg.ring_entries = count;
  reg.bgid = group_id;
  // The raw IORING_REGISTER_PBUF_RING call (liburing's wrapper adds nothing but the fd).
  const int rc = io_uring_register_buf_ring(&ring, &reg, 0);
  if (rc < 0) {
    return Err{rc == -EINVAL ? IoError::not_supported : io_error_from_errno(-rc)};
  }
  self->registered_ = true;

  const int mask = io_uring_buf_ring_mask(count);
  for (uint32_t id = 0; id < count; id++) {
    io_uring_buf_ring_add(self->entries_, self->buffers_ + std::size_t{id} * buffer_bytes, buffer_bytes,
                          static_cast<uint16_t>(id), mask, static_cast<int>(id));
  }
  io_uring_buf_ring_advance(self->entries_, static_cast<int>(count));
  return self;
}

BufferRing::~BufferRing() {
  // Held buffers would be handed back after the ring is gone: a use after free.
  RM_ASSERT(held_ == 0);
  if (registered_) io_uring_unregister_buf_ring(&ring_, group_id_);
  if (buffers_ != nullptr) large_free(buffers_);
  if (entries_ != nullptr) munmap(entries_, entries_bytes_);
}

std::span<const std::byte> BufferRing::take(uint16_t id, uint32_t length) noexcept {
  RM_ASSERT(id < count_);
  RM_ASSERT(length <= buffer_bytes_);
  held_++;
  return {buffers_ + std::size_t{id} * buffer_bytes_, length};
}

void BufferRing::recycle(uint16_t id) noexcept {
  RM_ASSERT(id < count_);
  RM_ASSERT(held_ > 0);
  held_--;
  io_uring_buf_ring_add(entries_, buffers_ + std::size_t{id} * buffer_bytes_, buffer_bytes_, id,
                        io_uring_buf_ring_mask(count_), 0);
  io_uring_buf_ring_advance(entries_, 1);
}

}  // namespace ringmux::engine
