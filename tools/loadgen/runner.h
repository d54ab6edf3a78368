// Runs loadgen job clones and collects what they measured.
//
// ringmux engine: one client loop per CPU that the clones of one run_clones() call are
// placed on, each on a thread of its own pinned there: clone k of a job runs on CPU
// cpus_allowed[k % count] (clones of jobs that name no CPU share one loop, not pinned).
// The clones of a loop share one connection of that loop, unless a job asks for its own
// (runner.cpp). Nothing of a clone's calls crosses loops.
// tcp engine: each job clone runs on threads of its own with blocking sockets, the raw
// baseline: no framing, no multiplexing (tcp_runner.cpp); they run on the job's first
// allowed CPU.
// Called from the main thread; returns when every clone is done. A stop (RunControl) ends
// every clone within a few milliseconds (stop_poll_ns) with what it measured so far.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ringmux/mux/link/transport.h"
#include "tools/loadgen/job.h"
#include "tools/loadgen/result.h"

namespace ringmux::loadgen {

struct RunTarget {
  std::string host;  // "127.0.0.1"
  uint16_t port = 0;
  // The stage every connection passes (--tls-*: mutual TLS); nullptr: plain TCP.
  std::shared_ptr<mux::Handshake> handshake;
};

// Live totals of a running invocation, over every job and including warm-up: written by
// the jobs' threads, read by the status line's (relaxed: a display, not a measurement).
struct Progress {
  std::atomic<uint64_t> ops{0};
  std::atomic<uint64_t> bytes{0};  // payload moved, both directions
  std::atomic<uint64_t> errors{0};
  void add(uint64_t op_count, uint64_t byte_count) noexcept {
    ops.fetch_add(op_count, std::memory_order_relaxed);
    bytes.fetch_add(byte_count, std::memory_order_relaxed);
  }
};

// What the main thread tells running clones: written by the signal thread, read by the
// runners' threads.
struct RunControl {
  // Nothing is measured from this time on and every clone ends (UINT64_MAX: no stop).
  std::atomic<uint64_t> stop_ns{UINT64_MAX};
  LiveResults* live = nullptr;  // --status-interval: clones publish copies here

  // The first request wins; later ones change nothing.
  void request_stop(uint64_t now) noexcept {
    uint64_t none = UINT64_MAX;
    stop_ns.compare_exchange_strong(none, now, std::memory_order_relaxed);
  }
  bool stopped() const noexcept { return stop_ns.load(std::memory_order_relaxed) != UINT64_MAX; }
};

// How soon a clone waiting on a timer or a blocking wait notices a stop.
inline constexpr uint64_t stop_poll_ns = 50'000'000;

// One job clone to run.
struct CloneRun {
  const Job* job = nullptr;  // the clone's job (its name ends in .N for numjobs > 1)
  JobResult* result = nullptr;  // name, indices, engine and latency_log set by the caller
  std::size_t index = 0;        // over every clone of the invocation: verify keys, live slot
  uint32_t clone = 0;           // which clone of its job (0 to numjobs - 1): its CPU
  uint64_t log_window_ns = 0;   // log_avg_msec windows to count (0: none)
};

// The CPU whose loop clone `clone` of `job` runs on (ringmux engine): the job's allowed
// CPUs in turn, so that numjobs clones use them all; -1 when the job names none.
int clone_cpu(const Job& job, uint32_t clone) noexcept;

// Runs `clones` (all of one engine) against `target`. `progress` may be null.
void run_clones(const std::vector<CloneRun>& clones, const RunTarget& target, Progress* progress, RunControl& control);

}  // namespace ringmux::loadgen
