#include "tools/loadgen/report.h"

// GCC 12 at -O3 reports a false -Wrestrict inside std::string concatenation (GCC bug
// 105329); this file builds text by concatenation throughout.
#pragma GCC diagnostic ignored "-Wrestrict"

#include <algorithm>
#include <cstdio>

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

// One direction (read or write) of a result as the JSON and terse reports print it. The
// operations and their latency belong to one direction: read for rw=read (the server
// streams to the client), write otherwise (unary calls, and message writes of write and
// bidi streams). The other direction reports its bytes only.
struct Direction {
  uint64_t bytes = 0;
  uint64_t bw_bytes = 0;      // bytes / window
  double iops = 0;            // 0 unless the direction carries the operations
  uint64_t runtime_ms = 0;    // the window; 0 when the direction moved nothing
  bool has_latency = false;   // the direction carries the operations and has samples
};

Direction direction_of(JobResult& r, bool read) {
  const double seconds = r.window_seconds > 0 ? r.window_seconds : 1;
  const bool carries_ops = read == (r.rw == RwMode::read);
  Direction d;
  d.bytes = read ? r.bytes_read : r.bytes_written;
  d.bw_bytes = static_cast<uint64_t>(static_cast<double>(d.bytes) / seconds);
  d.iops = carries_ops ? static_cast<double>(r.ops) / seconds : 0;
  d.runtime_ms = d.bytes > 0 || (carries_ops && r.ops > 0) ? static_cast<uint64_t>(r.window_seconds * 1e3 + 0.5) : 0;
  d.has_latency = carries_ops && r.latency.count() > 0;
  return d;
}

std::string json_direction(JobResult& r, const Job& job, bool read) {
  const Direction d = direction_of(r, read);
  std::string percentiles;
  if (d.has_latency) {
    for (const double p : job.percentile_list) {
      char key[32];
      std::snprintf(key, sizeof(key), "%.6f", p);
      if (!percentiles.empty()) percentiles += ", ";
      percentiles += "\"" + std::string(key) + "\": " + std::to_string(r.latency.percentile(p));
    }
  }
  const bool l = d.has_latency;
  return "      \"" + std::string(read ? "read" : "write") + "\": {\"io_bytes\": " + std::to_string(d.bytes) +
         ", \"bw_bytes\": " + std::to_string(d.bw_bytes) + ", \"iops\": " + format("%.3f", d.iops) +
         ", \"runtime\": " + std::to_string(d.runtime_ms) +
         ", \"clat_ns\": {\"min\": " + std::to_string(l ? r.latency.min() : 0) +
         ", \"max\": " + std::to_string(l ? r.latency.max() : 0) +
         ", \"mean\": " + format("%.3f", l ? r.latency.mean() : 0) +
         ", \"stddev\": " + format("%.3f", l ? r.latency.stddev() : 0) +
         ", \"N\": " + std::to_string(l ? r.latency.count() : 0) + ", \"percentile\": {" + percentiles + "}}}";
}

std::string terse_direction(JobResult& r, const Job& job, bool read) {
  const Direction d = direction_of(r, read);
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

std::string report_normal(std::vector<JobResult>& results, const Invocation& invocation) {
  std::string out;
  for (JobResult& r : results) {
    const Job& job = job_of(invocation, r);
    const double seconds = r.window_seconds > 0 ? r.window_seconds : 1;
    out += r.name + ": (rw=" + rw_name(r.rw) + ", bs=" + std::to_string(job.bs) + ", iodepth=" +
           std::to_string(job.iodepth) + ", streams=" + std::to_string(job.streams) +
           ", ioengine=" + engine_name(r.engine) + ")\n";
    out += format("  ops=%.0f, iops=%.0f, write bw=%.2f MiB/s, read bw=%.2f MiB/s\n", static_cast<double>(r.ops),
                  static_cast<double>(r.ops) / seconds, static_cast<double>(r.bytes_written) / seconds / (1 << 20),
                  static_cast<double>(r.bytes_read) / seconds / (1 << 20));
    if (r.latency.count() > 0) {
      out += format("  lat (usec): min=%.1f, max=%.1f, avg=%.1f, stdev=%.1f\n", static_cast<double>(r.latency.min()) / 1e3,
                    static_cast<double>(r.latency.max()) / 1e3, r.latency.mean() / 1e3, r.latency.stddev() / 1e3);
      out += "  lat percentiles (usec):";
      for (const double p : job.percentile_list) {
        out += format(" %.2fth=%.1f", p, static_cast<double>(r.latency.percentile(p)) / 1e3);
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
             " bytes replayed, time p50=" + format("%.1f", r.resume_latency.percentile(50) / 1e3) +
             "us p99=" + format("%.1f", r.resume_latency.percentile(99) / 1e3) +
             "us max=" + format("%.1f", r.resume_latency.max() / 1e3) + "us\n";
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
    out += "    {\n      \"jobname\": " + json_string(r.name) + ",\n";
    out += json_direction(r, job, false) + ",\n";
    out += json_direction(r, job, true) + ",\n";
    out += "      \"ringmux\": {\"engine\": \"" + std::string(engine_name(r.engine)) + "\", \"rw\": \"" +
           rw_name(r.rw) + "\", \"errors\": " + std::to_string(r.errors) + ", \"error\": " +
           json_string(r.error_message) + ", \"server_confirmed_bytes\": " + std::to_string(r.server_confirmed_bytes) +
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

std::string report_terse(std::vector<JobResult>& results, const Invocation& invocation) {
  std::string out;
  for (JobResult& r : results) {
    const Job& job = job_of(invocation, r);
    std::string name = r.name;
    std::replace(name.begin(), name.end(), ';', '_');
    std::replace(name.begin(), name.end(), '\n', '_');
    out += std::to_string(terse_version) + ";" + ringmux_version_text() + ";" + name + ";" + engine_name(r.engine) +
           ";" + rw_name(r.rw) + ";" + std::to_string(r.errors) + ";";
    out += terse_direction(r, job, true) + ";";
    out += terse_direction(r, job, false) + ";";
    out += std::to_string(r.server_confirmed_bytes) + ";" + std::to_string(r.client_sent_bytes) + ";" +
           format("%.6f;%.6f", share(r, true), share(r, false)) + ";" + std::to_string(r.verify_mismatches) + ";" +
           std::to_string(r.verify_gaps) + ";" + std::to_string(r.verify_duplicates) + ";" +
           std::to_string(r.verified_messages) + ";" + std::to_string(r.resumes) + ";" +
           std::to_string(r.bytes_replayed) + "\n";
  }
  return out;
}

}  // namespace ringmux::loadgen
