#include "tools/loadgen/logs.h"

#include <cerrno>
#include <cstring>

namespace ringmux::loadgen {

namespace {

// stdio's buffer per log file: a per-operation log at a million lines a second then makes
// a write call every few thousand lines.
constexpr std::size_t log_buffer_bytes = 1 << 20;

// One line as fio 3.33 writes it.
int print_line(std::FILE* file, uint64_t time_ms, uint64_t value, Direction direction, uint64_t bytes) {
  return std::fprintf(file, "%llu, %llu, %u, %llu, 0\n", static_cast<unsigned long long>(time_ms),
                      static_cast<unsigned long long>(value), static_cast<unsigned>(direction),
                      static_cast<unsigned long long>(bytes));
}

}  // namespace

void LatencyLog::add(uint64_t time_ms, uint64_t latency_ns, Direction direction, uint32_t bytes) noexcept {
  print_line(lat_, time_ms, latency_ns, direction, bytes);
  print_line(clat_, time_ms, latency_ns, direction, bytes);
}

std::unique_ptr<JobLogs> JobLogs::open(const Job& job, const std::string& clone_name, uint32_t number,
                                       std::string& error) {
  if (!job.lat_log_prefix && !job.bw_log_prefix && !job.iops_log_prefix) return nullptr;
  std::unique_ptr<JobLogs> logs(new JobLogs());
  auto open_file = [&](File& file, const std::optional<std::string>& prefix, const char* kind) {
    if (!prefix) return true;
    file.path = (prefix->empty() ? clone_name : *prefix) + "_" + kind + "." + std::to_string(number) + ".log";
    file.file = std::fopen(file.path.c_str(), "w");
    if (file.file == nullptr) {
      error = "cannot write '" + file.path + "': " + std::strerror(errno);
      return false;
    }
    std::setvbuf(file.file, nullptr, _IOFBF, log_buffer_bytes);
    return true;
  };
  if (!open_file(logs->lat_, job.lat_log_prefix, "lat") || !open_file(logs->clat_, job.lat_log_prefix, "clat") ||
      !open_file(logs->bw_, job.bw_log_prefix, "bw") || !open_file(logs->iops_, job.iops_log_prefix, "iops")) {
    return nullptr;
  }
  if (job.lat_log_prefix && job.log_avg_ns == 0) logs->per_operation_.emplace(logs->lat_.file, logs->clat_.file);
  logs->log_window_ns_ = job.log_avg_ns;
  return logs;
}

JobLogs::~JobLogs() {
  for (File* file : {&lat_, &clat_, &bw_, &iops_}) {
    if (file->file != nullptr) std::fclose(file->file);
  }
}

std::string JobLogs::finish(const JobResult& result) {
  const RateSeries& series = log_window_ns_ != 0 ? result.log_rates : result.rates;
  const Direction ops_direction = result.ops_direction();
  // The directions the job moves payload in: both for calls and bidi streams.
  const bool both = result.rw == RwMode::unary || result.rw == RwMode::quorum || result.rw == RwMode::bidi;
  if (series.enabled() && result.window_until_ns > series.from_ns()) {
    const uint64_t span_ns = result.window_until_ns - series.from_ns();
    const uint64_t count = std::min<uint64_t>((span_ns + series.window_ns() - 1) / series.window_ns(), rate_windows_max);
    for (uint64_t i = 0; i < count; i++) {
      const RateWindow window = i < series.windows().size() ? series.windows()[i] : RateWindow{};
      // The window ends at its length, or where the run ended (the last, partial one).
      const uint64_t end_ns = std::min((i + 1) * series.window_ns(), span_ns);
      const double seconds = static_cast<double>(end_ns - i * series.window_ns()) / 1e9;
      const uint64_t time_ms = end_ns / 1'000'000;
      if (bw_.file != nullptr) {
        for (const Direction d : {Direction::read, Direction::write}) {
          if (!both && d != ops_direction) continue;
          const double kib_per_s = static_cast<double>(window.bytes[static_cast<std::size_t>(d)]) / 1024.0 / seconds;
          print_line(bw_.file, time_ms, static_cast<uint64_t>(kib_per_s + 0.5), d, 0);
        }
      }
      if (iops_.file != nullptr) {
        print_line(iops_.file, time_ms, static_cast<uint64_t>(static_cast<double>(window.ops) / seconds + 0.5),
                   ops_direction, 0);
      }
      if (log_window_ns_ != 0 && lat_.file != nullptr && window.latency_count > 0) {
        const uint64_t mean_ns = window.latency_sum_ns / window.latency_count;
        print_line(lat_.file, time_ms, mean_ns, ops_direction, 0);
        print_line(clat_.file, time_ms, mean_ns, ops_direction, 0);
      }
    }
  }
  std::string error;
  for (File* file : {&lat_, &clat_, &bw_, &iops_}) {
    if (file->file == nullptr) continue;
    const bool failed = std::ferror(file->file) != 0;
    if ((std::fclose(file->file) != 0 || failed) && error.empty()) {
      error = "writing '" + file->path + "' failed: " + std::strerror(errno);
    }
    file->file = nullptr;
  }
  per_operation_.reset();
  return error;
}

}  // namespace ringmux::loadgen
