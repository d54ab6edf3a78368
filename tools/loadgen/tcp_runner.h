// The tcp engine of ringmux-loadgen: the raw baseline, blocking sockets, no framing, no
// multiplexing. Each unary clone is one connection (iodepth requests pipelined on it; a
// sender thread beside the reader with rate_iops); each stream is a connection and a
// thread of its own (a bidi stream has a writer thread beside its reader), counting into
// a part of the clone's result, merged when the clone is done.
//
// Unary calls are echoed (the response is the request's bytes) when every response has its
// request's size; when not (resp_bs other than bs, or a bssplit mix whose responses are
// resp_bs, by default bs, as on ringmux) each request carries an 8-byte header naming its
// own size and the response's (protocol.h, tcp_mode_call), the least framing that says it.
// Called from the main thread through run_clones().
#pragma once

#include <vector>

#include "tools/loadgen/runner.h"

namespace ringmux::loadgen {

void run_tcp_clones(const std::vector<CloneRun>& clones, const RunTarget& target, Progress* progress, RunControl& control);

}  // namespace ringmux::loadgen
