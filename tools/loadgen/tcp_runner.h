// The tcp engine of ringmux-loadgen: the raw baseline, blocking sockets, no framing, no
// multiplexing. Each unary clone is one connection (iodepth requests pipelined on it; a
// sender thread beside the reader with rate_iops); each stream is a connection and a
// thread of its own (a bidi stream has a writer thread beside its reader), counting into
// a part of the clone's result, merged when the clone is done.
//
// Unary calls are echoed (the response is the request's bytes) unless resp_bs asks for
// another size: then each request carries an 8-byte header naming its own size and the
// response's (protocol.h, tcp_mode_call), the least framing that can say it.
// Called from the main thread through run_clones().
#pragma once

#include <vector>

#include "tools/loadgen/runner.h"

namespace ringmux::loadgen {

void run_tcp_clones(const std::vector<CloneRun>& clones, const RunTarget& target, Progress* progress, RunControl& control);

}  // namespace ringmux::loadgen
