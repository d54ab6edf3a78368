// Job description of ringmux-loadgen, in fio's vocabulary, and its parsers: the command
// line (options before the first --name are global; --name starts a job) and INI job
// files ([global] and named sections, key=value lines, ';' or '#' comments).
//
// Every error names the option and, for job files, the file and line. Pure functions:
// any thread. tools/ may throw, but these return a Result so that tests can check every
// error without exceptions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tools/loadgen/protocol.h"

namespace ringmux::loadgen {

enum class RwMode : uint8_t {
  unary,  // unary calls: bs-byte request, resp_bs-byte response
  write,  // client-to-server stream of bs-byte messages
  read,   // server-to-client stream
  bidi,   // both at once
  quorum, // quorum calls to every peer of --peers (a cluster of ringmux-serve --peers)
};
enum class IoEngine : uint8_t { ringmux, tcp };
enum class OutputFormat : uint8_t { normal, json, terse };

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
  uint64_t stream_messages = 0;       // rw=write: messages per stream before a new one (0: one stream)
  uint32_t numjobs = 1;               // clones of this job
  uint64_t runtime_ns = 0;            // 0: until size is reached (one of the two is needed)
  uint64_t ramp_time_ns = 0;          // unmeasured warm-up
  uint64_t size_bytes = 0;            // 0: until runtime
  uint64_t rate_iops = 0;             // 0: closed loop; else open loop at this rate
  bool verify = false;                // stamp and hash payloads end to end
  std::vector<double> percentile_list = {1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99};
  std::vector<int> cpus_allowed;      // empty: any (the runner pins to the first one so far)
  IoEngine ioengine = IoEngine::ringmux;
  bool group_reporting = false;
  bool own_connection = false;        // a connection of its own instead of the shared one
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
  OutputFormat output_format = OutputFormat::normal;
  std::optional<std::string> plot_path;
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

// Value parsers (fio conventions): sizes with k/m/g suffixes in base 1024 ("4k", "1M",
// "64KiB"); durations as seconds or with us/ms/s/m/h ("30", "500ms", "2m"); CPU lists
// ("0,2-3"); percentile lists ("50:99:99.9"); bssplit ("4k/50:64k/50").
std::optional<uint64_t> parse_size(std::string_view text);
std::optional<uint64_t> parse_duration_ns(std::string_view text);
std::optional<std::vector<int>> parse_cpu_list(std::string_view text);
std::optional<std::vector<double>> parse_percentiles(std::string_view text);
std::optional<std::vector<BsSplitEntry>> parse_bssplit(std::string_view text);

// Applies one `key=value` to `job` (job options) or `invocation` (global-only options).
// Errors name the option.
std::optional<ParseError> apply_option(Invocation& invocation, Job& job, std::string_view key, std::string_view value);

// The command line: options before the first --name form the global job that every job
// starts from; `--name=N` starts a job; a bare argument is a job file, read and merged.
// `--help` sets help. At least one job results (a lone global set becomes job "job1").
Parsed<Invocation> parse_command_line(const std::vector<std::string>& args);

// A job file's text; `file_name` is used in errors. `base` holds command-line globals.
Parsed<Invocation> parse_job_file(std::string_view text, std::string_view file_name, Invocation base = {});

// Every option with its default, for --help.
std::string help_text();

// The stream limit a connection needs for `streams` open at once (ours, and the embedded
// server's): the library's default, or more when the jobs' streams need it.
uint32_t streams_limit_for(uint64_t streams);
// Every stream of the invocation's ringmux stream jobs (clones included) open at once.
uint64_t ringmux_streams(const Invocation& invocation);

}  // namespace ringmux::loadgen
