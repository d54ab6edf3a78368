#include "tools/loadgen/pacer.h"

#include <algorithm>

#include "ringmux/base/assert.h"

namespace ringmux::loadgen {

Pacer::Pacer(uint64_t rate_per_second, uint64_t start_ns, uint64_t until_ns, uint32_t backlog_max)
    : interval_ns_(std::max<uint64_t>(1, 1'000'000'000ull / std::max<uint64_t>(rate_per_second, 1))),
      start_ns_(start_ns),
      until_ns_(until_ns),
      backlog_max_(backlog_max) {
  RM_ASSERT(rate_per_second > 0 && backlog_max > 0);
}

void Pacer::push(uint64_t due) noexcept {
  if (count_ == ring_.size()) {
    // Grows by doubling up to the bound: a job that keeps up never holds more than a few.
    std::vector<uint64_t> grown(std::min<std::size_t>(std::max<std::size_t>(64, 2 * ring_.size()), backlog_max_));
    for (std::size_t i = 0; i < count_; i++) grown[i] = ring_[(head_ + i) % ring_.size()];
    ring_.swap(grown);
    head_ = 0;
  }
  ring_[(head_ + count_) % ring_.size()] = due;
  count_++;
}

void Pacer::admit(uint64_t now_ns) noexcept {
  if (stopped_ || now_ns < start_ns_ || until_ns_ <= start_ns_) return;
  const uint64_t limit_ns = std::min(now_ns, until_ns_ - 1);  // nothing falls due at or after the end
  const uint64_t last_k = (limit_ns - start_ns_) / interval_ns_;
  if (last_k < next_k_) return;
  const uint64_t fallen = last_k + 1 - next_k_;
  // Admitted while there is room (at most backlog_max_ per call); the rest are dropped at
  // once, counted without a loop however long the caller was away.
  const uint64_t admitted = std::min<uint64_t>(fallen, backlog_max_ - count_);
  for (uint64_t i = 0; i < admitted; i++) push(due_ns(next_k_ + i));
  dropped_ += fallen - admitted;
  next_k_ = last_k + 1;
  check_invariant();
}

std::optional<uint64_t> Pacer::take(uint64_t now_ns) noexcept {
  admit(now_ns);
  if (over(now_ns)) {
    stop(now_ns);
    return std::nullopt;
  }
  if (count_ == 0) return std::nullopt;
  const uint64_t due = ring_[head_];
  head_ = (head_ + 1) % ring_.size();
  count_--;
  started_++;
  RM_ASSERT(due <= now_ns);
  return due;
}

uint64_t Pacer::wake_ns() const noexcept {
  if (stopped_) return UINT64_MAX;
  return std::min(due_ns(next_k_), until_ns_);
}

void Pacer::stop(uint64_t now_ns) noexcept {
  if (stopped_) return;
  admit(now_ns);
  dropped_ += count_;
  count_ = 0;
  stopped_ = true;
  check_invariant();
}

void Pacer::check_invariant() const noexcept {
  RM_ASSERT(started_ + dropped_ + count_ == next_k_);
  RM_ASSERT(count_ <= backlog_max_ && count_ <= ring_.size());
  RM_DEBUG_ASSERT(count_ == 0 || ring_[(head_ + count_ - 1) % ring_.size()] < due_ns(next_k_));
}

}  // namespace ringmux::loadgen
