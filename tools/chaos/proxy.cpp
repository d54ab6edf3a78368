#include "tools/chaos/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <vector>

#include "tools/chaos/lane.h"
#include "tools/errno_text.h"

namespace ringmux::chaos {

namespace {

// Work per loop iteration, so that one busy pair cannot starve the others or delay a
// stop(): accepts per iteration, and send attempts per lane per iteration (with 1-byte
// slices a lane would otherwise send 256 Ki times before the loop looks at anything else).
constexpr uint32_t accepts_per_iteration_max = 64;
constexpr uint32_t send_attempts_per_lane_iteration_max = 256;

// The token bucket holds at most this much time's worth of bytes (a burst), and always at
// least one byte. 10 ms is the scale of a scheduler tick: shorter bursts would need
// wake-ups finer than a test machine keeps.
constexpr uint64_t bandwidth_burst_ns = 10'000'000;
static_assert(bandwidth_bytes_per_s_max * bandwidth_burst_ns / 1'000'000'000 < (1ull << 62),
              "the bucket multiplies its window (a burst, or one byte's time when that is longer) by the rate");

// After a cut the proxy keeps reading (and discarding) until both peers close, so that
// close() sends FIN and not the RST that unread data would cause; a peer that never
// closes is cut off after this long.
constexpr uint64_t cut_drain_ns_max = 1'000'000'000;
// Drained bytes are thrown away; 64 KiB per read keeps a drain to a few reads per peer
// for what a socket buffer typically holds.
constexpr uint32_t drain_scratch_bytes = 64u << 10;

// accept() failing for lack of descriptors or memory would make the listener poll as
// readable forever; accepting then pauses this long instead of spinning.
constexpr uint64_t accept_pause_ns = 100'000'000;

// Pending connections the kernel queues while the loop is busy or pairs_max is reached.
constexpr int listen_backlog = 128;

constexpr uint64_t ns_per_s = 1'000'000'000;

uint64_t now_ns() noexcept {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

void set_no_delay(int fd) noexcept {
  // The proxy buffers on purpose; Nagle would add delays the faults did not ask for, and
  // slices would be merged before they reach the wire.
  const int one = 1;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// Closes with RST instead of FIN.
void reset_fd(int fd) noexcept {
  const linger abort_linger{1, 0};
  (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_linger, sizeof(abort_linger));
  (void)::close(fd);
}

std::optional<sockaddr_in> to_sockaddr(const Endpoint& endpoint) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(endpoint.port);
  if (inet_pton(AF_INET, endpoint.host.c_str(), &address.sin_addr) != 1) return std::nullopt;
  return address;
}

enum class PairState : uint8_t {
  connecting,  // the upstream connect is in flight; client bytes are buffered
  open,        // forwarding
  closing,     // cut: FIN sent both ways; draining both sides until EOF or a deadline
};

struct Pair {
  Pair(uint64_t pair_number, uint64_t seed, int client, int upstream, uint64_t now)
      : number(pair_number),
        client_fd(client),
        upstream_fd(upstream),
        accepted_ns(now),
        up(Direction::up, mix64(seed ^ mix64(pair_number * 4 + 0)), mix64(seed ^ mix64(pair_number * 4 + 1))),
        down(Direction::down, mix64(seed ^ mix64(pair_number * 4 + 2)), mix64(seed ^ mix64(pair_number * 4 + 3))) {}

  uint64_t number;
  PairState state = PairState::connecting;
  int client_fd;
  int upstream_fd;
  uint64_t accepted_ns;
  uint64_t drain_deadline_ns = 0;  // closing only
  bool client_drained = false;     // closing only: EOF or error seen
  bool upstream_drained = false;
  Lane up;    // client_fd -> upstream_fd
  Lane down;  // upstream_fd -> client_fd
};

// Counters written by the loop thread only (a load and a store, no read-modify-write
// needed) and read by any thread.
struct LiveDirectionStats {
  std::atomic<uint64_t> bytes_received{0};
  std::atomic<uint64_t> bytes_forwarded{0};
  std::atomic<uint64_t> bytes_discarded{0};
  std::atomic<uint64_t> bytes_delayed{0};
  std::atomic<uint64_t> sends{0};
  std::atomic<uint64_t> bits_flipped{0};
};

void add(std::atomic<uint64_t>& counter, uint64_t n) noexcept {
  counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}
void subtract(std::atomic<uint64_t>& counter, uint64_t n) noexcept {
  counter.store(counter.load(std::memory_order_relaxed) - n, std::memory_order_relaxed);
}

DirectionStats snapshot(const LiveDirectionStats& live) noexcept {
  DirectionStats stats;
  stats.bytes_received = live.bytes_received.load(std::memory_order_relaxed);
  stats.bytes_forwarded = live.bytes_forwarded.load(std::memory_order_relaxed);
  stats.bytes_discarded = live.bytes_discarded.load(std::memory_order_relaxed);
  stats.bytes_delayed = live.bytes_delayed.load(std::memory_order_relaxed);
  stats.sends = live.sends.load(std::memory_order_relaxed);
  stats.bits_flipped = live.bits_flipped.load(std::memory_order_relaxed);
  return stats;
}

// What a pump or a receive asks of the pair.
enum class LaneOutcome : uint8_t {
  ok,
  cut,     // cut-after-bytes reached
  failed,  // the socket failed (RST, error): abort the pair
};

}  // namespace

// The event loop and everything it owns: the listener, the eventfd, the pairs.
class Proxy::Loop {
 public:
  Loop(const ProxyOptions& options, sockaddr_in upstream, int listen_fd, int event_fd)
      : upstream_(upstream), listen_fd_(listen_fd), event_fd_(event_fd), seed_(options.seed), faults_(options.faults),
        pairs_(pairs_max), drain_scratch_(new std::byte[drain_scratch_bytes]) {
    pollfds_.reserve(2 + 2 * pairs_max);
    poll_owners_.reserve(pairs_max);
  }

  ~Loop() {
    close_all();
    (void)::close(event_fd_);
  }

  // Runs until a stop command, then closes the listener and every pair (close_all). The
  // eventfd stays open until destruction: a control call after stop() still writes to it.
  void run();

  // Any thread: `change` edits the pending command block under the mutex; the loop is
  // then woken and applies it at the top of its next iteration.
  template <typename Change>
  void command(Change change) {
    {
      std::lock_guard lock(control_mutex_);
      change(control_);
      control_pending_.store(true, std::memory_order_release);
    }
    const uint64_t one = 1;
    // A full eventfd counter (EAGAIN) already means "wake up"; nothing else can fail.
    (void)!::write(event_fd_, &one, sizeof(one));
  }

  struct Control {
    bool stop = false;
    bool reset_all = false;
    bool cut_all = false;
    std::optional<Faults> faults;
    std::optional<bool> blackhole_up;
    std::optional<bool> blackhole_down;
  };

  ProxyStats stats() const noexcept {
    ProxyStats stats;
    stats.connections_accepted = connections_accepted_.load(std::memory_order_relaxed);
    stats.connections_active = connections_active_.load(std::memory_order_relaxed);
    stats.connect_failures = connect_failures_.load(std::memory_order_relaxed);
    stats.resets = resets_.load(std::memory_order_relaxed);
    stats.cuts = cuts_.load(std::memory_order_relaxed);
    stats.aborts = aborts_.load(std::memory_order_relaxed);
    stats.closes = closes_.load(std::memory_order_relaxed);
    stats.accept_failures = accept_failures_.load(std::memory_order_relaxed);
    stats.accept_errno_last = accept_errno_last_.load(std::memory_order_relaxed);
    stats.connect_errno_last = connect_errno_last_.load(std::memory_order_relaxed);
    stats.up = snapshot(up_stats_);
    stats.down = snapshot(down_stats_);
    return stats;
  }

 private:
  void run_until_stop();
  // Applies pending commands; true when the loop is to stop.
  bool take_control(uint64_t now);
  void accept_pairs(uint64_t now);
  void finish_connect(std::unique_ptr<Pair>& slot);
  // Fault deadlines, blackholes, sends; ends the pair when it is done or fails.
  void service(std::unique_ptr<Pair>& slot, uint64_t now);
  void handle_events(std::unique_ptr<Pair>& slot, short client_events, short upstream_events, uint64_t now);
  LaneOutcome receive(Pair& pair, Lane& lane, uint64_t now);
  LaneOutcome pump(Lane& lane, int dest_fd, uint64_t now);
  void update_blackhole(const Pair& pair, Lane& lane, uint64_t now);
  void corrupt(Lane& lane, uint64_t start, uint64_t end, double probability);
  void discard(Lane& lane);
  void drain(std::unique_ptr<Pair>& slot, bool client_side);
  // The ways a pair ends; each frees the slot.
  void reset_pair(std::unique_ptr<Pair>& slot);  // fault: RST both sides
  void abort_pair(std::unique_ptr<Pair>& slot);  // one side failed: RST the other
  void close_pair(std::unique_ptr<Pair>& slot);  // both directions done
  void cut_pair(std::unique_ptr<Pair>& slot, uint64_t now);  // fault: FIN both sides, then drain
  void end_with_reset(std::unique_ptr<Pair>& slot);  // RST both sides (also a failed connect)
  void release(std::unique_ptr<Pair>& slot);     // closes the sockets and frees the slot
  void close_all();                              // the listener and every pair; idempotent
  void wake_at(uint64_t ns) noexcept { wake_ns_ = std::min(wake_ns_, ns); }

  const LaneFaults& faults_of(const Lane& lane) const noexcept {
    return lane.direction == Direction::up ? faults_.up : faults_.down;
  }
  LiveDirectionStats& stats_of(const Lane& lane) noexcept {
    return lane.direction == Direction::up ? up_stats_ : down_stats_;
  }
  bool blackhole_forced(const Lane& lane) const noexcept {
    return lane.direction == Direction::up ? blackhole_up_forced_ : blackhole_down_forced_;
  }

  const sockaddr_in upstream_;
  int listen_fd_;  // -1 once closed
  const int event_fd_;
  const uint64_t seed_;
  Faults faults_;
  bool blackhole_up_forced_ = false;
  bool blackhole_down_forced_ = false;
  uint64_t next_pair_number_ = 0;
  uint32_t live_pairs_ = 0;
  uint64_t accept_paused_until_ns_ = 0;
  uint64_t wake_ns_ = UINT64_MAX;  // earliest deadline seen in this iteration

  std::vector<std::unique_ptr<Pair>> pairs_;  // pairs_max slots; empty slots are null
  std::vector<pollfd> pollfds_;
  struct PollOwner {
    uint32_t slot;
    uint64_t pair_number;  // the slot may be reused while events are handled
  };
  std::vector<PollOwner> poll_owners_;  // pollfds_[2 + 2 i] and [3 + 2 i] belong to poll_owners_[i]
  std::unique_ptr<std::byte[]> drain_scratch_;

  std::mutex control_mutex_;
  Control control_;  // guarded by control_mutex_
  std::atomic<bool> control_pending_{false};

  std::atomic<uint64_t> connections_accepted_{0};
  std::atomic<uint64_t> connections_active_{0};
  std::atomic<uint64_t> connect_failures_{0};
  std::atomic<uint64_t> resets_{0};
  std::atomic<uint64_t> cuts_{0};
  std::atomic<uint64_t> aborts_{0};
  std::atomic<uint64_t> closes_{0};
  std::atomic<uint64_t> accept_failures_{0};
  std::atomic<int> accept_errno_last_{0};
  std::atomic<int> connect_errno_last_{0};
  LiveDirectionStats up_stats_;
  LiveDirectionStats down_stats_;
};

void Proxy::Loop::close_all() {
  for (auto& slot : pairs_) {
    if (slot) release(slot);
  }
  if (listen_fd_ >= 0) (void)::close(listen_fd_);
  listen_fd_ = -1;
}

void Proxy::Loop::run() {
  run_until_stop();
  close_all();
}

void Proxy::Loop::run_until_stop() {
  // The event loop itself is the one unbounded loop; every step inside it is bounded.
  while (true) {
    uint64_t now = now_ns();
    wake_ns_ = UINT64_MAX;
    if (take_control(now)) return;
    for (auto& slot : pairs_) {
      if (slot) service(slot, now);
    }

    pollfds_.clear();
    poll_owners_.clear();
    const bool accepting = live_pairs_ < pairs_max && now >= accept_paused_until_ns_;
    if (!accepting && live_pairs_ < pairs_max) wake_at(accept_paused_until_ns_);
    pollfds_.push_back({accepting ? listen_fd_ : -1, POLLIN, 0});
    pollfds_.push_back({event_fd_, POLLIN, 0});
    for (uint32_t index = 0; index < pairs_max; index++) {
      const Pair* pair = pairs_[index].get();
      if (pair == nullptr) continue;
      short client_events = 0;
      short upstream_events = 0;
      switch (pair->state) {
        case PairState::connecting:
          if (pair->up.wants_read()) client_events |= POLLIN;
          upstream_events |= POLLOUT;
          break;
        case PairState::open:
          if (pair->up.wants_read()) client_events |= POLLIN;
          if (pair->down.dest_blocked) client_events |= POLLOUT;
          if (pair->down.wants_read()) upstream_events |= POLLIN;
          if (pair->up.dest_blocked) upstream_events |= POLLOUT;
          break;
        case PairState::closing:
          if (!pair->client_drained) client_events |= POLLIN;
          if (!pair->upstream_drained) upstream_events |= POLLIN;
          break;
      }
      // A socket with no interest is left out entirely (fd -1): poll would otherwise
      // report POLLHUP on it again and again while the loop cannot act on it.
      pollfds_.push_back({client_events != 0 ? pair->client_fd : -1, client_events, 0});
      pollfds_.push_back({upstream_events != 0 ? pair->upstream_fd : -1, upstream_events, 0});
      poll_owners_.push_back({index, pair->number});
    }

    now = now_ns();
    timespec timeout{};
    if (wake_ns_ != UINT64_MAX) {
      const uint64_t wait_ns = wake_ns_ > now ? wake_ns_ - now : 0;
      timeout.tv_sec = static_cast<time_t>(wait_ns / ns_per_s);
      timeout.tv_nsec = static_cast<long>(wait_ns % ns_per_s);
    }
    const int ready = ::ppoll(pollfds_.data(), pollfds_.size(), wake_ns_ == UINT64_MAX ? nullptr : &timeout, nullptr);
    if (ready < 0) {
      CHAOS_ASSERT(errno == EINTR);  // EFAULT, EINVAL, ENOMEM: a bug or a dying machine
      continue;
    }
    if (ready == 0) continue;
    now = now_ns();
    // Commands again before any socket is read: a command whose call returned before a
    // peer sent bytes then applies to those bytes (the tests rely on it).
    if (take_control(now)) return;
    if (pollfds_[1].revents != 0) {
      uint64_t count = 0;
      (void)!::read(event_fd_, &count, sizeof(count));
    }
    for (std::size_t i = 0; i < poll_owners_.size(); i++) {
      std::unique_ptr<Pair>& slot = pairs_[poll_owners_[i].slot];
      if (!slot || slot->number != poll_owners_[i].pair_number) continue;
      handle_events(slot, pollfds_[2 + 2 * i].revents, pollfds_[3 + 2 * i].revents, now);
    }
    if (pollfds_[0].revents != 0) accept_pairs(now);
  }
}

bool Proxy::Loop::take_control(uint64_t now) {
  if (!control_pending_.load(std::memory_order_acquire)) return false;
  Control control;
  {
    std::lock_guard lock(control_mutex_);
    control = std::move(control_);
    control_ = Control{};
    control_pending_.store(false, std::memory_order_relaxed);
  }
  if (control.stop) return true;
  if (control.faults) faults_ = *control.faults;
  if (control.blackhole_up) blackhole_up_forced_ = *control.blackhole_up;
  if (control.blackhole_down) blackhole_down_forced_ = *control.blackhole_down;
  // A pair already cut (closing) has ended as far as its peers know: it is left to drain.
  for (auto& slot : pairs_) {
    if (!slot || slot->state == PairState::closing) continue;
    if (control.reset_all) {
      reset_pair(slot);
    } else if (control.cut_all) {
      cut_pair(slot, now);
    } else {
      // Now, not at the next service(): the events of the poll that just returned are
      // handled under the new blackhole setting.
      update_blackhole(*slot, slot->up, now);
      update_blackhole(*slot, slot->down, now);
    }
  }
  return false;
}

void Proxy::Loop::accept_pairs(uint64_t now) {
  for (uint32_t accepted = 0; accepted < accepts_per_iteration_max && live_pairs_ < pairs_max; accepted++) {
    const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (client < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
      // EMFILE, ENFILE, ENOBUFS, ENOMEM: the backlog stays readable; pause instead of spinning.
      accept_errno_last_.store(errno, std::memory_order_relaxed);
      add(accept_failures_, 1);
      accept_paused_until_ns_ = now + accept_pause_ns;
      return;
    }
    add(connections_accepted_, 1);
    set_no_delay(client);
    const int upstream = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (upstream < 0) {
      connect_errno_last_.store(errno, std::memory_order_relaxed);
      reset_fd(client);
      add(connect_failures_, 1);
      continue;
    }
    set_no_delay(upstream);
    const int connected = ::connect(upstream, reinterpret_cast<const sockaddr*>(&upstream_), sizeof(upstream_));
    if (connected < 0 && errno != EINPROGRESS) {
      connect_errno_last_.store(errno, std::memory_order_relaxed);
      (void)::close(upstream);
      reset_fd(client);
      add(connect_failures_, 1);
      continue;
    }
    auto slot = std::find_if(pairs_.begin(), pairs_.end(), [](const auto& pair) { return !pair; });
    CHAOS_ASSERT(slot != pairs_.end());  // live_pairs_ < pairs_max
    *slot = std::make_unique<Pair>(next_pair_number_++, seed_, client, upstream, now);
    if (connected == 0) (*slot)->state = PairState::open;
    live_pairs_++;
    add(connections_active_, 1);
  }
}

void Proxy::Loop::finish_connect(std::unique_ptr<Pair>& slot) {
  int error = 0;
  socklen_t length = sizeof(error);
  if (::getsockopt(slot->upstream_fd, SOL_SOCKET, SO_ERROR, &error, &length) < 0) error = errno;
  if (error == 0) {
    slot->state = PairState::open;
    return;
  }
  // The client learns that the upstream is unreachable the way a direct connection
  // would tell it: with a reset.
  connect_errno_last_.store(error, std::memory_order_relaxed);
  add(connect_failures_, 1);
  end_with_reset(slot);
}

void Proxy::Loop::service(std::unique_ptr<Pair>& slot, uint64_t now) {
  Pair& pair = *slot;
  switch (pair.state) {
    case PairState::closing:
      if (now >= pair.drain_deadline_ns) {
        release(slot);
      } else {
        wake_at(pair.drain_deadline_ns);
      }
      return;
    case PairState::connecting:
    case PairState::open:
      break;
  }
  if (faults_.reset_every_ns != 0) {
    const uint64_t deadline = pair.accepted_ns + faults_.reset_every_ns;
    if (now >= deadline) {
      reset_pair(slot);
      return;
    }
    wake_at(deadline);
  }
  if (faults_.cut_every_ns != 0) {
    const uint64_t deadline = pair.accepted_ns + faults_.cut_every_ns;
    if (now >= deadline) {
      cut_pair(slot, now);
      return;
    }
    wake_at(deadline);
  }
  update_blackhole(pair, pair.up, now);
  update_blackhole(pair, pair.down, now);
  if (pair.state == PairState::connecting) return;  // nothing to send to yet
  for (Lane* lane : {&pair.up, &pair.down}) {
    const int dest_fd = lane == &pair.up ? pair.upstream_fd : pair.client_fd;
    switch (pump(*lane, dest_fd, now)) {
      case LaneOutcome::ok:
        break;
      case LaneOutcome::cut:
        cut_pair(slot, now);
        return;
      case LaneOutcome::failed:
        abort_pair(slot);
        return;
    }
  }
  if (pair.up.finished() && pair.down.finished()) close_pair(slot);
}

void Proxy::Loop::handle_events(std::unique_ptr<Pair>& slot, short client_events, short upstream_events, uint64_t now) {
  constexpr short readable = POLLIN | POLLHUP | POLLERR;
  constexpr short writable = POLLOUT | POLLHUP | POLLERR;
  switch (slot->state) {
    case PairState::closing:
      if (client_events != 0) drain(slot, true);
      if (slot && upstream_events != 0) drain(slot, false);
      return;
    case PairState::connecting:
      if ((client_events & readable) != 0 && slot->up.wants_read()) {
        if (receive(*slot, slot->up, now) == LaneOutcome::failed) {
          abort_pair(slot);
          return;
        }
      }
      if (upstream_events != 0) finish_connect(slot);
      return;
    case PairState::open:
      break;
  }
  if ((client_events & writable) != 0) slot->down.dest_blocked = false;
  if ((upstream_events & writable) != 0) slot->up.dest_blocked = false;
  if ((client_events & readable) != 0 && slot->up.wants_read()) {
    if (receive(*slot, slot->up, now) == LaneOutcome::failed) {
      abort_pair(slot);
      return;
    }
  }
  if ((upstream_events & readable) != 0 && slot->down.wants_read()) {
    if (receive(*slot, slot->down, now) == LaneOutcome::failed) {
      abort_pair(slot);
      return;
    }
  }
}

LaneOutcome Proxy::Loop::receive(Pair& pair, Lane& lane, uint64_t now) {
  CHAOS_ASSERT(lane.wants_read());
  const int source_fd = lane.direction == Direction::up ? pair.client_fd : pair.upstream_fd;
  const uint64_t space = lane_bytes - lane.held_bytes();
  const uint64_t offset = lane.read_position & (lane_bytes - 1);
  const uint64_t first = std::min<uint64_t>(space, lane_bytes - offset);
  iovec parts[2] = {{lane.ring.get() + offset, first}, {lane.ring.get(), space - first}};
  const ssize_t n = ::readv(source_fd, parts, space > first ? 2 : 1);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return LaneOutcome::ok;
    return LaneOutcome::failed;
  }
  if (n == 0) {
    lane.source_eof = true;
    return LaneOutcome::ok;
  }
  const auto bytes = static_cast<uint64_t>(n);
  LiveDirectionStats& stats = stats_of(lane);
  add(stats.bytes_received, bytes);
  lane.read_position += bytes;
  if (lane.blackholed) {
    discard(lane);
    return LaneOutcome::ok;
  }
  const LaneFaults& faults = faults_of(lane);
  uint64_t due_ns = 0;
  if (faults.latency_ns != 0 || faults.jitter_ns != 0) {
    due_ns = now + faults.latency_ns + (faults.jitter_ns != 0 ? lane.shape_random.below(faults.jitter_ns + 1) : 0);
    add(stats.bytes_delayed, bytes);
  }
  // A chunk never overtakes the one before it, whatever its own draw.
  due_ns = std::max(due_ns, lane.last_due_ns);
  lane.last_due_ns = due_ns;
  const uint64_t mask = lane_records_max - 1;
  if (lane.record_count() == 0 && due_ns <= now) {
    lane.released_position = lane.read_position;
  } else if (lane.record_count() > 0 && lane.records[(lane.records_tail - 1) & mask].due_ns == due_ns) {
    lane.records[(lane.records_tail - 1) & mask].end_position = lane.read_position;
  } else {
    // wants_read() held, so there is a free record.
    lane.records[lane.records_tail & mask] = ChunkRecord{lane.read_position, due_ns};
    lane.records_tail++;
  }
  check_lane(lane);
  return LaneOutcome::ok;
}

LaneOutcome Proxy::Loop::pump(Lane& lane, int dest_fd, uint64_t now) {
  const LaneFaults& faults = faults_of(lane);
  if (lane.blackholed) return LaneOutcome::ok;
  if (faults.cut_after_bytes != 0 && lane.forwarded_bytes >= faults.cut_after_bytes) return LaneOutcome::cut;
  const uint64_t mask = lane_records_max - 1;
  while (lane.record_count() > 0 && lane.records[lane.records_head & mask].due_ns <= now) {
    lane.released_position = lane.records[lane.records_head & mask].end_position;
    lane.records_head++;
  }
  if (lane.record_count() > 0) wake_at(lane.records[lane.records_head & mask].due_ns);
  LiveDirectionStats& stats = stats_of(lane);
  for (uint32_t attempts = 0; !lane.dest_blocked && lane.released_position > lane.sent_position; attempts++) {
    if (attempts == send_attempts_per_lane_iteration_max) {
      wake_at(now);  // more to send: come back without sleeping
      break;
    }
    uint64_t bytes = lane.released_position - lane.sent_position;
    if (faults.slice_bytes_max != 0) {
      const uint64_t slice =
          faults.slice_bytes_min + lane.shape_random.below(uint64_t{faults.slice_bytes_max} - faults.slice_bytes_min + 1);
      bytes = std::min(bytes, slice);
    }
    if (const uint64_t rate = faults.bandwidth_bytes_per_s; rate != 0) {
      // GCRA form of a token bucket: bucket_tat_ns is when the bucket would be full again;
      // the bucket holds `window` worth of bytes (a burst, and at least one byte).
      // A lane sends a whole burst (or all it holds, when less) at once: sending what
      // trickled into the bucket since the last turn would, on a full lane, read and
      // send a few hundred bytes per turn of the loop and keep a core busy.
      const uint64_t window_ns = std::max(bandwidth_burst_ns, (ns_per_s + rate - 1) / rate);
      const uint64_t tat_ns = std::max(lane.bucket_tat_ns, now);
      const uint64_t allowed = tat_ns < now + window_ns ? (now + window_ns - tat_ns) * rate / ns_per_s : 0;
      const uint64_t want = std::min(bytes, window_ns * rate / ns_per_s);
      if (allowed < want) {
        wake_at(tat_ns - window_ns + (want * ns_per_s + rate - 1) / rate);
        break;
      }
      bytes = std::min(bytes, allowed);
    }
    if (faults.cut_after_bytes != 0) bytes = std::min(bytes, faults.cut_after_bytes - lane.forwarded_bytes);
    if (faults.corrupt_probability > 0) corrupt(lane, lane.sent_position, lane.sent_position + bytes, faults.corrupt_probability);

    const uint64_t offset = lane.sent_position & (lane_bytes - 1);
    const uint64_t first = std::min<uint64_t>(bytes, lane_bytes - offset);
    iovec parts[2] = {{lane.ring.get() + offset, first}, {lane.ring.get(), bytes - first}};
    msghdr message{};
    message.msg_iov = parts;
    message.msg_iovlen = bytes > first ? 2 : 1;
    const ssize_t n = ::sendmsg(dest_fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        lane.dest_blocked = true;
        break;
      }
      if (errno == EINTR) continue;
      return LaneOutcome::failed;
    }
    const auto sent = static_cast<uint64_t>(n);
    lane.sent_position += sent;
    lane.forwarded_bytes += sent;
    add(stats.bytes_forwarded, sent);
    add(stats.sends, 1);
    if (faults.bandwidth_bytes_per_s != 0) {
      const uint64_t rate = faults.bandwidth_bytes_per_s;
      lane.bucket_tat_ns = std::max(lane.bucket_tat_ns, now) + (sent * ns_per_s + rate - 1) / rate;
    }
    if (faults.cut_after_bytes != 0 && lane.forwarded_bytes >= faults.cut_after_bytes) return LaneOutcome::cut;
  }
  check_lane(lane);
  if (lane.source_eof && lane.held_bytes() == 0 && !lane.shutdown_sent) {
    // The source's FIN goes on once every byte before it has.
    (void)::shutdown(dest_fd, SHUT_WR);
    lane.shutdown_sent = true;
  }
  return LaneOutcome::ok;
}

void Proxy::Loop::update_blackhole(const Pair& pair, Lane& lane, uint64_t now) {
  const std::optional<uint64_t>& after_ns = faults_of(lane).blackhole_after_ns;
  bool on = blackhole_forced(lane);
  if (after_ns) {
    const uint64_t onset = pair.accepted_ns + *after_ns;
    if (now >= onset) {
      on = true;
    } else {
      wake_at(onset);
    }
  }
  if (on && !lane.blackholed) discard(lane);
  lane.blackholed = on;
}

void Proxy::Loop::corrupt(Lane& lane, uint64_t start, uint64_t end, double probability) {
  // Flip positions follow byte offsets only (not chunking or timing), so a seed replays
  // the same corruption. Bytes before corrupt_checked_position were already considered
  // (a partial send resends them): they are never flipped twice.
  const uint64_t from = std::max(start, lane.corrupt_checked_position);
  if (probability != lane.corrupt_probability_in_use || lane.next_flip_position < from) {
    lane.corrupt_probability_in_use = probability;
    lane.next_flip_position = from + geometric_skip(lane.corrupt_random, probability);
  }
  uint64_t flipped = 0;
  // Bounded: each pass moves next_flip_position forward by at least one byte.
  while (lane.next_flip_position < end) {
    const auto bit = static_cast<unsigned>(lane.corrupt_random.below(8));
    lane.ring[lane.next_flip_position & (lane_bytes - 1)] ^= static_cast<std::byte>(1u << bit);
    flipped++;
    lane.next_flip_position += 1 + geometric_skip(lane.corrupt_random, probability);
  }
  lane.corrupt_checked_position = std::max(lane.corrupt_checked_position, end);
  add(stats_of(lane).bits_flipped, flipped);
}

void Proxy::Loop::discard(Lane& lane) {
  add(stats_of(lane).bytes_discarded, lane.held_bytes());
  lane.sent_position = lane.read_position;
  lane.released_position = lane.read_position;
  lane.records_head = lane.records_tail;
  check_lane(lane);
}

void Proxy::Loop::drain(std::unique_ptr<Pair>& slot, bool client_side) {
  const int fd = client_side ? slot->client_fd : slot->upstream_fd;
  bool& drained = client_side ? slot->client_drained : slot->upstream_drained;
  if (drained) return;
  const ssize_t n = ::recv(fd, drain_scratch_.get(), drain_scratch_bytes, MSG_DONTWAIT);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) drained = true;
  if (slot->client_drained && slot->upstream_drained) release(slot);
}

void Proxy::Loop::reset_pair(std::unique_ptr<Pair>& slot) {
  add(resets_, 1);
  end_with_reset(slot);
}

void Proxy::Loop::abort_pair(std::unique_ptr<Pair>& slot) {
  // One side failed; the other learns it the way it would without the proxy: a reset.
  add(aborts_, 1);
  end_with_reset(slot);
}

void Proxy::Loop::end_with_reset(std::unique_ptr<Pair>& slot) {
  reset_fd(slot->client_fd);
  reset_fd(slot->upstream_fd);
  slot->client_fd = slot->upstream_fd = -1;
  release(slot);
}

void Proxy::Loop::close_pair(std::unique_ptr<Pair>& slot) {
  release(slot);
  add(closes_, 1);
}

void Proxy::Loop::cut_pair(std::unique_ptr<Pair>& slot, uint64_t now) {
  add(cuts_, 1);
  Pair& pair = *slot;
  discard(pair.up);
  discard(pair.down);
  (void)::shutdown(pair.client_fd, SHUT_WR);
  if (pair.state == PairState::connecting) {
    // Nothing was sent upstream yet; abandoning the connect is the cut on that side.
    (void)::close(pair.upstream_fd);
    pair.upstream_fd = -1;
    pair.upstream_drained = true;
  } else {
    (void)::shutdown(pair.upstream_fd, SHUT_WR);
  }
  pair.state = PairState::closing;
  pair.drain_deadline_ns = now + cut_drain_ns_max;
  wake_at(pair.drain_deadline_ns);
}

void Proxy::Loop::release(std::unique_ptr<Pair>& slot) {
  Pair& pair = *slot;
  add(stats_of(pair.up).bytes_discarded, pair.up.held_bytes());
  add(stats_of(pair.down).bytes_discarded, pair.down.held_bytes());
  if (pair.client_fd >= 0) (void)::close(pair.client_fd);
  if (pair.upstream_fd >= 0) (void)::close(pair.upstream_fd);
  slot.reset();
  CHAOS_ASSERT(live_pairs_ > 0);
  live_pairs_--;
  subtract(connections_active_, 1);
}

std::unique_ptr<Proxy> Proxy::start(const ProxyOptions& options, std::string& error) {
  const auto listen_address = to_sockaddr(options.listen);
  if (!listen_address) {
    error = "listen address '" + options.listen.host + "' is not an IPv4 address";
    return nullptr;
  }
  const auto upstream_address = to_sockaddr(options.upstream);
  if (!upstream_address || options.upstream.port == 0) {
    error = "upstream '" + options.upstream.host + ":" + std::to_string(options.upstream.port) +
            "' is not an IPv4 address with a port";
    return nullptr;
  }
  if (auto fault_error = check_faults(options.faults)) {
    error = *fault_error;
    return nullptr;
  }
  const int listen_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd < 0) {
    error = std::string("socket: ") + tools::errno_text(errno);
    return nullptr;
  }
  const int one = 1;
  (void)setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in bound = *listen_address;
  socklen_t length = sizeof(bound);
  if (::bind(listen_fd, reinterpret_cast<const sockaddr*>(&bound), sizeof(bound)) < 0 ||
      ::listen(listen_fd, listen_backlog) < 0 ||
      ::getsockname(listen_fd, reinterpret_cast<sockaddr*>(&bound), &length) < 0) {
    error = "listen on " + options.listen.host + ":" + std::to_string(options.listen.port) + ": " + tools::errno_text(errno);
    (void)::close(listen_fd);
    return nullptr;
  }
  const int event_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (event_fd < 0) {
    error = std::string("eventfd: ") + tools::errno_text(errno);
    (void)::close(listen_fd);
    return nullptr;
  }
  std::unique_ptr<Proxy> proxy(new Proxy());
  proxy->port_ = ntohs(bound.sin_port);
  proxy->loop_ = std::make_unique<Loop>(options, *upstream_address, listen_fd, event_fd);
  proxy->thread_ = std::thread([loop = proxy->loop_.get()] { loop->run(); });
  return proxy;
}

Proxy::~Proxy() { stop(); }

ProxyStats Proxy::stats() const noexcept { return loop_->stats(); }

void Proxy::reset_all() {
  loop_->command([](Loop::Control& control) { control.reset_all = true; });
}

void Proxy::cut_all() {
  loop_->command([](Loop::Control& control) { control.cut_all = true; });
}

void Proxy::set_blackhole(Direction direction, bool on) {
  loop_->command([&](Loop::Control& control) {
    switch (direction) {
      case Direction::both:
        control.blackhole_up = on;
        control.blackhole_down = on;
        break;
      case Direction::up:
        control.blackhole_up = on;
        break;
      case Direction::down:
        control.blackhole_down = on;
        break;
    }
  });
}

bool Proxy::set_faults(const Faults& faults, std::string& error) {
  if (auto fault_error = check_faults(faults)) {
    error = *fault_error;
    return false;
  }
  loop_->command([&](Loop::Control& control) { control.faults = faults; });
  return true;
}

void Proxy::stop() {
  if (!thread_.joinable()) return;
  loop_->command([](Loop::Control& control) { control.stop = true; });
  thread_.join();
}

}  // namespace ringmux::chaos
