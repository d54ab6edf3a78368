#include "tools/loadgen/report.h"

// GCC 12 at -O3 reports a false -Wrestrict inside std::string concatenation (GCC bug
// 105329); this file builds text by concatenation throughout.
#pragma GCC diagnostic ignored "-Wrestrict"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <ctime>

#include "ringmux/base/assert.h"
#include "tools/loadgen/protocol.h"

// tools/meson.build passes the project version.
#ifndef RINGMUX_LOADGEN_VERSION
#error "RINGMUX_LOADGEN_VERSION must name the project version"
#endif

namespace ringmux::loadgen {

namespace {

const char* rw_name(RwMode rw) {
  switch (rw) {
    case RwMode::unary: return "unary";
    case RwMode::write: return "write";
    case RwMode::read: return "read";
    case RwMode::bidi: return "bidi";
    case RwMode::quorum: return "quorum";
  }
  return "?";
}

const char* engine_name(IoEngine engine) {
  switch (engine) {
    case IoEngine::ringmux: return "ringmux";
    case IoEngine::tcp: return "tcp";
  }
  return "?";
}

const Job& job_of(const Invocation& invocation, const JobResult& result) {
  RM_ASSERT(result.job_index < invocation.jobs.size());
  return invocation.jobs[result.job_index];
}

std::string format(const char* pattern, double a, double b = 0, double c = 0, double d = 0) {
  char buffer[256];
  std::snprintf(buffer, sizeof(buffer), pattern, a, b, c, d);
  return buffer;
}

// The smallest (or largest) stream's part of all the job's stream bytes; 0 without streams.
double share(const JobResult& r, bool smallest) {
  uint64_t total = 0;
  for (const uint64_t b : r.stream_bytes) total += b;
  if (r.stream_bytes.empty() || total == 0) return 0;
  const uint64_t pick = smallest ? *std::min_element(r.stream_bytes.begin(), r.stream_bytes.end())
                                 : *std::max_element(r.stream_bytes.begin(), r.stream_bytes.end());
  return static_cast<double>(pick) / static_cast<double>(total);
}

// The first error's text, and the limit that ended the job when it was the error count.
std::string error_text(const JobResult& r) {
  if (r.errors < job_errors_max) return r.error_message;
  return r.error_message + " (the job stopped at " + std::to_string(job_errors_max) +
         " failed operations: job_errors_max, tools/loadgen/protocol.h)";
}

// A JSON string literal: quotes, backslashes and control characters escaped.
std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof(escaped), "\\u%04x", static_cast<unsigned>(c));
          out += escaped;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

// One direction (read or write) of a result as the reports print it. The operations and
// their latency belong to one direction: read for rw=read (the server streams to the
// client), write otherwise (unary calls, and message writes of write and bidi streams).
// The other direction reports its bytes only.
struct DirectionFigures {
  uint64_t bytes = 0;
  uint64_t bw_bytes = 0;      // bytes / window
  double iops = 0;            // 0 unless the direction carries the operations
  uint64_t ops = 0;           // likewise
  uint64_t runtime_ms = 0;    // the window; 0 when the direction moved nothing
  bool has_latency = false;   // the direction carries the operations and has samples
};

DirectionFigures direction_of(const JobResult& r, Direction direction) {
  const double seconds = r.window_seconds();
  const bool carries_ops = direction == r.ops_direction();
  DirectionFigures d;
  d.bytes = direction == Direction::read ? r.bytes_read : r.bytes_written;
  d.bw_bytes = seconds > 0 ? static_cast<uint64_t>(static_cast<double>(d.bytes) / seconds) : 0;
  d.ops = carries_ops ? r.ops : 0;
  d.iops = seconds > 0 ? static_cast<double>(d.ops) / seconds : 0;
  d.runtime_ms = d.bytes > 0 || d.ops > 0 ? static_cast<uint64_t>(seconds * 1e3 + 0.5) : 0;
  d.has_latency = carries_ops && r.latency.count() > 0;
  return d;
}

// A latency object: fio's {min, max, mean, stddev, N, percentile} and, json+, its bins.
std::string json_latency(const Histogram& latency, bool has, const Job& job, bool plus) {
  std::string percentiles;
  if (has) {
    for (const double p : job.percentile_list) {
      char key[32];
      std::snprintf(key, sizeof(key), "%.6f", p);
      if (!percentiles.empty()) percentiles += ", ";
      percentiles += "\"" + std::string(key) + "\": " + std::to_string(latency.percentile(p));
    }
  }
  std::string out = "{\"min\": " + std::to_string(has ? latency.min() : 0) + ", \"max\": " +
                    std::to_string(has ? latency.max() : 0) + ", \"mean\": " + format("%.3f", has ? latency.mean() : 0) +
                    ", \"stddev\": " + format("%.3f", has ? latency.stddev() : 0) +
                    ", \"N\": " + std::to_string(has ? latency.count() : 0) + ", \"percentile\": {" + percentiles + "}";
  if (plus && has) {
    // Keyed by each bucket's value (ns), as fio writes them; buckets past fio's largest
    // bin add to it.
    std::string bins;
    uint64_t saturated = 0;
    for (std::size_t i = 0; i < Histogram::bucket_count; i++) {
      const uint64_t count = latency.count_at(i);
      if (count == 0) continue;
      if (Histogram::bucket_midpoint(i) >= fio_bin_ns_max) {
        saturated += count;
        continue;
      }
      bins += (bins.empty() ? "\"" : ", \"") + std::to_string(Histogram::bucket_midpoint(i)) + "\": " + std::to_string(count);
    }
    if (saturated != 0) bins += (bins.empty() ? "\"" : ", \"") + std::to_string(fio_bin_ns_max) + "\": " + std::to_string(saturated);
    out += ", \"bins\": {" + bins + "}";
  }
  return out + "}";
}

// The bandwidth each job's group moves per direction (the sum of its jobs' bw_mean, KiB/s):
// fio's bw_agg is a job's share of it.
std::vector<std::array<double, direction_count>> group_bandwidth(const std::vector<JobResult>& results) {
  std::vector<std::array<double, direction_count>> groups;
  for (const JobResult& r : results) {
    if (r.group >= groups.size()) groups.resize(r.group + 1, {0, 0});
    for (const Direction d : {Direction::read, Direction::write}) {
      groups[r.group][static_cast<std::size_t>(d)] += rate_stats(r.rates, d, true, r.window_until_ns).mean / 1024;
    }
  }
  return groups;
}

std::string json_direction(const JobResult& r, const Job& job, const char* name, Direction direction, bool plus,
                           double group_kib_per_s) {
  const DirectionFigures d = direction_of(r, direction);
  const std::string latency = json_latency(r.latency, d.has_latency, job, plus);
  const RateStats bw = rate_stats(r.rates, direction, true, r.window_until_ns);
  const RateStats iops = d.ops > 0 ? rate_stats(r.rates, direction, false, r.window_until_ns) : RateStats{};
  const double kib = 1024;
  return "      \"" + std::string(name) + "\": {\"io_bytes\": " + std::to_string(d.bytes) +
         ", \"io_kbytes\": " + std::to_string(d.bytes >> 10) + ", \"bw_bytes\": " + std::to_string(d.bw_bytes) +
         ", \"bw\": " + std::to_string(d.bw_bytes / 1024) + ", \"iops\": " + format("%.3f", d.iops) +
         ", \"runtime\": " + std::to_string(d.runtime_ms) + ", \"total_ios\": " + std::to_string(d.ops) +
         ", \"short_ios\": 0, \"drop_ios\": 0" +
         ",\n        \"slat_ns\": {\"min\": 0, \"max\": 0, \"mean\": 0.000, \"stddev\": 0.000, \"N\": 0}" +
         ",\n        \"clat_ns\": " + latency + ",\n        \"lat_ns\": " + latency +
         ",\n        \"bw_min\": " + format("%.0f", bw.min / kib) + ", \"bw_max\": " + format("%.0f", bw.max / kib) +
         ", \"bw_agg\": " + format("%.6f", group_kib_per_s > 0 ? 100.0 * bw.mean / kib / group_kib_per_s : 0) +
         ", \"bw_mean\": " + format("%.6f", bw.mean / kib) + ", \"bw_dev\": " + format("%.6f", bw.stddev / kib) +
         ", \"bw_samples\": " + std::to_string(bw.samples) + ", \"iops_min\": " + format("%.0f", iops.min) +
         ", \"iops_max\": " + format("%.0f", iops.max) + ", \"iops_mean\": " + format("%.6f", iops.mean) +
         ", \"iops_stddev\": " + format("%.6f", iops.stddev) + ", \"iops_samples\": " + std::to_string(iops.samples) +
         "}";
}

// fio's latency distribution (its latency_ns, latency_us, latency_ms): the share in
// percent of the operations whose latency falls in each range; a key names the range's
// upper end (exclusive) in its unit, the one before it the lower end (inclusive) and
// ">=2000" in ms what is left. Read from the latency histogram: a bucket counts where its
// midpoint falls (exact below 128 ns, within 0.78 % above).
constexpr uint64_t fio_latency_bounds[] = {2, 4, 10, 20, 50, 100, 250, 500, 750, 1000};
constexpr uint64_t fio_latency_ms_bound_max = 2000;  // latency_ms's extra key before ">=2000"
constexpr std::size_t fio_latency_keys = std::size(fio_latency_bounds);

std::string json_latency_distribution(const Histogram& latency) {
  // [0, 10): ns; [10, 20): us; [20, 30): ms, then the 2000 ms bucket and >= 2000 ms.
  std::array<uint64_t, 3 * fio_latency_keys + 2> counts{};
  for (std::size_t i = 0; i < Histogram::bucket_count; i++) {
    const uint64_t count = latency.count_at(i);
    if (count == 0) continue;
    const uint64_t ns = Histogram::bucket_midpoint(i);
    const std::size_t unit = ns < 1000 ? 0 : ns < 1'000'000 ? 1 : 2;
    const uint64_t value = unit == 0 ? ns : unit == 1 ? ns / 1000 : ns / 1'000'000;
    std::size_t key = 0;
    while (key < fio_latency_keys && value >= fio_latency_bounds[key]) key++;
    if (unit == 2 && key == fio_latency_keys) key += value < fio_latency_ms_bound_max ? 0 : 1;
    counts[unit * fio_latency_keys + key] += count;
  }
  const double total = static_cast<double>(latency.count());
  auto percent = [&](std::size_t index) {
    return format("%.6f", total > 0 ? 100.0 * static_cast<double>(counts[index]) / total : 0);
  };
  std::string out;
  const char* names[] = {"latency_ns", "latency_us", "latency_ms"};
  for (std::size_t unit = 0; unit < 3; unit++) {
    out += std::string(unit == 0 ? "" : ", ") + "\"" + names[unit] + "\": {";
    for (std::size_t key = 0; key < fio_latency_keys; key++) {
      out += std::string(key == 0 ? "" : ", ") + "\"" + std::to_string(fio_latency_bounds[key]) + "\": " +
             percent(unit * fio_latency_keys + key);
    }
    if (unit == 2) {
      out += ", \"" + std::to_string(fio_latency_ms_bound_max) + "\": " + percent(3 * fio_latency_keys) +
             ", \">=" + std::to_string(fio_latency_ms_bound_max) + "\": " + percent(3 * fio_latency_keys + 1);
    }
    out += "}";
  }
  return out;
}

// fio's job-level figures beside the directions: the process's CPU over the set that ran
// the job (CpuUsage), fio's latency-target fields as they read without that feature, and
// the latency distribution.
std::string json_job_figures(const JobResult& r, const Job& job) {
  const double wall = static_cast<double>(r.cpu.wall_ns);
  return "      \"elapsed\": " + std::to_string((r.cpu.wall_ns + 999'999'999) / 1'000'000'000) +
         ", \"usr_cpu\": " + format("%.6f", wall > 0 ? 100.0 * static_cast<double>(r.cpu.user_ns) / wall : 0) +
         ", \"sys_cpu\": " + format("%.6f", wall > 0 ? 100.0 * static_cast<double>(r.cpu.system_ns) / wall : 0) +
         ", \"ctx\": " + std::to_string(r.cpu.context_switches) + ", \"majf\": " + std::to_string(r.cpu.major_faults) +
         ", \"minf\": " + std::to_string(r.cpu.minor_faults) + ",\n      \"latency_depth\": " +
         std::to_string(job.iodepth) + ", \"latency_target\": 0, \"latency_percentile\": 100.000000" +
         ", \"latency_window\": 0,\n      " + json_latency_distribution(r.latency);
}

// fio's "job options" / "global options": the options as given, in order (a later value
// of an option replaces an earlier one in place).
std::string json_options(const std::vector<std::pair<std::string, std::string>>& options) {
  std::vector<std::pair<std::string, std::string>> kept;
  for (const auto& [key, value] : options) {
    auto same = std::find_if(kept.begin(), kept.end(), [&](const auto& o) { return o.first == key; });
    if (same == kept.end()) kept.emplace_back(key, value);
    else same->second = value;
  }
  std::string out = "{";
  for (const auto& [key, value] : kept) out += (out.size() > 1 ? ", " : "") + json_string(key) + ": " + json_string(value);
  return out + "}";
}

std::string terse_direction(const JobResult& r, const Job& job, Direction direction) {
  const DirectionFigures d = direction_of(r, direction);
  const bool l = d.has_latency;
  std::string out = std::to_string(d.bytes / 1024) + ";" + std::to_string(d.bw_bytes / 1024) + ";" +
                    format("%.0f", d.iops) + ";" + std::to_string(d.runtime_ms) + ";" +
                    format("%.3f;%.3f;%.3f;%.3f", l ? static_cast<double>(r.latency.min()) / 1e3 : 0,
                           l ? static_cast<double>(r.latency.max()) / 1e3 : 0, l ? r.latency.mean() / 1e3 : 0,
                           l ? r.latency.stddev() / 1e3 : 0);
  for (std::size_t slot = 0; slot < terse_percentile_slots; slot++) {
    if (l && slot < job.percentile_list.size()) {
      const double p = job.percentile_list[slot];
      out += format(";%f%%=%.3f", p, static_cast<double>(r.latency.percentile(p)) / 1e3);
    } else {
      out += ";0%=0";
    }
  }
  return out;
}

}  // namespace

const char* ringmux_version_text() { return RINGMUX_LOADGEN_VERSION; }

std::string report_normal(const std::vector<JobResult>& results, const Invocation& invocation) {
  std::string out;
  for (const JobResult& r : results) {
    const Job& job = job_of(invocation, r);
    const double seconds = r.window_seconds();
    const double per_second = seconds > 0 ? 1 / seconds : 0;
    out += r.name + ": (groupid=" + std::to_string(r.group) + ", rw=" + rw_name(r.rw) + ", bs=" + std::to_string(job.bs) +
           ", iodepth=" + std::to_string(job.iodepth) + ", streams=" + std::to_string(job.streams) +
           ", ioengine=" + engine_name(r.engine) + ")\n";
    out += format("  ops=%.0f, iops=%.0f, write bw=%.2f MiB/s, read bw=%.2f MiB/s", static_cast<double>(r.ops),
                  static_cast<double>(r.ops) * per_second, static_cast<double>(r.bytes_written) * per_second / (1 << 20),
                  static_cast<double>(r.bytes_read) * per_second / (1 << 20)) +
           format(", runtime=%.0fmsec\n", seconds * 1e3);
    if (r.latency.count() > 0) {
      out += format("  lat (usec): min=%.1f, max=%.1f, avg=%.1f, stdev=%.1f\n", static_cast<double>(r.latency.min()) / 1e3,
                    static_cast<double>(r.latency.max()) / 1e3, r.latency.mean() / 1e3, r.latency.stddev() / 1e3);
      out += "  lat percentiles (usec):";
      for (const double p : job.percentile_list) {
        out += format(" %.2fth=%.1f", p, static_cast<double>(r.latency.percentile(p)) / 1e3);
      }
      out += "\n";
    }
    // fio's per-window figures: bandwidth of each direction that moved, and the operations.
    for (const Direction d : {Direction::write, Direction::read}) {
      const RateStats bw = rate_stats(r.rates, d, true, r.window_until_ns);
      if (bw.max == 0) continue;
      out += std::string(d == Direction::write ? "  write" : "  read") +
             format(" bw (KiB/s): min=%.0f, max=%.0f, avg=%.2f, ", bw.min / 1024, bw.max / 1024, bw.mean / 1024) +
             format("stdev=%.2f, samples=%.0f\n", bw.stddev / 1024, static_cast<double>(bw.samples));
    }
    const RateStats iops = rate_stats(r.rates, r.ops_direction(), false, r.window_until_ns);
    if (iops.max > 0) {
      out += format("  iops: min=%.0f, max=%.0f, avg=%.2f, stdev=%.2f, ", iops.min, iops.max, iops.mean, iops.stddev) +
             format("samples=%.0f\n", static_cast<double>(iops.samples));
    }
    if (r.stream_bytes.size() > 1) {
      out += format("  stream share: min=%.3f%%, max=%.3f%% (fair: %.3f%%)\n", share(r, true) * 100, share(r, false) * 100,
                    100.0 / static_cast<double>(r.stream_bytes.size()));
    }
    if (r.client_sent_bytes > 0 && r.rw == RwMode::write) {
      out += "  server confirmed " + std::to_string(r.server_confirmed_bytes) + " of " +
             std::to_string(r.client_sent_bytes) + " bytes written" +
             (r.server_confirmed_bytes == r.client_sent_bytes ? "" : " (MISMATCH)") + "\n";
    }
    if (r.verified_messages > 0 || r.verify_mismatches + r.verify_gaps + r.verify_duplicates > 0) {
      out += "  verify: " + std::to_string(r.verified_messages) + " messages, mismatches=" +
             std::to_string(r.verify_mismatches) + ", gaps=" + std::to_string(r.verify_gaps) +
             ", duplicates=" + std::to_string(r.verify_duplicates) + "\n";
    }
    if (r.rate_dropped > 0) {
      out += "  rate: " + std::to_string(r.rate_dropped) + " calls due never started (the target fell behind the schedule)\n";
    }
    if (r.resumes > 0) {
      out += "  resume: " + std::to_string(r.resumes) + " resumes, " + std::to_string(r.bytes_replayed) +
             " bytes replayed, time p50=" + format("%.1f", static_cast<double>(r.resume_latency.percentile(50)) / 1e3) +
             "us p99=" + format("%.1f", static_cast<double>(r.resume_latency.percentile(99)) / 1e3) +
             "us max=" + format("%.1f", static_cast<double>(r.resume_latency.max()) / 1e3) + "us\n";
    }
    if (r.cpu.wall_ns > 0) {  // fio's cpu line: the process's, over the set that ran the job
      const double wall = static_cast<double>(r.cpu.wall_ns);
      out += format("  cpu: usr=%.2f%%, sys=%.2f%%, ", 100.0 * static_cast<double>(r.cpu.user_ns) / wall,
                    100.0 * static_cast<double>(r.cpu.system_ns) / wall) +
             "ctx=" + std::to_string(r.cpu.context_switches) + ", majf=" + std::to_string(r.cpu.major_faults) +
             ", minf=" + std::to_string(r.cpu.minor_faults) + "\n";
    }
    out += "  errors=" + std::to_string(r.errors) + (r.error_message.empty() ? "" : " (" + error_text(r) + ")") + "\n";
  }
  return out;
}

std::string report_json(const std::vector<JobResult>& results, const Invocation& invocation, bool plus) {
  const auto now = std::chrono::system_clock::now();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  char time_text[32] = "";
  ctime_r(&seconds, time_text);
  std::string time_line(time_text);
  if (!time_line.empty() && time_line.back() == '\n') time_line.pop_back();
  std::string out = "{\n  \"fio version\": \"ringmux-loadgen-" + std::string(ringmux_version_text()) +
                    "\",\n  \"ringmux_version\": 1,\n  \"timestamp\": " + std::to_string(ms / 1000) +
                    ",\n  \"timestamp_ms\": " + std::to_string(ms) + ",\n  \"time\": " + json_string(time_line) + ",\n";
  if (!invocation.global_options.empty()) out += "  \"global options\": " + json_options(invocation.global_options) + ",\n";
  out += "  \"jobs\": [\n";
  const auto groups = group_bandwidth(results);
  for (std::size_t i = 0; i < results.size(); i++) {
    const JobResult& r = results[i];
    const Job& job = job_of(invocation, r);
    const auto& group = groups[r.group];
    out += "    {\n      \"jobname\": " + json_string(r.name) + ", \"groupid\": " + std::to_string(r.group) +
           ", \"job_start\": " + std::to_string(r.window_from_epoch_ms) + ", \"job_runtime\": " + std::to_string(static_cast<uint64_t>(r.window_seconds() * 1e3 + 0.5)) +
           ",\n      \"job options\": " + json_options(job.options_given) + ",\n";
    out += json_direction(r, job, "read", Direction::read, plus, group[static_cast<std::size_t>(Direction::read)]) + ",\n";
    out += json_direction(r, job, "write", Direction::write, plus, group[static_cast<std::size_t>(Direction::write)]) + ",\n";
    // fio's tools expect a trim section too: nothing is ever trimmed here.
    out += json_direction(JobResult{}, job, "trim", Direction::read, plus, 0) + ",\n";
    out += json_job_figures(r, job) + ",\n";
    out += "      \"ringmux\": {\"engine\": \"" + std::string(engine_name(r.engine)) + "\", \"rw\": \"" +
           rw_name(r.rw) + "\", \"errors\": " + std::to_string(r.errors) + ", \"error\": " +
           json_string(error_text(r)) + ", \"server_confirmed_bytes\": " + std::to_string(r.server_confirmed_bytes) +
           ", \"client_sent_bytes\": " + std::to_string(r.client_sent_bytes) +
           ", \"stream_share_min\": " + format("%.6f", share(r, true)) +
           ", \"stream_share_max\": " + format("%.6f", share(r, false)) +
           ", \"verify_errors\": " + std::to_string(r.verify_mismatches) +
           ", \"verify_gaps\": " + std::to_string(r.verify_gaps) +
           ", \"verify_duplicates\": " + std::to_string(r.verify_duplicates) +
           ", \"verified_messages\": " + std::to_string(r.verified_messages) +
           ", \"resumes\": " + std::to_string(r.resumes) + ", \"bytes_replayed\": " + std::to_string(r.bytes_replayed) +
           ", \"rate_dropped\": " + std::to_string(r.rate_dropped) +
           ", \"resume_ns\": {\"count\": " + std::to_string(r.resume_latency.count()) +
           ", \"p50\": " + std::to_string(r.resume_latency.percentile(50)) +
           ", \"p99\": " + std::to_string(r.resume_latency.percentile(99)) +
           ", \"max\": " + std::to_string(r.resume_latency.max()) + "}}\n    }" +
           (i + 1 < results.size() ? "," : "") + "\n";
  }
  out += "  ]\n}\n";
  return out;
}

std::string report_terse(const std::vector<JobResult>& results, const Invocation& invocation) {
  std::string out;
  for (const JobResult& r : results) {
    const Job& job = job_of(invocation, r);
    std::string name = r.name;
    std::replace(name.begin(), name.end(), ';', '_');
    std::replace(name.begin(), name.end(), '\n', '_');
    out += std::to_string(terse_version) + ";" + ringmux_version_text() + ";" + name + ";" + engine_name(r.engine) +
           ";" + rw_name(r.rw) + ";" + std::to_string(r.errors) + ";";
    out += terse_direction(r, job, Direction::read) + ";";
    out += terse_direction(r, job, Direction::write) + ";";
    out += std::to_string(r.server_confirmed_bytes) + ";" + std::to_string(r.client_sent_bytes) + ";" +
           format("%.6f;%.6f", share(r, true), share(r, false)) + ";" + std::to_string(r.verify_mismatches) + ";" +
           std::to_string(r.verify_gaps) + ";" + std::to_string(r.verify_duplicates) + ";" +
           std::to_string(r.verified_messages) + ";" + std::to_string(r.resumes) + ";" +
           std::to_string(r.bytes_replayed) + "\n";
  }
  return out;
}

std::string report_all(const std::vector<JobResult>& results, const Invocation& invocation) {
  const OutputFormats formats = invocation.output_formats;
  std::string out;
  if (has_format(formats, OutputFormat::terse)) out += report_terse(results, invocation);
  if (has_format(formats, OutputFormat::json) || has_format(formats, OutputFormat::json_plus)) {
    out += report_json(results, invocation, has_format(formats, OutputFormat::json_plus));
  }
  if (has_format(formats, OutputFormat::normal)) out += report_normal(results, invocation);
  return out;
}

}  // namespace ringmux::loadgen
