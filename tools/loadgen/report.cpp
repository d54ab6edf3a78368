#include "tools/loadgen/report.h"

// GCC 12 at -O3 reports a false -Wrestrict inside std::string concatenation (GCC bug
// 105329); this file builds text by concatenation throughout.
#pragma GCC diagnostic ignored "-Wrestrict"

#include <algorithm>
#include <cstdio>

namespace ringmux::loadgen {

namespace {

const char* rw_name(RwMode rw) {
  switch (rw) {
    case RwMode::unary: return "unary";
    case RwMode::write: return "write";
    case RwMode::read: return "read";
    case RwMode::bidi: return "bidi";
  }
  return "?";
}

const Job& job_of(const Invocation& invocation, const JobResult& result) {
  for (const Job& job : invocation.jobs) {
    if (result.name == job.name || result.name.rfind(job.name + ".", 0) == 0) return job;
  }
  return invocation.jobs.front();
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

}  // namespace

std::string report_normal(std::vector<JobResult>& results, const Invocation& invocation) {
  std::string out;
  for (JobResult& r : results) {
    const Job& job = job_of(invocation, r);
    const double seconds = r.window_seconds > 0 ? r.window_seconds : 1;
    out += r.name + ": (rw=" + rw_name(r.rw) + ", bs=" + std::to_string(job.bs) + ", iodepth=" +
           std::to_string(job.iodepth) + ", streams=" + std::to_string(job.streams) +
           ", ioengine=" + (r.engine == IoEngine::ringmux ? "ringmux" : "tcp") + ")\n";
    out += format("  ops=%.0f, iops=%.0f, write bw=%.2f MiB/s, read bw=%.2f MiB/s\n", static_cast<double>(r.ops),
                  static_cast<double>(r.ops) / seconds, static_cast<double>(r.bytes_written) / seconds / (1 << 20),
                  static_cast<double>(r.bytes_read) / seconds / (1 << 20));
    if (r.latency.count() > 0) {
      out += format("  lat (usec): min=%.1f, max=%.1f, avg=%.1f, stdev=%.1f\n", static_cast<double>(r.latency.min_ns()) / 1e3,
                    static_cast<double>(r.latency.max_ns()) / 1e3, r.latency.mean_ns() / 1e3, r.latency.stdev_ns() / 1e3);
      out += "  lat percentiles (usec):";
      for (const double p : job.percentile_list) {
        out += format(" %.2fth=%.1f", p, static_cast<double>(r.latency.percentile_ns(p)) / 1e3);
      }
      out += "\n";
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
    out += "  errors=" + std::to_string(r.errors) + (r.error_message.empty() ? "" : " (" + r.error_message + ")") + "\n";
  }
  return out;
}

std::string report_json(std::vector<JobResult>& results, const Invocation& invocation) {
  std::string out = "{\n  \"ringmux_version\": 1,\n  \"jobs\": [\n";
  for (std::size_t i = 0; i < results.size(); i++) {
    JobResult& r = results[i];
    const Job& job = job_of(invocation, r);
    const double seconds = r.window_seconds > 0 ? r.window_seconds : 1;
    std::string percentiles;
    for (const double p : job.percentile_list) {
      char key[32];
      std::snprintf(key, sizeof(key), "%.6f", p);
      if (!percentiles.empty()) percentiles += ", ";
      percentiles += "\"" + std::string(key) + "\": " + std::to_string(r.latency.percentile_ns(p));
    }
    auto direction = [&](const char* name, uint64_t bytes, bool with_latency) {
      std::string d = "      \"" + std::string(name) + "\": {\"io_bytes\": " + std::to_string(bytes) +
                      ", \"bw_bytes\": " + std::to_string(static_cast<uint64_t>(static_cast<double>(bytes) / seconds)) +
                      ", \"iops\": " + format("%.3f", with_latency ? static_cast<double>(r.ops) / seconds : 0) +
                      ", \"clat_ns\": {\"mean\": " + format("%.3f", with_latency ? r.latency.mean_ns() : 0) +
                      ", \"percentile\": {" + (with_latency ? percentiles : "") + "}}}";
      return d;
    };
    const bool reads = r.rw == RwMode::read;
    out += "    {\n      \"jobname\": \"" + r.name + "\",\n";
    out += direction("write", r.bytes_written, !reads) + ",\n";
    out += direction("read", r.bytes_read, reads) + ",\n";
    out += "      \"ringmux\": {\"engine\": \"" + std::string(r.engine == IoEngine::ringmux ? "ringmux" : "tcp") +
           "\", \"rw\": \"" + rw_name(r.rw) + "\", \"errors\": " + std::to_string(r.errors) + ", \"error\": \"" +
           r.error_message + "\", \"server_confirmed_bytes\": " + std::to_string(r.server_confirmed_bytes) +
           ", \"client_sent_bytes\": " + std::to_string(r.client_sent_bytes) +
           ", \"stream_share_min\": " + format("%.6f", share(r, true)) +
           ", \"stream_share_max\": " + format("%.6f", share(r, false)) +
           ", \"resumes\": 0, \"bytes_replayed\": 0}\n    }" + (i + 1 < results.size() ? "," : "") + "\n";
  }
  out += "  ]\n}\n";
  return out;
}

}  // namespace ringmux::loadgen
