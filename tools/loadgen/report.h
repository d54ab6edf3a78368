// Reports of ringmux-loadgen: fio-like text, and JSON shaped like fio's
// (jobs[].jobname, per direction io_bytes / bw_bytes / iops / clat_ns.mean and
// clat_ns.percentile{"50.000000": ...}) plus a "ringmux" section per job:
//   ringmux.engine            "ringmux" or "tcp"
//   ringmux.errors            failed operations
//   ringmux.error             the first error's text, "" when none
//   ringmux.server_confirmed_bytes / client_sent_bytes   stream jobs: equal when no
//                             byte was lost (write and bidi jobs)
//   ringmux.stream_share_min / stream_share_max   stream jobs (ringmux engine): the
//                             slowest / fastest stream's part of all stream bytes
//   ringmux.resumes, ringmux.bytes_replayed   0 until replay lands
#pragma once

#include <string>
#include <vector>

#include "tools/loadgen/job.h"
#include "tools/loadgen/runner.h"

namespace ringmux::loadgen {

std::string report_normal(std::vector<JobResult>& results, const Invocation& invocation);
std::string report_json(std::vector<JobResult>& results, const Invocation& invocation);

}  // namespace ringmux::loadgen
