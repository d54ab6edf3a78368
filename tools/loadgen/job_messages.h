// What a job's messages look like, for both engines' runners: their sizes (bs or a
// bssplit mix), the preamble of a unary request or a stream's OPEN (protocol.h), and what
// a sink answers. Used by the thread that runs the job.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>

#include "tools/loadgen/job.h"
#include "tools/loadgen/protocol.h"
#include "tools/loadgen/result.h"
#include "tools/loadgen/verify.h"

namespace ringmux::loadgen {

// Message sizes of a job: bs, or drawn from bssplit by a generator of its own per stream
// or call source (seeded, so a run is repeatable and the mix holds on every stream).
class SizePicker {
 public:
  SizePicker(const Job& job, uint64_t seed) noexcept : job_(job), state_(seed | 1) {}
  uint32_t next() noexcept {
    if (job_.bssplit.empty()) return job_.bs;
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    uint64_t roll = (state_ * 0x2545f4914f6cdd1dull >> 32) % 100;
    for (const BsSplitEntry& entry : job_.bssplit) {
      if (roll < entry.percent) return entry.bytes;
      roll -= entry.percent;
    }
    return job_.bssplit.back().bytes;
  }
  uint32_t max() const noexcept {
    uint32_t largest = job_.bs;
    for (const BsSplitEntry& entry : job_.bssplit) largest = std::max(largest, entry.bytes);
    return largest;
  }

 private:
  const Job& job_;
  uint64_t state_;
};

inline void add_verify(JobResult& result, const VerifyCounts& counts) {
  result.verified_messages += counts.messages;
  result.verify_mismatches += counts.mismatches;
  result.verify_gaps += counts.gaps;
  result.verify_duplicates += counts.duplicates;
}

// A sink's answer (protocol.h): its byte count and, verified, its verifier's counts.
inline void read_sink_answer(std::span<const std::byte> answer, JobResult& result) {
  uint64_t fields[5] = {};
  std::memcpy(fields, answer.data(), std::min(answer.size(), sizeof(fields)));
  result.server_confirmed_bytes += fields[0];
  if (answer.size() >= sink_answer_verify_bytes) add_verify(result, {fields[1], fields[2], fields[3], fields[4]});
}

// The preamble of a unary request or a stream's OPEN (protocol.h): u32 size, u32 flags
// and, verified, the u64 stream key. Returns its length.
inline std::size_t write_preamble(std::span<std::byte> out, uint32_t size, const Job& job, uint64_t stream_key) {
  const uint32_t flags = job.verify ? flag_verify : 0;
  std::memcpy(out.data(), &size, 4);
  std::memcpy(out.data() + 4, &flags, 4);
  if (!job.verify) return preamble_bytes;
  std::memcpy(out.data() + preamble_bytes, &stream_key, 8);
  return open_verify_bytes;
}

}  // namespace ringmux::loadgen
