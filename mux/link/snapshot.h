// Snapshots of the link's statistics: plain structs copied out of a connection, which any
// thread may then read, add up and print (a metrics endpoint, a periodic summary).
//
// A connection's counters live on its loop; Connection::snapshot() copies them there, and
// take_snapshot() gets one from any other thread by running that copy on the loop
// (engine::Loop::run_sync: a control path, one post and one wake-up per call). Whoever owns
// the connections of a loop (an application's server, cluster::Manager) adds their
// snapshots into a LinkTotals; counters of connections that are gone are theirs to keep
// (LinkTotals::add of the last snapshot, taken in on_connection_closed).
#pragma once

#include "ringmux/base/histogram.h"

#include <cstdint>
#include <optional>

namespace ringmux::mux {

class Connection;

// One connection, at one moment. Counters only grow over the connection's life; the
// gauges (marked) say what holds now.
struct ConnectionSnapshot {
  uint64_t id = 0;            // Connection::id()
  bool dialer = false;
  bool connected = false;     // gauge: a transport is up and its handshake complete
  bool ended = false;         // gauge: the session is over for good
  uint64_t streams_open = 0;  // gauge
  uint64_t rpc_bytes_buffered = 0;  // gauge: the RPC layer's buffered requests and replies
  uint64_t streams_opened_local = 0;
  uint64_t streams_opened_remote = 0;
  uint64_t streams_refused = 0;  // OPENs of the peer refused (over the stream limit, after GOAWAY)
  uint64_t bytes_sent = 0;       // handed to the transport, replays included
  uint64_t bytes_received = 0;   // from the transport
  uint64_t frames_sent = 0;
  uint64_t frames_received = 0;
  uint64_t batches_sent = 0;     // sends (each one batch of frames)
  uint64_t floods = 0;           // flood limits the peer hit
  uint64_t flow_control_stalls = 0;  // writes cut short by the peer's credit
  uint64_t transports_lost = 0;  // TCP connections that broke under a resumable session
  uint64_t resumes = 0;
  uint64_t bytes_replayed = 0;
  // Latencies of its successful unary calls, in ns, when it records them
  // (ConnectionOptions::record_call_latency) and has made one.
  std::optional<Histogram> call_latency;
};

// The sum of many connections' snapshots (one loop's, one server's).
struct LinkTotals {
  uint64_t connections = 0;            // snapshots added
  uint64_t connections_connected = 0;  // gauge, of those
  uint64_t streams_open = 0;           // gauge
  uint64_t rpc_bytes_buffered = 0;     // gauge
  uint64_t streams_opened_local = 0;
  uint64_t streams_opened_remote = 0;
  uint64_t streams_refused = 0;
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  uint64_t frames_sent = 0;
  uint64_t frames_received = 0;
  uint64_t batches_sent = 0;
  uint64_t floods = 0;
  uint64_t flow_control_stalls = 0;
  uint64_t transports_lost = 0;
  uint64_t resumes = 0;
  uint64_t bytes_replayed = 0;

  void add(const ConnectionSnapshot& snapshot) noexcept;
  // Adds another sum (one loop's totals into a server's).
  void add(const LinkTotals& totals) noexcept;
  std::optional<Histogram> call_latency;  // merged from the connections that record it
  // Merges one connection's (or sum's) call latencies, if it has them.
  void merge_latency(const std::optional<Histogram>& latency) noexcept;
};

// Connection::snapshot() from any thread: on the connection's loop thread at once, else run
// there while the caller waits. The connection must stay alive until this returns; not
// from a thread its loop may be waiting on.
ConnectionSnapshot take_snapshot(Connection& connection);

}  // namespace ringmux::mux
