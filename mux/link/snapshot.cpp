#include "ringmux/mux/link/snapshot.h"

#include "ringmux/mux/link/connection.h"

namespace ringmux::mux {

void LinkTotals::add(const ConnectionSnapshot& snapshot) noexcept {
  connections++;
  connections_connected += snapshot.connected ? 1 : 0;
  streams_open += snapshot.streams_open;
  rpc_bytes_buffered += snapshot.rpc_bytes_buffered;
  streams_opened_local += snapshot.streams_opened_local;
  streams_opened_remote += snapshot.streams_opened_remote;
  streams_refused += snapshot.streams_refused;
  bytes_sent += snapshot.bytes_sent;
  bytes_received += snapshot.bytes_received;
  frames_sent += snapshot.frames_sent;
  frames_received += snapshot.frames_received;
  batches_sent += snapshot.batches_sent;
  floods += snapshot.floods;
  flow_control_stalls += snapshot.flow_control_stalls;
  transports_lost += snapshot.transports_lost;
  resumes += snapshot.resumes;
  bytes_replayed += snapshot.bytes_replayed;
  merge_latency(snapshot.call_latency);
}

void LinkTotals::merge_latency(const std::optional<Histogram>& latency) noexcept {
  if (!latency) return;
  if (!call_latency) call_latency.emplace();
  call_latency->merge(*latency);
}

void LinkTotals::add(const LinkTotals& totals) noexcept {
  connections += totals.connections;
  connections_connected += totals.connections_connected;
  streams_open += totals.streams_open;
  rpc_bytes_buffered += totals.rpc_bytes_buffered;
  streams_opened_local += totals.streams_opened_local;
  streams_opened_remote += totals.streams_opened_remote;
  streams_refused += totals.streams_refused;
  bytes_sent += totals.bytes_sent;
  bytes_received += totals.bytes_received;
  frames_sent += totals.frames_sent;
  frames_received += totals.frames_received;
  batches_sent += totals.batches_sent;
  floods += totals.floods;
  flow_control_stalls += totals.flow_control_stalls;
  transports_lost += totals.transports_lost;
  resumes += totals.resumes;
  bytes_replayed += totals.bytes_replayed;
  merge_latency(totals.call_latency);
}

ConnectionSnapshot take_snapshot(Connection& connection) {
  ConnectionSnapshot snapshot;
  connection.loop().run_sync([&] { snapshot = connection.snapshot(); });
  return snapshot;
}

ConnectionSnapshot Connection::snapshot() const noexcept {
  const SessionStats& session = session_.stats();
  const ResumeStats resume = resume_stats();
  ConnectionSnapshot snapshot;
  snapshot.id = id_;
  snapshot.dialer = session_.dialer();
  snapshot.connected = connected();
  snapshot.ended = ended_;
  snapshot.streams_open = session_.streams_open();
  snapshot.rpc_bytes_buffered = rpc_bytes_buffered_;
  snapshot.streams_opened_local = session.streams_opened_local;
  snapshot.streams_opened_remote = session.streams_opened_remote;
  snapshot.streams_refused = session.streams_refused;
  snapshot.bytes_sent = bytes_sent_;
  snapshot.bytes_received = bytes_received_;
  snapshot.frames_sent = session.frames_sent;
  snapshot.frames_received = session.frames_received;
  snapshot.batches_sent = batches_sent_;
  snapshot.floods = session.floods;
  snapshot.flow_control_stalls = session.flow_control_stalls;
  snapshot.transports_lost = resume.transports_lost;
  snapshot.resumes = resume.resumes;
  snapshot.bytes_replayed = session.bytes_replayed;
  if (call_latency_ != nullptr) snapshot.call_latency = *call_latency_;
  return snapshot;
}

}  // namespace ringmux::mux
