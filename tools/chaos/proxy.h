// Proxy: the TCP fault-injection proxy of ringmux-chaos, as an object that tests start,
// steer and stop, and that the ringmux-chaos program wraps.
//
// Each accepted client connection gets its own connection to the upstream; the pair's
// two directions (lanes) are forwarded through bounded buffers with the faults of
// faults.h applied. One thread runs the event loop (poll(2), non-blocking sockets; the
// project's io_uring engine is deliberately not used, so that the injector does not share
// the engine's bugs). Invariant: only the loop thread touches sockets and pairs; other
// threads talk to it through a mutex-guarded command block and an eventfd wake-up.
//
// start() from any thread; every other member from any thread except that stop() and
// the destructor must not run concurrently with each other.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "tools/chaos/faults.h"

namespace ringmux::chaos {

// Live pairs at most. Each holds two lanes of lane_bytes, so this bounds the proxy's
// memory (128 MiB); past it the listener is not polled and clients wait in the backlog.
inline constexpr uint32_t pairs_max = 256;
static_assert(uint64_t{pairs_max} * 2 * lane_bytes <= (128ull << 20));

struct Endpoint {
  std::string host = "127.0.0.1";  // IPv4, dotted
  uint16_t port = 0;
};

struct ProxyOptions {
  Endpoint listen;    // port 0: the kernel picks one (see Proxy::port())
  Endpoint upstream;  // where each accepted connection is forwarded
  Faults faults;
  // Every random choice (jitter, slice sizes, corrupted bits) derives from the seed, the
  // pair's number and the direction. Corruption depends only on byte offsets, so the same
  // seed corrupts the same bits of the same stream; timing-driven choices may differ.
  uint64_t seed = 0;
};

// Counts of one direction over all pairs.
struct DirectionStats {
  uint64_t bytes_received = 0;   // read from the source side
  uint64_t bytes_forwarded = 0;  // written to the destination side
  uint64_t bytes_discarded = 0;  // read but never forwarded: blackhole, cut, reset, abort
  uint64_t bytes_delayed = 0;    // read while latency or jitter was set
  uint64_t sends = 0;            // send calls that moved bytes (slicing shows here)
  uint64_t bits_flipped = 0;
};

// A snapshot. Each counter is read atomically; counters are not read at one instant.
struct ProxyStats {
  uint64_t connections_accepted = 0;
  uint64_t connections_active = 0;
  uint64_t connect_failures = 0;  // upstream refused or failed: the client was reset
  uint64_t resets = 0;            // pairs aborted by a fault (reset-every, reset_all)
  uint64_t cuts = 0;              // pairs closed by a fault (cut-every, cut-after-bytes, cut_all)
  uint64_t aborts = 0;            // pairs ended by an error on one side, passed on as RST
  uint64_t closes = 0;            // pairs that ended on their own (both sides closed)
  // What stopped the proxy from serving, for its error messages: accept(2) failures that
  // pause accepting (out of descriptors or memory), and the errno of each kind's latest
  // failure (0: none yet; connect's counts in connect_failures).
  uint64_t accept_failures = 0;
  int accept_errno_last = 0;
  int connect_errno_last = 0;
  DirectionStats up;
  DirectionStats down;
};

// The snapshot as one JSON object (the --stats=json output) and as aligned text.
std::string stats_json(const ProxyStats& stats);
std::string stats_text(const ProxyStats& stats);

class Proxy {
 public:
  // Binds and listens on options.listen, checks options.faults, and starts the loop
  // thread. Returns nullptr with `error` set when an address does not parse, the faults
  // are out of range (check_faults), or socket/bind/listen/eventfd fail.
  static std::unique_ptr<Proxy> start(const ProxyOptions& options, std::string& error);
  ~Proxy();  // stop()
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  uint16_t port() const noexcept { return port_; }
  ProxyStats stats() const noexcept;

  // Runtime controls. Each takes effect on the loop's next iteration (promptly: the loop
  // is woken), not before the call returns; but always before the loop handles what a
  // poll reports after the call returned. So bytes a peer sends after the call (into an
  // idle connection) are handled under the new setting.
  void reset_all();  // abort every live pair with RST, as reset-every does
  void cut_all();    // close every live pair in order, as cut-every does
  // Forces a blackhole on the direction(s) for every pair, live and future, on top of
  // blackhole_after_ns; false lifts the forcing (bytes discarded meanwhile stay lost).
  void set_blackhole(Direction direction, bool on);
  // Replaces the fault set for live and future pairs (deadlines count from each pair's
  // accept, so a shorter reset period may reset old pairs at once). False with `error`
  // set when check_faults rejects it; the old faults then stay.
  bool set_faults(const Faults& faults, std::string& error);

  // Stops the loop, closes every socket and joins the thread. Returns within one loop
  // iteration (bounded work, no blocking call other than the woken poll). Idempotent.
  void stop();

 private:
  class Loop;
  Proxy() = default;

  uint16_t port_ = 0;
  std::unique_ptr<Loop> loop_;
  std::thread thread_;
};

}  // namespace ringmux::chaos
