#include "tools/loadgen/result.h"

#include <sys/resource.h>

#include <chrono>
#include <cmath>

#include "ringmux/base/assert.h"
#include "ringmux/engine/loop.h"
#include "tools/loadgen/logs.h"

namespace ringmux::loadgen {

RateWindow& RateSeries::at(uint64_t now) {
  RM_ASSERT(enabled());
  if (!windows_.empty() && now >= current_from_ns_ && now < current_until_ns_) return windows_[current_];
  const uint64_t since = now > from_ns_ ? now - from_ns_ : 0;
  const std::size_t index = static_cast<std::size_t>(std::min<uint64_t>(since / window_ns_, rate_windows_max - 1));
  if (index >= windows_.size()) windows_.resize(index + 1);
  current_ = index;
  current_from_ns_ = from_ns_ + index * window_ns_;
  current_until_ns_ = index + 1 == rate_windows_max ? UINT64_MAX : current_from_ns_ + window_ns_;
  return windows_[index];
}

void RateSeries::merge(const RateSeries& other) {
  if (!other.enabled()) return;
  if (!enabled()) {
    *this = other;
    return;
  }
  RM_ASSERT(other.window_ns_ == window_ns_);
  if (other.windows_.size() > windows_.size()) windows_.resize(other.windows_.size());
  for (std::size_t i = 0; i < other.windows_.size(); i++) {
    RateWindow& mine = windows_[i];
    const RateWindow& theirs = other.windows_[i];
    for (std::size_t d = 0; d < direction_count; d++) mine.bytes[d] += theirs.bytes[d];
    mine.ops += theirs.ops;
    mine.latency_sum_ns += theirs.latency_sum_ns;
    mine.latency_count += theirs.latency_count;
  }
  current_until_ns_ = 0;  // at() looks the window up again
}

RateStats rate_stats(const RateSeries& series, Direction direction, bool bytes, uint64_t until_ns) {
  RateStats stats;
  if (!series.enabled() || until_ns <= series.from_ns()) return stats;
  const uint64_t span_ns = until_ns - series.from_ns();
  const uint64_t whole = span_ns / series.window_ns();
  // Every whole window, or the one partial window of a run shorter than a window.
  const uint64_t taken = whole > 0 ? whole : 1;
  const double seconds = static_cast<double>(whole > 0 ? series.window_ns() : span_ns) / 1e9;
  long double sum = 0, squares = 0;
  for (uint64_t i = 0; i < taken; i++) {
    const RateWindow window = i < series.windows().size() ? series.windows()[i] : RateWindow{};
    const double value =
        static_cast<double>(bytes ? window.bytes[static_cast<std::size_t>(direction)] : window.ops) / seconds;
    stats.min = i == 0 ? value : std::min(stats.min, value);
    stats.max = std::max(stats.max, value);
    sum += value;
    squares += static_cast<long double>(value) * value;
  }
  stats.samples = taken;
  stats.mean = static_cast<double>(sum / taken);
  if (taken > 1) {
    const long double spread = squares - sum * (sum / taken);
    stats.stddev = spread <= 0 ? 0 : static_cast<double>(std::sqrt(spread / (taken - 1)));
  }
  return stats;
}

void JobResult::begin(const Window& window, uint64_t log_window_ns) {
  window_from_ns = window.from_ns;
  const auto wall = std::chrono::system_clock::now().time_since_epoch();
  const int64_t ahead_ns = static_cast<int64_t>(window.from_ns) - static_cast<int64_t>(engine::Loop::clock_ns());
  window_from_epoch_ms = (std::chrono::duration_cast<std::chrono::nanoseconds>(wall).count() + ahead_ns) / 1'000'000;
  rates = RateSeries(window.from_ns, rate_window_ns);
  if (log_window_ns != 0) log_rates = RateSeries(window.from_ns, log_window_ns);
}

void JobResult::count_op(uint64_t now, uint64_t latency_ns, uint32_t bytes) {
  ops++;
  latency.record(latency_ns);
  for (RateSeries* series : {&rates, &log_rates}) {
    if (!series->enabled()) continue;
    RateWindow& window = series->at(now);
    window.ops++;
    window.latency_sum_ns += latency_ns;
    window.latency_count++;
  }
  if (latency_log != nullptr) {
    latency_log->add((now - std::min(now, window_from_ns)) / 1'000'000, latency_ns, ops_direction(), bytes);
  }
}

void JobResult::count_ops(uint64_t now, uint64_t count) {
  ops += count;
  for (RateSeries* series : {&rates, &log_rates}) {
    if (series->enabled()) series->at(now).ops += count;
  }
}

void JobResult::count_bytes(uint64_t now, Direction direction, uint64_t bytes) {
  (direction == Direction::read ? bytes_read : bytes_written) += bytes;
  for (RateSeries* series : {&rates, &log_rates}) {
    if (series->enabled()) series->at(now).bytes[static_cast<std::size_t>(direction)] += bytes;
  }
}

CpuUsage CpuUsage::now() noexcept {
  CpuUsage usage;
  usage.wall_ns = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
  rusage self{};
  if (getrusage(RUSAGE_SELF, &self) != 0) return usage;  // only with a bad argument
  auto ns = [](const timeval& t) { return static_cast<uint64_t>(t.tv_sec) * 1'000'000'000 + static_cast<uint64_t>(t.tv_usec) * 1000; };
  usage.user_ns = ns(self.ru_utime);
  usage.system_ns = ns(self.ru_stime);
  usage.context_switches = static_cast<uint64_t>(self.ru_nvcsw + self.ru_nivcsw);
  usage.major_faults = static_cast<uint64_t>(self.ru_majflt);
  usage.minor_faults = static_cast<uint64_t>(self.ru_minflt);
  return usage;
}

CpuUsage CpuUsage::since(const CpuUsage& start) const noexcept {
  CpuUsage spent;
  spent.wall_ns = wall_ns - start.wall_ns;
  spent.user_ns = user_ns - start.user_ns;
  spent.system_ns = system_ns - start.system_ns;
  spent.context_switches = context_switches - start.context_switches;
  spent.major_faults = major_faults - start.major_faults;
  spent.minor_faults = minor_faults - start.minor_faults;
  return spent;
}

void CpuUsage::merge(const CpuUsage& other) noexcept {
  if ((sets & other.sets) != 0) return;  // the same set: the same figures
  sets |= other.sets;
  wall_ns += other.wall_ns;
  user_ns += other.user_ns;
  system_ns += other.system_ns;
  context_switches += other.context_switches;
  major_faults += other.major_faults;
  minor_faults += other.minor_faults;
}

void JobResult::merge(const JobResult& other, bool counts_connection) {
  ops += other.ops;
  bytes_written += other.bytes_written;
  bytes_read += other.bytes_read;
  errors += other.errors;
  if (other.ran()) {
    if (!ran() || other.window_from_ns < window_from_ns) window_from_epoch_ms = other.window_from_epoch_ms;
    window_from_ns = ran() ? std::min(window_from_ns, other.window_from_ns) : other.window_from_ns;
    window_until_ns = std::max(window_until_ns, other.window_until_ns);
  }
  latency.merge(other.latency);
  rates.merge(other.rates);
  // Jobs of one reporting group may log with different log_avg_msec: their logs are
  // written per clone before the merge, which keeps the windows only when they agree.
  if (!log_rates.enabled() || !other.log_rates.enabled() || log_rates.window_ns() == other.log_rates.window_ns()) {
    log_rates.merge(other.log_rates);
  } else {
    log_rates = RateSeries();
  }
  server_confirmed_bytes += other.server_confirmed_bytes;
  client_sent_bytes += other.client_sent_bytes;
  stream_bytes.insert(stream_bytes.end(), other.stream_bytes.begin(), other.stream_bytes.end());
  if (error_message.empty()) error_message = other.error_message;
  verify_mismatches += other.verify_mismatches;
  verify_gaps += other.verify_gaps;
  verify_duplicates += other.verify_duplicates;
  verified_messages += other.verified_messages;
  rate_dropped += other.rate_dropped;
  cpu.merge(other.cpu);
  if (counts_connection) {
    resumes += other.resumes;
    bytes_replayed += other.bytes_replayed;
    resume_latency.merge(other.resume_latency);
  }
}

void LiveResults::publish(std::size_t clone, std::size_t part, std::size_t parts, const JobResult& result,
                          uint64_t until_ns) {
  std::lock_guard<std::mutex> lock(mutex_);
  RM_ASSERT(clone < slots_.size() && part < parts);
  auto& slot = slots_[clone];
  if (slot.size() != parts) slot.assign(parts, std::nullopt);
  slot[part] = result;
  // A runner that is done closed its window (a size-bound one before now); else it ends now.
  if (slot[part]->window_until_ns == 0) slot[part]->window_until_ns = until_ns;
  slot[part]->latency_log = nullptr;
}

std::vector<JobResult> LiveResults::collect() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<JobResult> out;
  for (const auto& slot : slots_) {
    std::optional<JobResult> merged;
    for (const auto& part : slot) {
      if (!part) continue;
      if (!merged) {
        merged = *part;
      } else {
        merged->merge(*part, false);
      }
    }
    if (merged) out.push_back(std::move(*merged));
  }
  return out;
}

}  // namespace ringmux::loadgen
