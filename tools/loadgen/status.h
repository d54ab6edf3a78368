// The live status line of ringmux-loadgen: fio's one-line progress (elapsed share, rates
// over the last interval, ETA), redrawn in place on a terminal, absent on a pipe or file
// so that reports stay clean for scripts.
//
// A StatusLine owns one thread that samples a Progress twice a second; start() and stop()
// are called from the main thread. Nothing is printed unless `out` is a terminal.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>

#include "tools/loadgen/runner.h"

namespace ringmux::loadgen {

// One status line as text, without control characters: "[45.0% done] [1.23M ops/s]
// [3.45 GiB/s] [errors 0] [eta 00m:02s]". `planned_ns` 0 means the length is unknown
// (size-bound jobs): no percentage and no ETA.
std::string format_status(uint64_t elapsed_ns, uint64_t planned_ns, double ops_per_second, double bytes_per_second,
                          uint64_t errors);

class StatusLine {
 public:
  // Draws on `out` only when it is a terminal (isatty); `planned_ns` as above.
  StatusLine(std::FILE* out, const Progress& progress, uint64_t planned_ns);
  ~StatusLine();
  StatusLine(const StatusLine&) = delete;
  StatusLine& operator=(const StatusLine&) = delete;

  bool active() const noexcept { return thread_.joinable(); }
  // Erases the line and joins the thread; idempotent.
  void stop();

 private:
  void run();

  std::FILE* out_;
  const Progress& progress_;
  uint64_t planned_ns_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace ringmux::loadgen
