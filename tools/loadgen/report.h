// Reports of ringmux-loadgen, built from results (final, or the copies of a status
// report) on the thread that prints them. The formats fio has:
//
// normal: text for people.
//
// json: fio's document (fio version, global options, jobs[] with jobname, groupid, job
// options, and per direction read / write / trim: io_bytes, bw_bytes, bw, iops, runtime,
// total_ios, slat_ns / clat_ns / lat_ns {min, max, mean, stddev, N, percentile}, bw_* and
// iops_* figures) plus a "ringmux" section per job. json+: the same with each latency's
// histogram bins (fio's "bins": the bucket's value in ns -> its count), which fio's
// fio_jsonplus_clat2csv reads. tools/loadgen/JSON.md documents every field;
// tests/check_loadgen_report.py checks the output against that schema, so change the
// three together.
//
// terse: one line per job, fields separated by ';', in this order (1-based; fio's terse
// idea, with ringmux's own version number and fields). Units: KiB = 1024 bytes, times in
// microseconds with three decimals (nanosecond resolution).
//    1  terse_version             1
//    2  ringmux_version           the project version, e.g. 0.1.0
//    3  jobname                   ';' in a name is written as '_'
//    4  ioengine                  ringmux | tcp
//    5  rw                        unary | write | read | bidi
//    6  errors                    failed operations
//    7-34   read section
//   35-62   write section, each of 28 fields:
//      +0  io_kbytes              payload moved in the window, KiB
//      +1  bw_kbytes              KiB/s
//      +2  iops                   operations/s, integer (0 in the direction that does not
//                                 carry the operations: see "Which direction" in JSON.md)
//      +3  runtime_ms             the window; 0 when the direction moved nothing
//      +4  clat_min_us
//      +5  clat_max_us
//      +6  clat_mean_us
//      +7  clat_stdev_us
//      +8 .. +27  clat percentiles, terse_percentile_slots fields "P%=VALUE_US"
//                 (e.g. "99.000000%=12.345"), the job's percentile_list in order; the
//                 first 20 if it is longer, "0%=0" in unused slots
//   63  server_confirmed_bytes    write streams: the server's count
//   64  client_sent_bytes         write streams: what the client wrote
//   65  stream_share_min          stream jobs: slowest stream's part of all stream bytes
//   66  stream_share_max          fastest stream's part
//   67  verify_errors             verify=1: payloads that failed their check
//   68  verify_gaps               sequence numbers skipped
//   69  verify_duplicates         sequence numbers seen twice
//   70  verified_messages         messages checked
//   71  resumes                   ringmux: session resumes of the job's connection
//   72  bytes_replayed            ringmux: bytes sent again by those resumes
// A direction without latency samples prints 0 for the clat fields and "0%=0" slots.
//
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "tools/loadgen/job.h"
#include "tools/loadgen/result.h"

namespace ringmux::loadgen {

// Bumped when a terse field is added, removed or moved.
constexpr int terse_version = 1;
// fio's count of percentile slots (FIO_IO_U_LIST_MAX_LEN): a fixed field count per line.
constexpr std::size_t terse_percentile_slots = 20;
constexpr std::size_t terse_header_fields = 6;
constexpr std::size_t terse_direction_fields = 8 + terse_percentile_slots;
constexpr std::size_t terse_ringmux_fields = 10;
constexpr std::size_t terse_field_count = terse_header_fields + 2 * terse_direction_fields + terse_ringmux_fields;
static_assert(terse_direction_fields == 28 && terse_field_count == 72, "update the field list above");

std::string report_normal(const std::vector<JobResult>& results, const Invocation& invocation);
// `plus`: json+ (with the histograms' bins).
std::string report_json(const std::vector<JobResult>& results, const Invocation& invocation, bool plus);
// One line per result, terse_field_count fields each, '\n'-terminated.
std::string report_terse(const std::vector<JobResult>& results, const Invocation& invocation);
// Every format of invocation.output_formats, in fio's order: terse, json (or json+), normal.
std::string report_all(const std::vector<JobResult>& results, const Invocation& invocation);

// fio's largest histogram bin (its FIO_IO_U_PLAT_NR-th bucket's value, ~17.1 s): json+
// bins above it are written under it, as fio's own histogram saturates there; fio's
// fio_jsonplus_clat2csv does not end on a larger key.
inline constexpr uint64_t fio_bin_ns_max = 17'112'760'320;

// The project version compiled in ("0.1.0"), as terse field 2 prints it.
const char* ringmux_version_text();

}  // namespace ringmux::loadgen
