// LoadServer: the server side of every loadgen mode, for ringmux-serve and for the
// embedded server that ringmux-loadgen starts when no --host is given.
//
// ringmux engine: an engine of one or more loops whose connections serve the handlers of
// tools/loadgen/protocol.h. Loop 0 listens and reads each new connection's HELLO; the
// session goes to the loop its HELLO names (mux/link/loop_placement.h), where it lives,
// and a resume of it lands there too. Each loop has its own acceptor, connections,
// handlers, message buffer and counters: nothing a message touches is shared between
// loops. tcp engine: a blocking accept thread and one thread per connection (the baseline
// has no event loop by design).
// start() and stop() are called from one control thread; totals() and per_loop() from any
// thread.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ringmux/base/histogram.h"
#include "ringmux/base/limits.h"
#include "ringmux/engine/engine.h"
#include "ringmux/engine/socket.h"
#include "ringmux/mux/link/acceptor.h"
#include "ringmux/mux/link/connection.h"
#include "ringmux/mux/rpc/registry.h"
#include "ringmux/cluster/node.h"
#include "tools/loadgen/protocol.h"

namespace ringmux::loadgen {

class MessageBuffer;

// What a server counted, as plain numbers: the sum over its loops (totals()) or one loop's
// (per_loop()).
struct ServerCounts {
  uint64_t connections = 0;  // totals: TCP connections accepted; per loop: connections it
                             // took over (new sessions and resumes that landed on it)
  uint64_t sessions = 0;
  uint64_t resumes = 0;
  uint64_t calls = 0;
  uint64_t bytes_received = 0;
  uint64_t bytes_sent = 0;
  uint64_t verify_errors = 0;
  uint64_t accepts_failed_no_fds = 0;
  uint64_t sessions_open = 0;  // sessions alive now
  uint64_t cpu_ns = 0;         // per loop: its thread's CPU time (ringmux engine)
  uint64_t loop_enters = 0;    // per loop: its io_uring_enter calls (engine::LoopStats::enters):
                               // calls / loop_enters is how many calls share one
};

// One loop's counters (or the tcp engine's): written by its own thread, read by any
// (relaxed: statistics). Aligned so that two loops' counters never share a cache line.
struct alignas(64) ServerStats {
  std::atomic<uint64_t> connections{0};  // TCP connections accepted (the listening loop's)
  std::atomic<uint64_t> sessions{0};     // ringmux: sessions started (a resume is not a new one)
  std::atomic<uint64_t> resumes{0};      // ringmux: sessions resumed on a new TCP connection
  std::atomic<uint64_t> calls{0};
  std::atomic<uint64_t> bytes_received{0};
  std::atomic<uint64_t> bytes_sent{0};
  std::atomic<uint64_t> verify_errors{0};  // verify=1: damaged, missing or repeated messages seen
  // Connections the listener could not take for want of file descriptors (EMFILE, ENFILE):
  // they wait in the backlog or are refused until others close.
  std::atomic<uint64_t> accepts_failed_no_fds{0};
  std::atomic<uint64_t> sessions_open{0};  // ringmux: sessions alive on this loop

  ServerCounts counts() const noexcept;
};

// The handlers a server times (protocol.h's handler ids), in CallTimes::by_handler order.
enum class TimedHandler : uint8_t { unary, sink, source, echo_stream };
inline constexpr std::size_t timed_handlers = 4;
const char* describe(TimedHandler handler) noexcept;

// How long the calls of one loop took, per handler, in nanoseconds: a unary call from its
// handler's start to its reply handed over (the server's own time, not the network's), a
// stream from its OPEN to its end. Recorded on the loop thread; read through
// LoadServer::snapshot().
struct CallTimes {
  std::array<Histogram, timed_handlers> by_handler;
  void merge(const CallTimes& other) noexcept {
    for (std::size_t i = 0; i < timed_handlers; i++) by_handler[i].merge(other.by_handler[i]);
  }
};

// One loop of a ringmux-engine server at one moment, copied on that loop.
struct LoopSnapshot {
  engine::LoopStats loop;
  // Plain server: its sessions' link counters, those alive and those closed (cluster
  // member: zero, its node keeps them).
  mux::LinkTotals link;
  bool link_counted = false;  // link holds this loop's sessions (a plain server's loop)
  std::vector<cluster::PeerSnapshot> peers;  // cluster member: the peers this loop owns
  CallTimes call_times;
};

// How a ringmux server runs and what it accepts from its clients.
struct ServeOptions {
  mux::ConnectionOptions connection;  // the limits of every accepted connection
  // Without peers: a plain server of `loops` loops (ringmux-serve --cpus, --loops); its
  // clients' sessions are spread over them by their HELLO. With peers the server joins a
  // cluster: a cluster::Node of `loops` loops keeps one session with each peer spread over
  // its loops (ringmux-serve --peers --loops), and serves the same handlers.
  std::vector<std::string> peers;
  uint32_t loops = 1;
  // How long each loop busy-polls before it sleeps (engine::LoopOptions::spin_ns; 0: never,
  // for loops that share their cores with other busy threads).
  uint64_t loop_spin_ns = limits::loop_spin_ns_default;
  // The largest message a client may ask the server to build or reassemble (a unary
  // response, a source stream's messages, a verified sink's messages); larger asks are
  // refused (protocol.h). Each loop holds one message buffer of at most this. The
  // embedded server of ringmux-loadgen serves its own jobs: the protocol's bound.
  uint32_t message_bytes_allowed = loadgen::message_bytes_max;
  // Time every call into the loops' CallTimes: two clock reads a call or stream, on the
  // path the benchmarks measure, so only when someone reads them (ringmux-serve --metrics).
  bool time_calls = false;
  // The stage every accepted connection (and, with peers, every dialed one) passes: mutual
  // TLS (tools/tls_stage.h); nullptr: plain TCP. With several loops loop 0 runs each
  // handshake and hands the session's transport to the loop that owns it.
  std::shared_ptr<mux::Handshake> handshake;
};

class LoadServer {
 public:
  // Listens on `address` ("127.0.0.1:0" picks a port) with options.loops loops, loop i
  // pinned to cpus[i] (loops past the list's end are not pinned; CPUs past options.loops
  // are not used). Errors come back as text (tools may report and exit).
  static std::unique_ptr<LoadServer> start_ringmux(const std::string& address, const std::vector<int>& cpus,
                                                   std::string& error, const ServeOptions& options = {});
  // The raw baseline; a hello asking for messages above `message_bytes_allowed` closes its
  // connection.
  static std::unique_ptr<LoadServer> start_tcp(const std::string& address, int cpu, std::string& error,
                                               uint32_t message_bytes_allowed = loadgen::message_bytes_max);
  ~LoadServer();

  uint16_t port() const noexcept { return port_; }
  // Each loop's snapshot, from any thread but a loop's own (each copy runs on its loop,
  // which waits for it: a control path), and not while stop() runs. Empty for the tcp
  // engine and once stopped; call_times empty unless ServeOptions::time_calls.
  std::vector<LoopSnapshot> snapshot();
  // The counts summed over the loops (cluster mode: connections, sessions and resumes are
  // known once stopped). Any thread; not concurrently with stop().
  ServerCounts totals();
  // Each loop's counts, CPU time and io_uring_enter calls, in loop order (empty for the
  // tcp engine); after stop(), as they were when it stopped. Any thread but the loops'
  // (it asks each loop for its enters and waits); not concurrently with stop().
  std::vector<ServerCounts> per_loop();
  // Closes the listener and every connection, and waits for them.
  void stop();

 private:
  LoadServer() = default;
  struct RingmuxSide;

  uint16_t port_ = 0;
  ServerStats stats_;  // the tcp engine's; in cluster mode, the node's totals once stopped
  // ringmux engine
  std::unique_ptr<engine::Engine> engine_;
  std::vector<std::unique_ptr<ServerStats>> loop_stats_;  // one per loop, outlive the loops
  std::vector<uint64_t> loop_cpu_ns_stopped_;             // each loop's CPU time at stop()
  std::vector<uint64_t> loop_enters_stopped_;             // and its io_uring_enter calls
  std::vector<std::unique_ptr<RingmuxSide>> sides_;       // plain server: one per loop
  std::unique_ptr<cluster::Node> node_;                   // cluster mode
  std::vector<std::unique_ptr<MessageBuffer>> messages_;  // cluster mode: one per loop
  std::vector<std::unique_ptr<CallTimes>> call_times_;     // one per loop
  // tcp engine
  int listen_fd_ = -1;
  uint32_t tcp_message_bytes_allowed_ = 0;
  std::thread accept_thread_;
  std::vector<std::thread> connection_threads_;
  std::mutex connection_fds_mutex_;
  std::vector<int> connection_fds_;  // shut down by stop() so that no thread blocks forever
  std::atomic<bool> stopping_{false};
  bool stopped_ = false;
};

}  // namespace ringmux::loadgen
