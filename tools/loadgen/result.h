// What ringmux-loadgen measures: one job clone's result (or a part of one: a tcp stream's),
// the measured window, the rate windows that fio's bw / iops figures and logs are made of,
// how parts and clones merge, and the copies a status report reads while jobs run.
//
// A result is written by one thread (the ringmux client loop, or a tcp engine thread).
// Other threads read it only as a copy that thread published (LiveResults), or after the
// thread ended.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "ringmux/base/histogram.h"
#include "tools/loadgen/job.h"

namespace ringmux::loadgen {

class LatencyLog;

// A data direction, numbered as fio numbers it in its logs. The client-to-server direction
// is fio's write, the server-to-client one its read.
enum class Direction : uint8_t { read = 0, write = 1 };
inline constexpr std::size_t direction_count = 2;

// fio's bwavgtime and iopsavgtime default: the bw_* and iops_* figures (and the bw / iops
// logs without log_avg_msec) are taken over windows of this length.
inline constexpr uint64_t rate_window_ns = 500'000'000;

// The measured window of one job clone: [from_ns, until_ns), ended early by a stop. Every
// runner of the clone (its streams, its calls) shares one.
struct Window {
  Window() = default;
  // `stop_ns` (may be null) holds the time a stop was asked (UINT64_MAX: none).
  Window(const Job& job, uint64_t start, const std::atomic<uint64_t>* stop) noexcept
      : start_ns(start), from_ns(start + job.ramp_time_ns),
        until_ns(job.runtime_ns == 0 ? UINT64_MAX : start + job.ramp_time_ns + job.runtime_ns), stop_ns(stop) {}

  uint64_t start_ns = 0;           // the job started; ramp_time runs from here
  uint64_t from_ns = 0;            // measuring starts
  uint64_t until_ns = UINT64_MAX;  // measuring ends by the clock (UINT64_MAX: only size bounds it)
  const std::atomic<uint64_t>* stop_ns = nullptr;

  uint64_t end_ns() const noexcept {
    return stop_ns == nullptr ? until_ns : std::min(until_ns, stop_ns->load(std::memory_order_relaxed));
  }
  bool measuring(uint64_t now) const noexcept { return now >= from_ns && now < end_ns(); }
  bool over(uint64_t now) const noexcept { return now >= end_ns(); }
  // Where the measured window of a runner done at `now` ends: its last operation, the
  // runtime, or the stop, whichever came first.
  uint64_t closed_at(uint64_t now) const noexcept { return std::max(from_ns, std::min(now, end_ns())); }
};

// True when `job` is done by size after `bytes` (time_based runs ignore size).
inline bool size_reached(const Job& job, uint64_t bytes) noexcept {
  return !job.time_based && job.size_bytes != 0 && bytes >= job.size_bytes;
}

// One window of a RateSeries.
struct RateWindow {
  uint64_t bytes[direction_count] = {};
  uint64_t ops = 0;             // operations completed (in the direction that carries them)
  uint64_t latency_sum_ns = 0;  // of the operations with a latency
  uint64_t latency_count = 0;
};

// Bytes, operations and latency in consecutive windows of window_ns from from_ns. Holds at
// most rate_windows_max windows; a later time adds to the last one.
class RateSeries {
 public:
  RateSeries() = default;  // disabled: window_ns() == 0
  RateSeries(uint64_t from_ns, uint64_t window_ns) noexcept : from_ns_(from_ns), window_ns_(window_ns) {}

  bool enabled() const noexcept { return window_ns_ != 0; }
  uint64_t from_ns() const noexcept { return from_ns_; }
  uint64_t window_ns() const noexcept { return window_ns_; }
  const std::vector<RateWindow>& windows() const noexcept { return windows_; }

  // The window holding `now` (>= from_ns), created with those before it.
  RateWindow& at(uint64_t now);
  // Adds `other`'s windows to these, window by window (the same window_ns; parts of one
  // clone share from_ns, clones merged by group_reporting start microseconds apart).
  void merge(const RateSeries& other);

 private:
  uint64_t from_ns_ = 0;
  uint64_t window_ns_ = 0;
  std::vector<RateWindow> windows_;
  std::size_t current_ = 0;     // the window at() returned last
  uint64_t current_from_ns_ = 0;
  uint64_t current_until_ns_ = 0;
};

// min, max, mean and sample standard deviation of per-window rates (fio's bw_* / iops_*).
struct RateStats {
  double min = 0, max = 0, mean = 0, stddev = 0;
  uint64_t samples = 0;
};
// The rate of every whole window of `series` before `until_ns` (or of the one partial
// window when no window is whole): bytes/s of `direction` (bytes = true) or operations/s.
RateStats rate_stats(const RateSeries& series, Direction direction, bool bytes, uint64_t until_ns);

// What the process spent while a set of clones ran (getrusage, RUSAGE_SELF): every
// thread's, so the clones of one set, and without --host the embedded server, share it.
// fio's usr_cpu, sys_cpu, ctx, majf, minf.
struct CpuUsage {
  uint64_t wall_ns = 0;  // the set's time, from its start to its last clone's end
  uint64_t user_ns = 0;
  uint64_t system_ns = 0;
  uint64_t context_switches = 0;  // voluntary and involuntary
  uint64_t major_faults = 0;
  uint64_t minor_faults = 0;
  // The sets whose usage this holds, by engine (ringmux 1, tcp 2): a reporting group lies in
  // one stonewall wave, whose two sets run one after the other; clones of one set share it.
  uint32_t sets = 0;

  // The process's counters now (wall_ns: the monotonic clock).
  static CpuUsage now() noexcept;
  // What was spent from `start` to this.
  CpuUsage since(const CpuUsage& start) const noexcept;
  // group_reporting: adds the usage of a set not yet in this one.
  void merge(const CpuUsage& other) noexcept;
};

struct JobResult {
  std::string name;
  std::size_t job_index = 0;   // into Invocation::jobs
  uint32_t group = 0;          // stonewall group, from 0
  int loop_cpu = -1;           // ringmux: the CPU of the client loop it ran on (-1: unpinned)
  RwMode rw = RwMode::unary;
  IoEngine engine = IoEngine::ringmux;
  uint64_t ops = 0;             // calls (unary) or messages (streams) in the window
  uint64_t bytes_written = 0;   // payload sent in the window
  uint64_t bytes_read = 0;      // payload received in the window
  uint64_t errors = 0;
  // The measured window: from the end of ramp_time to the end of the job's last counted
  // operation, its runtime or a stop. Both 0 for a job that never started.
  uint64_t window_from_ns = 0;
  uint64_t window_until_ns = 0;
  int64_t window_from_epoch_ms = 0;  // window_from_ns on the wall clock (fio's job_start)
  Histogram latency;  // ns; unary: call latency; streams: message write latency
  RateSeries rates;      // rate_window_ns windows: bw_* / iops_* figures, bw / iops logs
  RateSeries log_rates;  // log_avg_msec windows, when the job logs with them
  LatencyLog* latency_log = nullptr;  // a line per operation (write_lat_log, log_avg_msec=0)
  uint64_t server_confirmed_bytes = 0;  // sink streams: the server's count at the end
  uint64_t client_sent_bytes = 0;       // what the client wrote in total, to compare
  // Stream jobs on ringmux: payload each stream moved in the window (written, or read for
  // rw=read), for the fairness of W4 (share = one stream's bytes / all streams' bytes).
  std::vector<uint64_t> stream_bytes;
  std::string error_message;
  // verify=1: messages whose payload failed its check, sequence numbers skipped, seen
  // twice, and messages checked in all. All 0 without verify.
  uint64_t verify_mismatches = 0, verify_gaps = 0, verify_duplicates = 0, verified_messages = 0;
  // ringmux engine: the job's connection resumed its session this often after its TCP
  // connection broke, sending this many held bytes again; each resume's time from the new
  // TCP connection being up to the handshake done. Jobs sharing a connection report the
  // same figures.
  uint64_t resumes = 0, bytes_replayed = 0;
  Histogram resume_latency;  // ns
  CpuUsage cpu;  // the process's, while the set of this clone ran
  // Open loop (rate_iops): calls that fell due and never started, because the backlog of
  // late calls was full (pacer_backlog_max) or the run ended first. 0 in closed loop.
  uint64_t rate_dropped = 0;

  bool ran() const noexcept { return window_from_ns != 0; }
  double window_seconds() const noexcept {
    return window_until_ns > window_from_ns ? static_cast<double>(window_until_ns - window_from_ns) / 1e9 : 0;
  }
  // The direction that carries the operations and their latency (JSON.md).
  Direction ops_direction() const noexcept { return rw == RwMode::read ? Direction::read : Direction::write; }

  // Starts the window (and the rate series) at `window.from_ns`; `log_window_ns` 0: no
  // log_rates.
  void begin(const Window& window, uint64_t log_window_ns);
  // The runner of this result that used `window` is done at `now`.
  void close(const Window& window, uint64_t now) noexcept {
    window_until_ns = std::max(window_until_ns, window.closed_at(now));
  }
  // Counting, by the thread that owns the result, for events inside the window:
  // an operation that took `latency_ns`, of `bytes` (the request, or the message);
  void count_op(uint64_t now, uint64_t latency_ns, uint32_t bytes);
  // operations without a latency (messages of a read stream);
  void count_ops(uint64_t now, uint64_t count);
  // payload moved.
  void count_bytes(uint64_t now, Direction direction, uint64_t bytes);
  void add_error(const std::string& message) {
    errors++;
    if (error_message.empty()) error_message = message;
  }

  // Adds a part of the same clone (a tcp stream) or another clone (group_reporting).
  // `counts_connection`: add the resume figures too (false for clones sharing a connection,
  // whose figures are the same).
  void merge(const JobResult& other, bool counts_connection);
};

// Copies of running jobs' results for --status-interval. The thread that writes a result
// (or part) publishes a copy now and then (live_publish_ns); a report merges the latest
// copies. Any thread; a mutex guards the copies.
class LiveResults {
 public:
  explicit LiveResults(std::size_t clones) : slots_(clones) {}
  // The copy of part `part` of `parts` of clone `clone`; a result whose window is still
  // open (window_until_ns 0) gets `until_ns` (now, within the window) as its end.
  void publish(std::size_t clone, std::size_t part, std::size_t parts, const JobResult& result, uint64_t until_ns);
  // Every clone published so far, its parts merged, in clone order.
  std::vector<JobResult> collect();

 private:
  std::mutex mutex_;
  std::vector<std::vector<std::optional<JobResult>>> slots_;
};

// How often a running job publishes its copy: a status report is at most this old.
inline constexpr uint64_t live_publish_ns = 100'000'000;
static_assert(live_publish_ns <= status_interval_ns_min, "a report must not be older than its period");

// Publishes `result` to `live` (when set) once every live_publish_ns, from the thread that
// writes the result.
class Publisher {
 public:
  Publisher(LiveResults* live, std::size_t clone, std::size_t part, std::size_t parts) noexcept
      : live_(live), clone_(clone), part_(part), parts_(parts) {}
  void tick(const JobResult& result, const Window& window, uint64_t now) {
    if (live_ == nullptr || now < next_ns_) return;
    live_->publish(clone_, part_, parts_, result, window.closed_at(now));
    next_ns_ = now + live_publish_ns;
  }

 private:
  LiveResults* live_;
  std::size_t clone_, part_, parts_;
  uint64_t next_ns_ = 0;
};

}  // namespace ringmux::loadgen
