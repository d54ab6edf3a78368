#include "ringmux/wire/checksum.h"

#include <xxhash.h>

#include <cstring>

namespace ringmux::wire {

uint64_t checksum64(std::span<const std::byte> bytes) noexcept {
  return XXH3_64bits(bytes.data(), bytes.size());
}

uint32_t header_checksum(std::span<const std::byte, 24> header) noexcept {
  std::byte copy[24];
  std::memcpy(copy, header.data(), sizeof(copy));
  std::memset(copy + 12, 0, 4);
  return static_cast<uint32_t>(XXH3_64bits(copy, sizeof(copy)));
}

}  // namespace ringmux::wire
