// fio's log files for one job clone (write_lat_log, write_bw_log, write_iops_log), in the
// format fio 3.33 writes and its tools (fio_generate_plots, fio2gnuplot, fiologparser)
// read: one line per entry,
//     time_ms, value, direction, block_size, 0
// time_ms: milliseconds since the measured window began (after ramp_time); direction: 0
// read (server to client), 1 write (client to server); the fifth field is the priority
// fio writes there (0: not the highest class). Files: PREFIX_lat.N.log and
// PREFIX_clat.N.log (latency in ns; the same values: there is no submission stage apart),
// PREFIX_bw.N.log (KiB/s), PREFIX_iops.N.log (operations/s); N is the clone's number
// counted over every job from 1, as fio counts its jobs.
//
// Latency: without log_avg_msec a line per operation with its block size, written as the
// operation completes; with it, the mean over each window (block size 0). Bandwidth and
// IOPS: a line per window of log_avg_msec, or without it of 500 ms (fio's bwavgtime and
// iopsavgtime default; fio itself logs those per operation then), per direction the job
// moves in, the last window over the part of it that ran. Windowed lines are written when
// the job ends.
//
// Files are opened before the run (an unwritable path fails at once). LatencyLog::add may
// be called from several threads (the tcp engine's streams): each line is one stdio call,
// and stdio locks the file for it.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "tools/loadgen/job.h"
#include "tools/loadgen/result.h"

namespace ringmux::loadgen {

// The per-operation latency lines of one clone: the lat and clat files.
class LatencyLog {
 public:
  LatencyLog(std::FILE* lat, std::FILE* clat) noexcept : lat_(lat), clat_(clat) {}
  void add(uint64_t time_ms, uint64_t latency_ns, Direction direction, uint32_t bytes) noexcept;

 private:
  std::FILE* lat_;
  std::FILE* clat_;
};

class JobLogs {
 public:
  // Opens the files `job` asks for, for clone number `number` (from 1); nullptr without
  // any log. On failure nullptr and `error` names the file and the cause.
  static std::unique_ptr<JobLogs> open(const Job& job, const std::string& clone_name, uint32_t number,
                                       std::string& error);
  ~JobLogs();
  JobLogs(const JobLogs&) = delete;
  JobLogs& operator=(const JobLogs&) = delete;

  // The per-operation latency log, or nullptr (no lat log, or averaged).
  LatencyLog* per_operation() noexcept { return per_operation_ ? &*per_operation_ : nullptr; }
  // The window length of `result.log_rates`, or 0 when the rates series serves the logs.
  uint64_t log_window_ns() const noexcept { return log_window_ns_; }
  // Writes the windowed lines of a finished job and closes every file; "" or what failed.
  std::string finish(const JobResult& result);

 private:
  struct File {
    std::string path;
    std::FILE* file = nullptr;
  };
  JobLogs() = default;

  File lat_, clat_, bw_, iops_;
  std::optional<LatencyLog> per_operation_;
  uint64_t log_window_ns_ = 0;
};

}  // namespace ringmux::loadgen
