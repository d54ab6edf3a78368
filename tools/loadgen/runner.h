// Runs loadgen jobs and collects what they measured.
//
// ringmux engine: every job of an invocation runs on one client loop (pinned to the
// job's first allowed CPU) over one shared connection, unless a job asks for its own.
// tcp engine: each job clone runs on a thread of its own with blocking sockets, the raw
// baseline: no framing, no multiplexing (iodepth N pipelines N requests on one
// connection; each stream is a connection of its own, read streams included; a bidi
// stream has a writer thread beside its reader).
// Called from the main thread; returns when every job is done.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "base/histogram.h"
#include "tools/loadgen/job.h"

namespace ringmux::loadgen {

struct JobResult {
  std::string name;
  RwMode rw = RwMode::unary;
  IoEngine engine = IoEngine::ringmux;
  uint64_t ops = 0;             // calls (unary) or messages (streams) in the window
  uint64_t bytes_written = 0;   // payload sent in the window
  uint64_t bytes_read = 0;      // payload received in the window
  uint64_t errors = 0;
  double window_seconds = 0;
  Histogram latency;  // ns; unary: call latency; streams: message write latency
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
  // Open loop (rate_iops): calls that fell due and never started, because the backlog of
  // late calls was full (pacer_backlog_max) or the run ended first. 0 in closed loop.
  uint64_t rate_dropped = 0;
};

struct RunTarget {
  std::string host;  // "127.0.0.1"
  uint16_t port = 0;
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

// Runs every job of `invocation` against `target` and returns one result per job clone.
// `progress` (may be null) receives live totals.
std::vector<JobResult> run_jobs(const Invocation& invocation, const RunTarget& target, Progress* progress = nullptr);

}  // namespace ringmux::loadgen
