// Job description of ringmux-loadgen, in fio's vocabulary, and its parsers: the command
// line (options before the first --name are global; --name starts a job) and INI job
// files ([global] and named sections, key=value lines, ';' or '#' comments, `include
// FILE` lines, ${NAME} replaced by the environment variable NAME).
//
// Jobs keep fio's order: the command line's jobs, then each job file's in the order the
// files are given. A job with `stonewall` starts a new group: it waits for every job
// before it to end (groups run one after another; the jobs of a group at once).
//
// Every error names the option and, for job files, the file and line. Pure functions but
// for reading job files and the environment: any thread. tools/ may throw, but these
// return a Result so that tests can check every error without exceptions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tools/loadgen/protocol.h"
#include "tools/tls_options.h"

namespace ringmux::loadgen {

enum class RwMode : uint8_t {
  unary,  // unary calls: bs-byte request, resp_bs-byte response
  write,  // client-to-server stream of bs-byte messages
  read,   // server-to-client stream
  bidi,   // both at once
  quorum, // quorum calls to every peer of --peers (a cluster of ringmux-serve --peers)
};
enum class IoEngine : uint8_t { ringmux, tcp };
// Report formats; --output-format takes several, separated by commas, printed in fio's
// order: terse, json (or json+), normal.
enum class OutputFormat : uint8_t {
  normal = 1 << 0,
  json = 1 << 1,
  json_plus = 1 << 2,  // json with the latency histograms' bins (fio's json+)
  terse = 1 << 3,
};
using OutputFormats = uint8_t;  // a set of OutputFormat bits
constexpr bool has_format(OutputFormats formats, OutputFormat format) noexcept {
  return (formats & static_cast<uint8_t>(format)) != 0;
}

// --status-interval's shortest period: a report copies every job's histograms (30 KiB
// each) and formats them; ten a second is already more than anyone reads.
inline constexpr uint64_t status_interval_ns_min = 100'000'000;
// --log_avg_msec's largest window: a day (a longer one averages over the whole run anyway).
inline constexpr uint64_t log_avg_ms_max = 86'400'000;
// Rate windows one job keeps (bytes, operations, latency per window: 40 bytes each), for
// fio's bw / iops statistics and the windowed logs: 4 Mi windows, 160 MiB, are an hour at
// log_avg_msec=1. A job bound by size alone that runs past them adds to the last window.
inline constexpr uint64_t rate_windows_max = uint64_t{1} << 22;

struct BsSplitEntry {
  uint32_t bytes = 0;
  uint32_t percent = 0;
};

struct Job {
  std::string name;
  RwMode rw = RwMode::unary;
  uint32_t bs = 4096;                 // fio's default block size
  std::optional<uint32_t> resp_bs;    // unary response size; default: bs
  std::vector<BsSplitEntry> bssplit;  // a mix of sizes; percents add up to 100
  uint32_t iodepth = 1;               // unary calls in flight per job
  uint32_t streams = 1;               // concurrent streams per job
  uint64_t stream_messages = 0;       // rw=write: messages per stream before a new one (0: one stream; tcp: connection)
  uint32_t numjobs = 1;               // clones of this job
  uint64_t runtime_ns = 0;            // 0: until size is reached (one of the two is needed)
  bool time_based = false;            // run for runtime even when size is reached
  uint64_t ramp_time_ns = 0;          // unmeasured warm-up
  uint64_t size_bytes = 0;            // 0: until runtime
  uint64_t rate_iops = 0;             // 0: closed loop; else open loop at this rate
  bool verify = false;                // stamp and hash payloads end to end
  std::vector<double> percentile_list = {1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99};
  std::vector<int> cpus_allowed;      // empty: any; ringmux: a client loop per CPU (runner.h)
  IoEngine ioengine = IoEngine::ringmux;
  bool group_reporting = false;
  bool own_connection = false;        // a connection of its own instead of the shared one
  bool stonewall = false;             // wait for the jobs before this one; a new group
  bool new_group = false;             // a new reporting group, without waiting (fio's new_group)
  uint32_t kb_base = 1024;            // fio's kb_base: what k, m, g mean in later sizes
  // fio's logs, written at the job's end as PREFIX_lat.N.log and so on (N: the job clone's
  // number from 1); an empty prefix is the job's name; no value: no log.
  std::optional<std::string> lat_log_prefix, bw_log_prefix, iops_log_prefix;
  uint64_t log_avg_ns = 0;            // 0: a lat log line per operation; else averages per window
  // The options set for this job as written ("job options" in the JSON), in order.
  std::vector<std::pair<std::string, std::string>> options_given;
  // rw=quorum: the cluster members called, the quorum ("majority", "all", "first" or a
  // count) and each quorum call's deadline.
  std::vector<std::string> peers;
  std::string quorum = "majority";
  uint64_t deadline_ns = 1'000'000'000;

  uint32_t response_bytes() const noexcept { return resp_bs.value_or(bs); }
};

struct Invocation {
  Job global;  // the [global] section / options before the first --name
  std::vector<Job> jobs;
  std::optional<std::string> host;  // none: an embedded server on another core
  uint16_t port = default_port;
  OutputFormats output_formats = static_cast<OutputFormats>(OutputFormat::normal);
  std::optional<std::string> output_path;  // --output: reports go there instead of stdout
  uint64_t status_interval_ns = 0;         // 0: no periodic reports
  std::optional<std::string> plot_path;
  // --tls-*: every ringmux connection (and the embedded server) over mutual TLS 1.3.
  mux::TlsOptions tls;
  // Options given before the first job ("global options" in the JSON), as written.
  std::vector<std::pair<std::string, std::string>> global_options;
  bool help = false;
};

struct ParseError {
  std::string message;  // "job file f.fio line 7: option 'bs': '12q' is not a size"
};

template <typename T>
struct Parsed {
  std::optional<T> value;
  ParseError error;
  bool ok() const noexcept { return value.has_value(); }
};

// Value parsers (fio conventions): durations as seconds or with us/ms/s/m/h/d ("30",
// "500ms", "2m"); CPU lists ("0,2-3"); percentile lists ("50:99:99.9"); bssplit
// ("4k/50:64k/50").
//
// parse_fio_size: fio's size rules, case-insensitive, an optional trailing b/B:
//   a suffix k, m, g, t, p (also "kb", "ki", "mb", ...) multiplies by kb_base^1..5;
//   a suffix kib, mib, gib, tib, pib multiplies by the other base: 1000 when kb_base is
//   1024 (fio's default, "for compatibility with old scripts"), 1024 when it is 1000.
// So with kb_base=1024: 4k = 4ki = 4kb = 4096 and 4kib = 4000; with kb_base=1000: 4k =
// 4000 and 4kib = 4096. A fraction must come to whole bytes ("1.5k" = 1536).
std::optional<uint64_t> parse_fio_size(std::string_view text, uint32_t kb_base);
// Sizes of the other tools (ringmux-serve, ringmux-chaos): k/m/g/t, kb/kib alike, 1024-based.
std::optional<uint64_t> parse_size(std::string_view text);
std::optional<uint64_t> parse_duration_ns(std::string_view text);
std::optional<std::vector<int>> parse_cpu_list(std::string_view text);
std::optional<std::vector<double>> parse_percentiles(std::string_view text);
std::optional<std::vector<BsSplitEntry>> parse_bssplit(std::string_view text, uint32_t kb_base = 1024);

// Applies one `key=value` to `job` (job options) or `invocation` (global-only options).
// Errors name the option.
std::optional<ParseError> apply_option(Invocation& invocation, Job& job, std::string_view key, std::string_view value);

// The command line: options before the first --name form the global job that every job
// starts from; `--name=N` starts a job; a bare argument is a job file, read and merged
// after the command line's jobs (each file starts from the command line's globals).
// `--help` sets help. At least one job results (a lone global set becomes job "job1").
Parsed<Invocation> parse_command_line(const std::vector<std::string>& args);

// Reads the text of a job file (or of an `include`d one); returns false when it cannot.
using ReadFile = bool (*)(const std::string& path, std::string& text);
// Looks up an environment variable for ${NAME}; nullptr when it is not set.
using GetEnv = const char* (*)(const char* name);

// A job file's text; `file_name` is used in errors and to find `include`d files (relative
// to its folder). `base` holds command-line globals and jobs, which the file's jobs follow.
Parsed<Invocation> parse_job_file(std::string_view text, std::string_view file_name, Invocation base = {},
                                  ReadFile read_file = nullptr, GetEnv get_env = nullptr);

// Job-file nesting allowed through `include` (a file including itself is caught by it).
inline constexpr int include_depth_max = 16;

// The reporting groups of `invocation`'s jobs (fio's groupid: stonewall or new_group starts
// one): each job's group number, from 0.
std::vector<uint32_t> job_groups(const Invocation& invocation);

// Every option with its default, for --help.
std::string help_text();

// The stream limit a connection needs for `streams` open at once (ours, and the embedded
// server's): the library's default, or more when the jobs' streams need it.
uint32_t streams_limit_for(uint64_t streams);
// Every stream of the invocation's ringmux stream jobs (clones included) open at once.
uint64_t ringmux_streams(const Invocation& invocation);

}  // namespace ringmux::loadgen
