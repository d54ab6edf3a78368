// The resume simulation's parts (tests/mux/link/test_resume_sim.cpp says what it proves):
// the run's plan, the simulated network with its transports and dialer (SimTransport,
// SimDialer), the applications (App) and the simulation (Sim), which runs the real
// mux::Connection on both sides over a simulated engine::Loop. Defined in sim_app.cpp,
// sim_net.cpp and sim.cpp.
#pragma once

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t held by value
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <queue>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "ringmux/base/assert.h"
#include "ringmux/base/limits.h"
#include "ringmux/engine/loop.h"
#include "ringmux/mux/link/connection.h"
#include "ringmux/mux/link/transport.h"
#include "ringmux/mux/session/session.h"
#include "ringmux/replay/handshake.h"
#include "tests/support.h"
#include "ringmux/wire/codec.h"

namespace ringmux::mux::sim {


using Bytes = std::vector<std::byte>;

constexpr uint64_t us_ns = 1000;
constexpr uint64_t ms_ns = 1000 * us_ns;
constexpr uint64_t s_ns = 1000 * ms_ns;
constexpr std::size_t kib = 1024;

// ---- the link's options ----------------------------------------------------------------

// Keepalive interval and dead-peer timeout (ConnectionOptions), scaled to the simulated
// latencies (at most 2 ms) so that a dead connection is found within tens of simulated
// milliseconds; the defaults' relation holds: dead after three intervals of silence. The
// resume timeout, redial backoff, HELLO timeout and frame completion timeout are the
// library's defaults.
constexpr uint64_t keepalive_interval_ns = 20 * ms_ns;
constexpr uint64_t dead_peer_timeout_ns = 3 * keepalive_interval_ns;

// ---- the run's bounds --------------------------------------------------------------------

// A run that has not finished after this many events or this much simulated time does not
// converge (a failure). A run takes ~300 events and ~0.1 s simulated on average, the
// longest of 2000 ~2000 events and ~1.1 s; a session that cannot resume fails at
// resume_timeout_ns, before this bound.
constexpr uint64_t run_events_max = 200'000;
constexpr uint64_t run_time_ns_max = 30 * s_ns;
static_assert(run_time_ns_max > 2 * limits::resume_timeout_ns_default, "a lost session fails before the run does");

// Faults one run may inject at most: each new connection draws one (two times in three)
// while the budget lasts (a refused connect counts as one), and the connection that is
// current at a few random moments breaks.
constexpr uint32_t run_faults_max = 8;
constexpr uint32_t run_breaks_max = 6;
constexpr uint64_t run_breaks_window_ns = 150 * ms_ns;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool sanitized = true;
#else
constexpr bool sanitized = false;
#endif
#ifdef __OPTIMIZE__
constexpr bool optimized = true;
#else
constexpr bool optimized = false;
#endif
// Seeds per test run: 2000 in an optimized build; sanitizers and unoptimized builds make
// each run several times slower and get fewer. RINGMUX_SIM_SEEDS overrides.
constexpr uint64_t seeds_default = optimized && !sanitized ? 2000 : 300;

constexpr int dialer = 0;
constexpr int acceptor = 1;
inline const char* side_name(int side) { return side == dialer ? "dialer" : "acceptor"; }

// splitmix64: a fixed generator, so that a seed means the same run everywhere (the
// standard distributions are not specified bit for bit).
class Random {
 public:
  explicit Random(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  uint64_t below(uint64_t n) { return n == 0 ? 0 : next() % n; }
  uint64_t between(uint64_t low, uint64_t high) { return low + below(high - low + 1); }
  bool one_in(uint64_t n) { return below(n) == 0; }

 private:
  uint64_t state_;
};

// The bytes of one direction of one stream: position-addressable, so the receiver checks a
// slice where it lands.
inline void fill_content(uint64_t key, uint64_t offset, std::span<std::byte> out) {
  std::size_t i = 0;
  while (i < out.size()) {
    const uint64_t position = offset + i;
    uint64_t word = key ^ ((position / 8) * 0x9e3779b97f4a7c15ull);
    word = (word ^ (word >> 31)) * 0xbf58476d1ce4e5b9ull;
    word ^= word >> 29;
    const std::size_t skip = position % 8;
    const std::size_t n = std::min<std::size_t>(8 - skip, out.size() - i);
    std::memcpy(out.data() + i, reinterpret_cast<const std::byte*>(&word) + skip, n);
    i += n;
  }
}

// ---- what a run does --------------------------------------------------------------------

struct StreamPlan {
  bool unary = false;      // a request, then the response once the request has ended
  int opener = dialer;
  uint64_t bytes[2] = {};  // what each side sends on it
  uint64_t initial = 0;    // the opener's bytes that go with the OPEN
  bool end_with_open = false;
  uint64_t open_ns = 0;
  uint64_t key[2] = {};  // content of each side's direction
};

struct Plan {
  SessionOptions options;  // both sides' (the role and the session id set per side)
  std::vector<StreamPlan> streams;
  uint64_t latency_ns = 0;  // a pipe's base latency; each delivery adds up to as much again
  uint32_t faults = 0;      // faults drawn by new connections
  std::vector<uint64_t> breaks_ns;  // when the current connection breaks
};

inline uint64_t draw_size(Random& random) {
  switch (random.below(16)) {
    case 0:
      return 0;
    case 1:
    case 2:
      return random.below(512 * kib);
    case 3:
    case 4:
    case 5:
    case 6:
      return random.below(64 * kib);
    default:
      return random.below(4 * kib);
  }
}

inline Plan draw_plan(uint64_t seed, Random& random) {
  Plan plan;
  // Small bounds make back-pressure and flow control part of most runs.
  const uint64_t replay_bounds[] = {16 * kib, 64 * kib, 256 * kib, limits::replay_bytes_max};
  plan.options.replay_bytes_max = replay_bounds[random.below(4)];
  const uint32_t stream_windows[] = {limits::stream_window_bytes_min, 64 * kib, limits::stream_window_bytes_initial};
  plan.options.stream_window_bytes = stream_windows[random.below(3)];
  plan.options.connection_window_bytes = std::max<uint32_t>(
      plan.options.stream_window_bytes,
      random.one_in(2) ? limits::connection_window_bytes_min : limits::connection_window_bytes_initial);
  plan.options.resumable = true;
  plan.latency_ns = random.between(5 * us_ns, 1 * ms_ns);
  plan.faults = static_cast<uint32_t>(random.below(run_faults_max + 1));
  for (uint64_t i = random.below(run_breaks_max + 1); i > 0; i--) plan.breaks_ns.push_back(random.below(run_breaks_window_ns));
  const std::size_t streams = random.between(2, 16);
  for (std::size_t k = 0; k < streams; k++) {
    StreamPlan s;
    s.unary = random.one_in(3);
    s.opener = random.one_in(3) ? acceptor : dialer;
    const int peer = 1 - s.opener;
    if (s.unary) {
      // A request usually fits the first window; sometimes its OPEN carries only part.
      s.bytes[s.opener] = random.one_in(8) ? random.below(40 * kib) : random.below(2 * kib);
      s.bytes[peer] = draw_size(random);
      s.initial = s.bytes[s.opener];
      s.end_with_open = true;
    } else {
      s.bytes[s.opener] = draw_size(random);
      s.bytes[peer] = random.one_in(3) ? 0 : draw_size(random);
      s.initial = std::min<uint64_t>(s.bytes[s.opener], random.one_in(2) ? 0 : random.below(24 * kib));
      s.end_with_open = random.one_in(2);
    }
    s.open_ns = random.below(40 * ms_ns);
    for (int side : {dialer, acceptor}) s.key[side] = seed ^ (k * 0x2545f4914f6cdd1dull) ^ (uint64_t(side + 1) << 56);
    plan.streams.push_back(s);
  }
  return plan;
}

// What the runs exercised, summed over seeds: the test fails when a fault kind it claims
// to cover never happened.
struct Coverage {
  uint64_t runs = 0;
  uint64_t events = 0;
  uint64_t simulated_ns = 0;
  uint64_t events_run_max = 0;  // the longest run, against the bounds above
  uint64_t simulated_ns_run_max = 0;
  uint64_t faults = 0;
  uint64_t transports_lost = 0;
  uint64_t dead_peers = 0;        // transports ended by the keepalive's dead-peer timeout
  uint64_t connect_failures = 0;
  uint64_t resumes = 0;           // HELLOs the acceptor resumed the session for
  uint64_t bytes_replayed = 0;    // held bytes sent again, both sides
  uint64_t stale_hellos = 0;      // HELLOs of a superseded generation, ignored
  uint64_t live_superseded = 0;   // a newer HELLO replaced a transport the acceptor still held
  uint64_t late_hello_accepted = 0;  // a HELLO accepted after its dialer had given up on it
  uint64_t runs_near_bound = 0;   // runs whose held batches reached half their bound
  uint64_t payload_bytes = 0;     // stream bytes checked
};

// ---- the simulated network ----------------------------------------------------------------

enum class EventKind : uint8_t {
  deliver,        // a pipe hands its reader the next slice (`side`: the writer)
  send_complete,  // `side`'s send on `tcp` is done
  socket_error,   // `side`'s socket on `tcp` fails (a reset, or a local error)
  socket_closed,  // `side`'s close of `tcp` completed
  connect_done,   // the dialer's connect attempt finished
  hello_timeout,  // the acceptor's wait for `tcp`'s HELLO is over
  app_tick,       // `side`'s application takes a turn
  fault,          // `tcp` breaks
  break_current,  // the dialer's connection of the moment breaks
};

struct Event {
  uint64_t at_ns = 0;
  uint64_t order = 0;  // ties in time go in scheduling order: the run is a function of the seed
  EventKind kind = EventKind::app_tick;
  int side = dialer;
  uint32_t tcp = 0;
  bool operator>(const Event& other) const { return at_ns != other.at_ns ? at_ns > other.at_ns : order > other.order; }
};

struct Pipe {
  Bytes bytes;                    // everything its writer sent
  std::size_t delivered = 0;      // handed to the reader
  std::size_t cut = SIZE_MAX;     // bytes from here on (and the FIN) never arrive
  uint64_t stalled_until_ns = 0;  // nothing arrives before
  uint64_t slow_ns = 0;           // added to every delivery's latency
  bool fin = false;               // the writer closed after bytes.size()
  bool armed = false;             // a deliver event is scheduled
};

class SimTransport;

struct Tcp {
  uint32_t attempt = 0;         // the dialer's connect that made it (1: the first)
  Pipe pipe[2];                 // pipe[s]: what side s writes
  bool open[2] = {true, true};  // side s has not closed its socket
  bool broken = false;
  bool break_at_cut = false;  // a write past a pipe's cut breaks the connection
  bool dialer_gave_up = false;
  // The acceptor's end before its HELLO was routed (mux::Acceptor's pending read).
  bool routed = false;
  Bytes hello;
  SimTransport* end[2] = {nullptr, nullptr};  // each side's transport on it, while it exists
};

constexpr uint32_t no_tcp = UINT32_MAX;  // no connection

class Sim;

// One end of a simulated TCP connection as a mux::Transport: what engine::Socket does, on
// the simulated network (sends complete after a latency, errors once, close completes later).
class SimTransport final : public Transport {
 public:
  SimTransport(Sim& sim, uint32_t tcp, int side);
  ~SimTransport() override;

  void start(TransportHandler& handler) noexcept override;
  void send(std::span<const std::byte> first, std::span<const std::byte> second,
            std::span<const std::byte> third) noexcept override;
  bool send_in_flight() const noexcept override { return sending_; }
  bool usable() const noexcept override { return handler_ != nullptr && !failed_ && !closing_; }
  void send_last(std::span<const std::byte> bytes) noexcept override;
  void close() noexcept override;

  // The network's events for this end.
  void on_send_complete();
  void on_error(engine::IoError error);
  void on_closed();
  void on_bytes(std::span<const std::byte> bytes);
  uint32_t tcp() const { return tcp_; }

 private:
  Sim& sim_;
  uint32_t tcp_;
  int side_;
  TransportHandler* handler_ = nullptr;
  bool sending_ = false;
  bool failed_ = false;
  bool closing_ = false;
  bool closed_ = false;
};

// The dialer's redials: a connect after twice the latency, refused while the fault budget
// lasts now and then.
class SimDialer final : public Dialer {
 public:
  explicit SimDialer(Sim& sim) : sim_(sim) {}
  void dial(DialHandler& handler) noexcept override;
  bool in_progress() const noexcept override { return handler_ != nullptr; }
  void cancel() noexcept override {}  // the attempt completes on its own, soon
  void on_connect_done();

 private:
  Sim& sim_;
  DialHandler* handler_ = nullptr;
};

// ---- the applications ---------------------------------------------------------------------

// One side's streams: opens its own, answers the peer's, checks every byte it receives.
class App final : public StreamService, public ConnectionObserver {
 public:
  // One side's view of one stream of the plan.
  struct Half {
    StreamId id = 0;
    bool known = false;    // we opened it, or its OPEN arrived
    bool blocked = false;  // a write was cut short: on_stream_writable comes
    bool end_sent = false;
    bool remote_ended = false;
    bool closed = false;
    uint64_t sent = 0;
    uint64_t received = 0;
    uint64_t unconsumed = 0;  // delivered; consume() is still due
    XXH3_state_t sent_hash;
    XXH3_state_t received_hash;
  };

  App(Sim& sim, int side);
  void attach(Connection& connection) { connection_ = &connection; }
  void tick();
  // After an entry point: streams whose turn came inside it (a request ended, a stream
  // opened) write now.
  void pump_due();
  bool done() const;
  bool connection_closed() const { return connection_closed_; }
  // The run is over and the teardown closes the connection: what ends now is expected.
  void closing() { connection_closing_ = true; }
  const Half& half(std::size_t k) const { return halves_[k]; }
  std::string describe() const;

  // StreamService: the peer opens a stream of the plan.
  StreamObserver* open_stream(const StreamStart& start) const noexcept override;
  // ConnectionObserver
  void on_connection_closed(Connection&, MuxError error, engine::IoError io_error) noexcept override;

  // A stream's events (its observer forwards them).
  void on_data(std::size_t k, std::span<const std::byte> payload, bool end_stream);
  void on_message(std::size_t k, std::string_view message);
  void on_finished(std::size_t k, MuxError error);
  void on_writable(std::size_t k);

 private:
  StreamObserver* opened_by_peer(const StreamStart& start);
  void open(std::size_t k);
  void pump(std::size_t k);
  void receive(std::size_t k, std::span<const std::byte> payload, bool end_stream);

  Sim& sim_;
  int side_;
  Connection* connection_ = nullptr;
  bool connection_closed_ = false;
  bool connection_closing_ = false;
  std::vector<Half> halves_;
  std::vector<std::string> messages_;  // the peer's text on a stream it ended with an error
  std::vector<std::size_t> due_;
  std::vector<std::size_t> due_scratch_;
  Bytes scratch_;
  Bytes expected_;
};

// ---- the simulation: clock, events, connections, the acceptor's HELLO reads ---------------

class Sim final : public SessionRegistry {
 public:
  Sim(uint64_t seed, bool tracing, Coverage& coverage_sum);
  ~Sim();
  // Runs to the end; returns what failed ("" when every check held).
  std::string run();

  // The loop's clock, and the time since the run began (what the plan's times mean).
  uint64_t now() const { return loop_->now_ns(); }
  uint64_t elapsed() const { return loop_->now_ns() - start_ns; }
  engine::Loop& loop() { return *loop_; }
  Random& random() { return random_; }
  const Plan& plan() const { return plan_; }
  Coverage& coverage() { return coverage_; }
  bool failed() const { return !failure_.empty(); }
  void fail(const std::string& why);
  void trace(const char* format, ...) __attribute__((format(printf, 2, 3)));

  void schedule(EventKind kind, int side, uint64_t delay_ns, uint32_t tcp = 0);
  Tcp& tcp(uint32_t id) { return tcps_[id]; }
  // The transports' operations on the network.
  void send(uint32_t tcp, int side, std::span<const std::byte> bytes);
  void shutdown(uint32_t tcp, int side);  // the FIN after what was sent; reading goes on
  void close(uint32_t tcp, int side);
  void connect();
  uint32_t connect_result();  // the connect_done event: a new connection, or no_tcp (refused)
  // The side's transport of the moment (started, not closed).
  uint32_t current(int side) const;
  uint64_t latency() { return plan_.latency_ns + random_.below(plan_.latency_ns + 1); }

  // SessionRegistry: the acceptor's table, as mux::Acceptor keeps it.
  void on_detached(Connection& connection) noexcept override;
  void forget(Connection& connection) noexcept override;

  // The simulated clock starts here, not at 0 (the link takes a time of 0 for "none").
  static constexpr uint64_t start_ns = 1 * s_ns;

 private:
  ConnectionOptions options_for(int side);
  void dispatch(const Event& event);
  void after_entry();
  void deliver(uint32_t id, int writer);
  void arm_delivery(uint32_t id, int writer, uint64_t delay_ns);
  void on_bytes(uint32_t id, int reader, std::span<const std::byte> bytes);
  void on_socket_error(uint32_t id, int side, engine::IoError error);
  void route(uint32_t id, const wire::Hello& hello);
  void break_tcp(uint32_t id);
  uint32_t new_tcp(uint32_t attempt);
  void plan_fault(uint32_t id);
  std::size_t slice(std::size_t available);
  void check_invariants();
  void verify_streams();
  // Closes both connections and runs the network until they have closed (bounded).
  void teardown();
  bool step();  // runs the next event or timer; false when there is none
  std::string describe_state();

  Random random_;
  Plan plan_;
  bool trace_;
  Coverage& coverage_;
  std::unique_ptr<engine::Loop> loop_;
  uint64_t order_ = 0;
  uint32_t faults_left_;
  uint32_t attempts_ = 0;
  std::string failure_;
  bool tearing_down_ = false;
  wire::SessionId session_id_{};
  uint64_t table_secrets_[2] = {};
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events_;
  std::deque<Tcp> tcps_;  // a deque: references stay valid as connections are added
  std::unique_ptr<App> apps_[2];
  SimDialer dialer_{*this};  // declared before the connections, which use it
  std::unique_ptr<Connection> connections_[2];
  Bytes delivery_;  // the slice being delivered (the pipe may grow meanwhile)
};

}  // namespace ringmux::mux::sim
