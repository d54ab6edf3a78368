#include "tools/loadgen/status.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>

namespace ringmux::loadgen {

namespace {

// How often the line is redrawn: fio's default status interval is 1 s; twice as often
// makes a short run visibly move without costing anything measurable.
constexpr auto status_interval = std::chrono::milliseconds(500);

// "1.23M" / "3.45 GiB/s": `value` divided by `step` while a larger unit is left.
void scaled(char (&out)[32], double value, const char* const* units, double step) {
  int unit = 0;
  while (value >= step && units[unit + 1] != nullptr) {
    value /= step;
    unit++;
  }
  std::snprintf(out, sizeof(out), "%.2f%s", value, units[unit]);
}

}  // namespace

std::string format_status(uint64_t elapsed_ns, uint64_t planned_ns, double ops_per_second, double bytes_per_second,
                          uint64_t errors) {
  static const char* const op_units[] = {"", "k", "M", "G", nullptr};
  static const char* const byte_units[] = {" B/s", " KiB/s", " MiB/s", " GiB/s", nullptr};
  char ops[32], bytes[32], done[32] = "", eta[32] = "";
  scaled(ops, ops_per_second, op_units, 1000);
  scaled(bytes, bytes_per_second, byte_units, 1024);
  if (planned_ns != 0) {
    const double share = std::min(100.0, 100.0 * static_cast<double>(elapsed_ns) / static_cast<double>(planned_ns));
    std::snprintf(done, sizeof(done), "[%5.1f%% done] ", share);
    const uint64_t left_s = elapsed_ns >= planned_ns ? 0 : (planned_ns - elapsed_ns + 999'999'999) / 1'000'000'000;
    std::snprintf(eta, sizeof(eta), " [eta %02llum:%02llus]", static_cast<unsigned long long>(left_s / 60),
                  static_cast<unsigned long long>(left_s % 60));
  }
  char line[192];
  std::snprintf(line, sizeof(line), "%s[%s ops/s] [%s] [errors %llu]%s", done, ops, bytes,
                static_cast<unsigned long long>(errors), eta);
  return line;
}

StatusLine::StatusLine(std::FILE* out, const Progress& progress, uint64_t planned_ns)
    : out_(out), progress_(progress), planned_ns_(planned_ns) {
  if (isatty(fileno(out_)) == 1) thread_ = std::thread([this] { run(); });
}

StatusLine::~StatusLine() { stop(); }

void StatusLine::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void StatusLine::run() {
  const auto started = std::chrono::steady_clock::now();
  auto last = started;
  uint64_t last_ops = 0, last_bytes = 0;
  std::unique_lock<std::mutex> lock(mutex_);
  while (!wake_.wait_for(lock, status_interval, [this] { return stopping_; })) {
    const auto now = std::chrono::steady_clock::now();
    const double seconds = std::chrono::duration<double>(now - last).count();
    const uint64_t ops = progress_.ops.load(std::memory_order_relaxed);
    const uint64_t bytes = progress_.bytes.load(std::memory_order_relaxed);
    const std::string line =
        format_status(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(now - started).count()),
                      planned_ns_, static_cast<double>(ops - last_ops) / seconds,
                      static_cast<double>(bytes - last_bytes) / seconds, progress_.errors.load(std::memory_order_relaxed));
    std::fprintf(out_, "\r\033[K%s", line.c_str());  // redraw in place
    std::fflush(out_);
    last = now;
    last_ops = ops;
    last_bytes = bytes;
  }
  std::fputs("\r\033[K", out_);  // the report starts on a clean line
  std::fflush(out_);
}

}  // namespace ringmux::loadgen
