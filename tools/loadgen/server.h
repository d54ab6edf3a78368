// LoadServer: the server side of every loadgen mode, for ringmux-serve and for the
// embedded server that ringmux-loadgen starts when no --host is given.
//
// ringmux engine: a listener on one engine loop whose connections serve the handlers of
// tools/loadgen/protocol.h. tcp engine: a blocking accept thread and one thread per
// connection (the baseline has no event loop by design).
// start() and stop() are called from one control thread; stats() from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "engine/socket.h"
#include "mux/acceptor.h"
#include "mux/connection.h"
#include "mux/node.h"

namespace ringmux::loadgen {

struct ServerStats {
  std::atomic<uint64_t> connections{0};  // TCP connections accepted
  std::atomic<uint64_t> sessions{0};     // ringmux: sessions started (a resume is not a new one)
  std::atomic<uint64_t> resumes{0};      // ringmux: sessions resumed on a new TCP connection
  std::atomic<uint64_t> calls{0};
  std::atomic<uint64_t> bytes_received{0};
  std::atomic<uint64_t> bytes_sent{0};
  std::atomic<uint64_t> verify_errors{0};  // verify=1: damaged, missing or repeated messages seen
};

class LoadServer {
 public:
  // Listens on `address` ("127.0.0.1:0" picks a port). The loops are pinned to `cpus` in
  // order (empty: none pinned). Errors come back as text (tools may report and exit).
  // `options` sets the limits of every accepted connection (streams, windows, keepalive).
  // Without `peers`: a plain server on one loop. With `peers` the server joins a cluster: a
  // mux::Node of `loops` loops listens on `address`, keeps one session with each peer
  // spread over its loops (ringmux-serve --peers --loops), and serves the same handlers.
  static std::unique_ptr<LoadServer> start_ringmux(const std::string& address, const std::vector<int>& cpus,
                                                   std::string& error, const mux::ConnectionOptions& options = {},
                                                   const std::vector<std::string>& peers = {}, uint32_t loops = 1);
  static std::unique_ptr<LoadServer> start_tcp(const std::string& address, int cpu, std::string& error);
  ~LoadServer();

  uint16_t port() const noexcept { return port_; }
  const ServerStats& stats() const noexcept { return stats_; }
  // Closes the listener and every connection, and waits for them.
  void stop();

 private:
  LoadServer() = default;
  struct RingmuxSide;

  uint16_t port_ = 0;
  ServerStats stats_;
  // ringmux engine
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<RingmuxSide> side_;
  std::unique_ptr<mux::Node> node_;                      // cluster mode
  std::vector<std::vector<std::byte>> response_pools_;  // cluster mode: one per loop
  // tcp engine
  int listen_fd_ = -1;
  std::thread accept_thread_;
  std::vector<std::thread> connection_threads_;
  std::mutex connection_fds_mutex_;
  std::vector<int> connection_fds_;  // shut down by stop() so that no thread blocks forever
  std::atomic<bool> stopping_{false};
  bool stopped_ = false;
};

}  // namespace ringmux::loadgen
