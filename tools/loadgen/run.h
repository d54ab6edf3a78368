// Runs a parsed ringmux-loadgen invocation, from the checks against this machine to the
// final report: the embedded servers (without --host), the jobs' groups one after another
// (stonewall; in a group the ringmux-engine jobs, then the tcp-engine ones), periodic
// reports (--status-interval), SIGINT / SIGTERM (the jobs end, and the report shows what
// ran), the log files, the reports on stdout or --output, the plot.
// Main thread, before any other thread is started (it blocks the two signals for all).
#pragma once

#include "tools/loadgen/job.h"

namespace ringmux::loadgen {

// The process's exit status: 0 when no operation failed and verify found nothing; 1 when
// one did, or a file could not be written; 2 for options this machine refuses (a CPU of
// cpus_allowed this process may not run on).
int run_invocation(const Invocation& invocation);

}  // namespace ringmux::loadgen
