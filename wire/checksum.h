// Checksums of the wire format: XXH3-64 everywhere (wire/SPEC.md, "Integrity").
// Pure functions: callable from any thread.
#pragma once

#include <cstdint>
#include <span>

namespace ringmux::wire {

// XXH3-64 of `bytes` (seed 0).
uint64_t checksum64(std::span<const std::byte> bytes) noexcept;

// The header checksum: low 32 bits of XXH3-64 over the 24 header bytes with bytes
// 12..15 (the checksum field itself) taken as zero.
uint32_t header_checksum(std::span<const std::byte, 24> header) noexcept;

}  // namespace ringmux::wire
