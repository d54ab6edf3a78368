#include "tools/loadgen/runner.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

#include "ringmux/engine/engine.h"
#include "ringmux/engine/loop.h"
#include "ringmux/engine/socket.h"
#include "ringmux/mux/link/connection.h"
#include "ringmux/mux/rpc/call.h"
#include "ringmux/cluster/manager.h"
#include "ringmux/cluster/quorum.h"
#include "tools/blocking_io.h"
#include "tools/loadgen/job_messages.h"
#include "tools/loadgen/pacer.h"
#include "tools/loadgen/protocol.h"
#include "tools/loadgen/tcp_runner.h"
#include "tools/loadgen/verify.h"

namespace ringmux::loadgen {

using engine::Loop;

namespace {

// Arms `timer` to fire at `at_ns` on the monotonic clock. Loop::timer_start counts its
// delay from the loop's cached time (the start of its current iteration), which lags the
// clock by however long the caller has run since: a delay measured from the clock would
// fire early by that much (runners built before the loop turns again: 240 ms with a
// 64 MiB message to fill on a loaded machine, enough to cut a 300 ms job's read stream
// before its first byte).
void timer_at(Loop& loop, engine::Timer& timer, uint64_t at_ns) {
  loop.timer_start(timer, at_ns > loop.now_ns() ? at_ns - loop.now_ns() : 0);
}

// ---- ringmux engine ----------------------------------------------------------------------

// A read stream bound only by size is cancelled after this long whatever has arrived (a
// source that stops sending must not hold the run forever).
constexpr uint64_t size_read_deadline_ns = 10'000'000'000;

class Runner {
 public:
  virtual ~Runner() = default;
  virtual void start() = 0;
  virtual bool done() const = 0;
  // A stop was asked: end as soon as possible (what waits on a timer looks now).
  virtual void interrupt(uint64_t) {}
};

// Unary calls. Closed loop: iodepth calls in flight, each completion issues the next.
// Open loop (rate_iops): the Pacer's schedule (pacer.h): at most iodepth calls in flight,
// a late call starts as soon as a slot frees, its latency counts from its due time, and
// the schedule ends with the window.
class UnaryRunner final : public Runner {
 public:
  UnaryRunner(mux::Connection& connection, const Job& job, JobResult& result, const Window& window, uint64_t stream_key,
              Progress* progress)
      : connection_(connection), job_(job), result_(result), window_(window), sizes_(job, stream_key), stream_key_(stream_key),
        progress_(progress), request_(sizes_.max(), std::byte{0x6b}), tick_(&UnaryRunner::on_tick, this) {
    write_preamble(request_, job.response_bytes(), job, stream_key);
  }
  ~UnaryRunner() override { connection_.loop().timer_cancel(tick_); }

  void start() override {
    if (job_.rate_iops != 0) {
      pacer_.emplace(job_.rate_iops, window_.start_ns, window_.until_ns);
      pace(Loop::clock_ns());
      return;
    }
    for (uint32_t i = 0; i < job_.iodepth; i++) issue(Loop::clock_ns());
  }
  bool done() const override { return stopping_ && in_flight_ == 0; }
  void interrupt(uint64_t now) override {
    if (pacer_ && !stopping_) pace(now);  // else the calls in flight see the stop
  }

 private:
  bool should_stop(uint64_t now) const {
    return window_.over(now) || size_reached(job_, sent_bytes_) || result_.errors >= job_errors_max;
  }
  void stop(uint64_t now) {
    if (stopping_) return;
    stopping_ = true;
    if (pacer_) {
      // Calls due but not started are not part of the window: counted as dropped.
      pacer_->stop(now);
      result_.rate_dropped = pacer_->dropped();
      connection_.loop().timer_cancel(tick_);
    }
  }

  // Open loop: starts the due calls the depth allows, then looks again when the next one
  // falls due, or (every slot busy: a completion paces again) when the window ends.
  void pace(uint64_t now) {
    if (should_stop(now) || pacer_->over(now)) {
      stop(now);
      return;
    }
    while (in_flight_ < job_.iodepth) {
      const auto due = pacer_->take(now);
      if (!due) break;
      issue(*due);
      if (stopping_) return;
    }
    const uint64_t wake = in_flight_ < job_.iodepth ? pacer_->wake_ns() : window_.end_ns();
    if (wake == UINT64_MAX) {
      connection_.loop().timer_cancel(tick_);  // size-bound, every slot busy: a completion paces
    } else {
      timer_at(connection_.loop(), tick_, wake);
    }
  }
  static void on_tick(engine::Timer& timer) noexcept {
    auto& self = *static_cast<UnaryRunner*>(timer.context());
    self.pace(Loop::clock_ns());
  }

  // Issues one call whose latency counts from `since_ns`.
  void issue(uint64_t since_ns) {
    const uint64_t issued_ns = Loop::clock_ns();
    if (should_stop(issued_ns)) {
      stop(issued_ns);
      return;
    }
    in_flight_++;
    const uint32_t size = sizes_.next();
    const uint64_t sequence = sequence_++;
    sent_bytes_ += size;
    // Verified: the request after its preamble is a stamped message of this call's own.
    if (job_.verify) stamp_message(std::span(request_).subspan(preamble_bytes, size - preamble_bytes), stream_key_, sequence);
    mux::call(connection_, handler_unary, std::span(request_).first(size), 0, [this, since_ns, size, sequence](const mux::CallResult& r) {
      in_flight_--;
      const uint64_t now = Loop::clock_ns();
      if (progress_ != nullptr) progress_->add(1, size + r.response.size());
      if (r.error != mux::MuxError::none) {
        if (progress_ != nullptr) progress_->errors.fetch_add(1, std::memory_order_relaxed);
        if (job_.verify && r.message.rfind("verify:", 0) == 0) result_.verify_mismatches++;
        result_.add_error(mux::describe(r.error) + (r.message.empty() ? "" : ": " + r.message));
      } else if (job_.verify && !check_response(r.response, sequence)) {
        result_.add_error("verify: response damaged, missing or repeated");
      } else if (window_.measuring(now)) {
        result_.count_bytes(now, Direction::write, size);
        result_.count_bytes(now, Direction::read, r.response.size());
        result_.count_op(now, now - since_ns, size);
      }
      if (stopping_) return;
      if (pacer_) {
        pace(now);
      } else {
        issue(now);
      }
    });
  }

  bool check_response(std::span<const std::byte> response, uint64_t sequence) {
    VerifyCounts counts;
    const bool intact = verify_message(response, stream_key_, sequence, counts);
    add_verify(result_, counts);
    return intact;
  }

  mux::Connection& connection_;
  const Job& job_;
  JobResult& result_;
  const Window& window_;
  SizePicker sizes_;
  uint64_t stream_key_;
  Progress* progress_;
  std::vector<std::byte> request_;  // preamble, then the request body (stamped: verify)
  uint64_t sequence_ = 0;
  uint32_t in_flight_ = 0;
  uint64_t sent_bytes_ = 0;
  bool stopping_ = false;
  // Open loop only.
  engine::Timer tick_;
  std::optional<Pacer> pacer_;
};

// Quorum calls (rw=quorum), closed loop: iodepth quorum calls in flight, each to every
// peer; latency from issue to the quorum's decision; a quorum that fails is an error.
class QuorumRunner final : public Runner {
 public:
  QuorumRunner(cluster::Manager& manager, const Job& job, JobResult& result, const Window& window, Progress* progress)
      : manager_(manager), job_(job), result_(result), window_(window), sizes_(job, 0), progress_(progress),
        request_(sizes_.max(), std::byte{0x6b}) {
    write_preamble(request_, job.response_bytes(), job, 0);
    for (const std::string& peer : job.peers) configuration_.push_back(engine::Address::parse(peer).value());
    if (job.quorum == "majority") quorum_ = cluster::quorum::majority();
    else if (job.quorum == "all") quorum_ = cluster::quorum::all();
    else if (job.quorum == "first") quorum_ = cluster::quorum::first();
    else quorum_ = cluster::quorum::threshold(std::stoul(job.quorum));
  }
  void start() override {
    for (uint32_t i = 0; i < job_.iodepth; i++) issue();
  }
  bool done() const override { return stopping_ && in_flight_ == 0; }

 private:
  void issue() {
    const uint64_t now = Loop::clock_ns();
    if (window_.over(now) || size_reached(job_, sent_bytes_) || result_.errors >= job_errors_max) {
      stopping_ = true;
      return;
    }
    in_flight_++;
    const uint32_t size = sizes_.next();
    sent_bytes_ += size;
    cluster::quorum_call(manager_, configuration_, handler_unary, std::span(request_).first(size), quorum_,
                     now + job_.deadline_ns, [this, now, size](const cluster::QuorumResult& r) {
                       in_flight_--;
                       const uint64_t end = Loop::clock_ns();
                       if (progress_ != nullptr) progress_->add(1, size);
                       if (r.error != mux::MuxError::none) {
                         if (progress_ != nullptr) progress_->errors.fetch_add(1, std::memory_order_relaxed);
                         result_.add_error(std::string("quorum ") + job_.quorum + " failed: " + mux::describe(r.error));
                       } else if (window_.measuring(end)) {
                         result_.count_bytes(end, Direction::write, uint64_t{size} * configuration_.size());
                         for (const auto& reply : r.replies) result_.count_bytes(end, Direction::read, reply.response.size());
                         result_.count_op(end, end - now, size);
                       }
                       if (!stopping_) issue();
                     });
  }

  cluster::Manager& manager_;
  const Job& job_;
  JobResult& result_;
  const Window& window_;
  SizePicker sizes_;
  Progress* progress_;
  std::vector<std::byte> request_;
  cluster::Configuration configuration_;
  cluster::QuorumFunction quorum_;
  uint32_t in_flight_ = 0;
  uint64_t sent_bytes_ = 0;
  bool stopping_ = false;
};

// One stream of a write / read / bidi job.
class StreamRunner final : public Runner, public mux::StreamObserver {
 public:
  // `filler`: the bytes of every unverified message (shared by the job's streams: 100,000
  // streams need not hold a message each); a verified stream stamps a message of its own.
  StreamRunner(mux::Connection& connection, const Job& job, JobResult& result, const Window& window, uint64_t size_share,
               std::size_t index, uint64_t stream_key, std::span<const std::byte> filler, Progress* progress)
      : connection_(connection), job_(job), result_(result), window_(window), size_share_(size_share), sizes_(job, stream_key),
        stream_key_(stream_key), progress_(progress), stamped_(job.verify ? sizes_.max() : 0, std::byte{0x6b}),
        message_(job.verify ? std::span<const std::byte>(stamped_) : filler), index_(index),
        verifier_(stream_key, message_bytes_max) {
    RM_ASSERT(message_.size() >= sizes_.max());
  }

  void start() override { open_stream(); }
  bool done() const override { return finished_; }
  void interrupt(uint64_t) override {
    if (job_.rw == RwMode::read && !finished_) {  // a read stream waits for its deadline
      connection_.loop().timer_cancel(read_timer_);
      connection_.cancel(id_);
    }
  }

 private:
  void open_stream() {
    const uint32_t handler = job_.rw == RwMode::write ? handler_sink
                             : job_.rw == RwMode::read ? handler_source
                                                       : handler_echo_stream;
    // The preamble's size: the messages a source writes; the largest a sink will receive
    // (a verifying sink reassembles messages up to it, and refuses what it cannot hold).
    std::byte payload[open_verify_bytes];
    const std::size_t payload_bytes =
        write_preamble(payload, job_.rw == RwMode::write ? sizes_.max() : job_.bs, job_, stream_key_);
    auto id = connection_.open(handler, 0, std::span<const std::byte>(payload, payload_bytes), false, *this);
    if (!id) {
      fail(id.error());
      return;
    }
    id_ = id.value();
    if (job_.rw == RwMode::read) {
      read_timer_.set_callback(&StreamRunner::on_read_deadline, this);
      timer_at(connection_.loop(), read_timer_,
               window_.until_ns == UINT64_MAX ? Loop::clock_ns() + size_read_deadline_ns : window_.until_ns);
    } else {
      pump();
    }
  }

 public:
  void on_stream_data(std::span<const std::byte> bytes, bool) noexcept override {
    connection_.consume(id_, bytes.size());
    const uint64_t now = Loop::clock_ns();
    if (job_.rw == RwMode::write) {
      // This stream's count (the job's is the sum over streams) and verify counts.
      if (bytes.size() == sink_answer_bytes || bytes.size() == sink_answer_verify_bytes) read_sink_answer(bytes, result_);
      return;
    }
    received_total_ += bytes.size();
    if (job_.verify) verifier_.feed(bytes);
    if (progress_ != nullptr && job_.rw == RwMode::read) progress_->add(0, bytes.size());
    if (window_.measuring(now)) {
      result_.count_bytes(now, Direction::read, bytes.size());
      if (job_.rw == RwMode::read) result_.stream_bytes[index_] += bytes.size();
    }
    if (job_.rw == RwMode::bidi) {
      // Round trip of each message: its bytes came back.
      while (!sent_at_.empty() && received_total_ >= sent_at_.front().end_offset) {
        if (window_.measuring(now)) result_.count_op(now, now - sent_at_.front().started_ns, sent_at_.front().bytes);
        sent_at_.pop_front();
      }
    } else {
      if (window_.measuring(now)) {
        // Messages completed by this delivery, counted on the stream's own total: a delivery
        // is any part of a message (small ones when credit comes back in pieces), and
        // dividing each one by bs would lose every message split across deliveries.
        const uint64_t bs = std::max<uint32_t>(job_.bs, 1);
        result_.count_ops(now, (measured_bytes_ + bytes.size()) / bs - measured_bytes_ / bs);
        measured_bytes_ += bytes.size();
      }
      if (!job_.time_based && job_.size_bytes != 0 && received_total_ >= size_share_) {
        connection_.loop().timer_cancel(read_timer_);
        connection_.cancel(id_);
      }
    }
  }
  void on_stream_writable() noexcept override { pump(); }
  // The server's explanation of a stream it ended (a refusal names the option that bounds it).
  void on_stream_message(std::string_view message) noexcept override { peer_message_ = message; }
  void on_stream_finished(mux::MuxError error) noexcept override {
    connection_.loop().timer_cancel(read_timer_);
    finished_ = true;
    if (job_.verify && job_.rw != RwMode::write) {
      // A read stream is cut by our own cancel mid-message: only an echo that ended
      // cleanly must have returned every message whole.
      if (job_.rw == RwMode::bidi && error == mux::MuxError::none) verifier_.finish();
      add_verify(result_, verifier_.counts());
      if (verifier_.counts().errors() != 0) result_.add_error("verify: stream bytes damaged, missing or repeated");
    }
    const bool expected = error == mux::MuxError::none || (job_.rw == RwMode::read && error == mux::MuxError::cancelled);
    if (!expected) return fail(error);
    // Stream churn: a stream that wrote its messages is replaced while the run goes on.
    if (job_.stream_messages != 0 && !out_of_work(Loop::clock_ns())) {
      finished_ = false;
      ended_ = false;
      stream_messages_ = 0;
      sequence_ = 0;
      open_stream();
    }
  }

 private:
  void fail(mux::MuxError error) {
    if (progress_ != nullptr) progress_->errors.fetch_add(1, std::memory_order_relaxed);
    result_.add_error(mux::describe(error) + (peer_message_.empty() ? "" : ": " + peer_message_));
    finished_ = true;
  }
  bool out_of_work(uint64_t now) const {
    return window_.over(now) || (!job_.time_based && job_.size_bytes != 0 && written_total_ >= size_share_);
  }
  void pump() {
    while (!ended_) {
      const uint64_t now = Loop::clock_ns();
      if (message_bytes_ == 0) {  // between messages: start the next one (once, even if back-pressured)
        if (out_of_work(now) || (job_.stream_messages != 0 && stream_messages_ == job_.stream_messages)) {
          ended_ = true;
          (void)connection_.end(id_);
          return;
        }
        message_started_ = now;
        message_bytes_ = sizes_.next();
        stream_messages_++;
        if (job_.verify) stamp_message(std::span(stamped_).first(message_bytes_), stream_key_, sequence_++);
      }
      auto taken = connection_.write(id_, message_.first(message_bytes_).subspan(offset_), false);
      if (!taken) {
        fail(taken.error());
        return;
      }
      if (taken.value() == 0) return;  // on_stream_writable continues
      written_total_ += taken.value();
      result_.client_sent_bytes += taken.value();
      if (window_.measuring(now)) {
        result_.count_bytes(now, Direction::write, taken.value());
        result_.stream_bytes[index_] += taken.value();
      }
      offset_ += taken.value();
      if (offset_ == message_bytes_) {
        const std::size_t offset_end = offset_;  // the message's size
        offset_ = 0;
        if (progress_ != nullptr) progress_->add(1, message_bytes_);
        message_bytes_ = 0;
        const uint64_t completed = Loop::clock_ns();
        if (job_.rw == RwMode::bidi) {
          sent_at_.push_back({written_total_, message_started_, static_cast<uint32_t>(offset_end)});
        } else if (window_.measuring(completed)) {
          result_.count_op(completed, completed - message_started_, static_cast<uint32_t>(offset_end));
        }
      }
    }
  }
  static void on_read_deadline(engine::Timer& timer) noexcept {
    auto& self = *static_cast<StreamRunner*>(timer.context());
    self.connection_.cancel(self.id_);
  }

  mux::Connection& connection_;
  const Job& job_;
  JobResult& result_;
  const Window& window_;
  uint64_t size_share_;
  SizePicker sizes_;
  uint64_t stream_key_;
  Progress* progress_;
  std::vector<std::byte> stamped_;  // verify: the message being written, stamped
  std::span<const std::byte> message_;  // the message being written: its first message_bytes_
  uint32_t message_bytes_ = 0;  // 0: between messages
  uint64_t stream_messages_ = 0;  // started on this stream (stream_messages: a new stream after so many)
  uint64_t sequence_ = 0;
  mux::StreamId id_ = 0;
  std::size_t offset_ = 0;
  uint64_t message_started_ = 0;
  uint64_t written_total_ = 0;
  uint64_t received_total_ = 0;
  uint64_t measured_bytes_ = 0;  // read: bytes received in the window
  struct Sent {
    uint64_t end_offset;  // the stream's bytes written when the message was whole
    uint64_t started_ns;
    uint32_t bytes;
  };
  std::deque<Sent> sent_at_;  // bidi: messages waiting for their echo
  std::size_t index_;  // into result_.stream_bytes
  StreamVerifier verifier_;  // read and bidi: what comes back
  engine::Timer read_timer_;
  std::string peer_message_;
  bool ended_ = false;
  bool finished_ = false;
};

// The route key of this process's next connection (wire/SPEC.md §4.1): consecutive keys
// from a random start, so that a server of N loops takes the connections of every client
// loop of this process in turn (loop_of_route_key ignores bit 0: hence steps of 2). A
// session keeps its key on every connection, so its resumes reach the same loop. Once per
// connection, from every client loop.
uint64_t next_route_key() {
  static const uint64_t start = std::random_device{}() | 1;  // never 0: 0 means no key
  static std::atomic<uint64_t> connections{0};
  return start + 2 * connections.fetch_add(1, std::memory_order_relaxed);
}

// Dials the load server. Every connection is resumable: a broken TCP connection (ringmux-chaos
// between) is replaced and its session resumes, invisible to the jobs but for the counts.
struct Dialer final : engine::ConnectHandler, mux::ConnectionObserver {
  Dialer(Loop& l, const RunTarget& target, const engine::Address& address) : loop(l), connector(l, *this) {
    options.resume = true;
    options.peer = address;
    options.handshake = target.handshake;
  }
  void on_connect(Result<int, engine::IoError> fd) noexcept override {
    if (!fd) {
      error = engine::describe(fd.error());
      failed = true;
      return;
    }
    options.session.route_key = next_route_key();
    connections.push_back(std::make_unique<mux::Connection>(loop, fd.value(), true, nullptr, *this, options));
    resume_latency.emplace_back();
    connections.back()->start();
  }
  void on_connection_closed(mux::Connection&, mux::MuxError reason, engine::IoError io_error) noexcept override {
    closed++;
    last_close = reason;
    last_close_io = io_error;
  }
  void on_connection_established(mux::Connection&) noexcept override { established++; }
  void on_connection_resumed(mux::Connection& connection, uint64_t duration_ns) noexcept override {
    for (std::size_t i = 0; i < connections.size(); i++) {
      if (connections[i].get() == &connection) resume_latency[i].record(duration_ns);
    }
  }
  Loop& loop;
  engine::Connector connector;
  mux::ConnectionOptions options;
  std::vector<std::unique_ptr<mux::Connection>> connections;
  std::vector<Histogram> resume_latency;  // per connection, ns
  std::size_t closed = 0;
  std::size_t established = 0;  // sessions whose first handshake completed
  mux::MuxError last_close = mux::MuxError::none;
  engine::IoError last_close_io = engine::IoError::none;
  bool failed = false;
  std::string error;

  // Why the newest connection's session is not up: its handshake stage refused the peer
  // (the stage's cause), or its session ended before the server answered; "" while it may
  // still come up.
  std::string refusal() const {
    const mux::Connection& newest = *connections.back();
    if (!newest.transport_failure().empty()) return newest.transport_failure();
    std::string why;
    if (closed == connections.size()) {
      why = std::string("the session ended before the server answered its HELLO: ") + mux::describe(last_close) +
            " (" + engine::describe(last_close_io) + ")";
    } else if (newest.resume_stats().transports_lost >= lost_before_up_max) {
      why = "the server ended " + std::to_string(lost_before_up_max) +
            " connections in a row before answering the HELLO";
    } else {
      return "";
    }
    if (!options.handshake) why += "; is it a TLS server (this client has no --tls-*)?";
    return why;
  }

  // Connections the server may end before a session is up (a reset on the way is resumed)
  // before the run gives up: a server that ends every one refuses this client.
  static constexpr uint64_t lost_before_up_max = 3;
};

// How long a new connection's session may take to come up (TCP connected; the TLS handshake
// and the HELLO exchange, one or two round trips): the server's own handshake and HELLO
// deadlines (limits::hello_timeout_ns) with a margin, so that its verdict arrives first.
constexpr uint64_t session_up_timeout_ns = 2 * limits::hello_timeout_ns;

// Runs `clones` on a loop of this thread, pinned to `cpu` (-1: not pinned).
void run_ringmux(const std::vector<CloneRun>& clones, int cpu, const RunTarget& target, Progress* shared_progress,
                 RunControl& control) {
  if (cpu >= 0) (void)engine::pin_current_thread(cpu);
  // The runners count into this loop's own totals, passed on to the shared ones by the
  // housekeeping timer and at the end: no cache line is written per call by two loops.
  Progress local_progress;
  Progress* progress = shared_progress != nullptr ? &local_progress : nullptr;
  auto pass_on_progress = [&] {
    if (shared_progress == nullptr) return;
    shared_progress->add(local_progress.ops.exchange(0, std::memory_order_relaxed),
                         local_progress.bytes.exchange(0, std::memory_order_relaxed));
    shared_progress->errors.fetch_add(local_progress.errors.exchange(0, std::memory_order_relaxed),
                                      std::memory_order_relaxed);
  };
  auto created = Loop::create();
  auto address = engine::Address::parse(target.host + ":" + std::to_string(target.port));
  auto fail_all = [&](const std::string& message) {
    for (const CloneRun& clone : clones) clone.result->add_error(message);
  };
  if (!created) return fail_all(std::string("loop: ") + engine::describe(created.error()));
  if (!address) return fail_all("bad target address " + target.host);
  Loop& loop = *created.value();
  Dialer dialer(loop, target, address.value());
  // Every stream of the jobs may be open at once on the shared connection.
  uint64_t streams = 0;
  for (const CloneRun& clone : clones) {
    streams += clone.job->rw == RwMode::unary || clone.job->rw == RwMode::quorum ? 0 : clone.job->streams;
  }
  dialer.options.session.streams_concurrent_max = streams_limit_for(streams);
  // Quorum jobs call the cluster of their --peers through a client manager (it dials each).
  std::unique_ptr<cluster::Manager> cluster;
  std::vector<std::string> peers;
  for (const CloneRun& clone : clones) {
    for (const std::string& peer : clone.job->peers) {
      if (std::find(peers.begin(), peers.end(), peer) == peers.end()) peers.push_back(peer);
    }
  }
  if (!peers.empty()) {
    cluster::ManagerOptions options;
    options.client_only = true;
    options.handshake = target.handshake;
    cluster = std::make_unique<cluster::Manager>(loop, engine::Address::loopback_v4(0), options);
    for (const std::string& peer : peers) {
      auto parsed = engine::Address::parse(peer);
      if (!parsed) return fail_all("bad peer address " + peer);
      cluster->add_peer(parsed.value());
    }
    // Sessions first (bounded): a member that stays down makes its calls time out instead.
    loop.run_until(
        [&] {
          for (const std::string& peer : peers) {
            if (cluster->session(engine::Address::parse(peer).value()) == nullptr) return false;
          }
          return true;
        },
        2'000'000'000ull);
  }
  // One shared connection, plus one per job that wants its own (none for quorum jobs alone).
  std::size_t wanted = 0;
  bool shared = false;
  for (const CloneRun& clone : clones) {
    if (clone.job->rw == RwMode::quorum) continue;
    wanted += clone.job->own_connection ? 1 : 0;
    shared |= !clone.job->own_connection;
  }
  wanted += shared ? 1 : 0;
  for (std::size_t i = 0; i < wanted && !dialer.failed && !control.stopped(); i++) {
    const std::size_t before = dialer.connections.size();
    dialer.connector.connect(address.value(), 5000);
    loop.run_until([&] { return dialer.failed || dialer.connections.size() > before; }, 10'000'000'000ull);
    if (dialer.failed || dialer.connections.size() == before) break;
    // The session up before any job runs: a refused handshake (a certificate the server
    // does not accept, a server speaking TLS or not) fails the run with its cause, not
    // with each call's deadline.
    loop.run_until([&] { return dialer.established > before || !dialer.refusal().empty(); }, session_up_timeout_ns);
    if (dialer.established <= before) {
      dialer.failed = true;
      dialer.error = dialer.refusal();
      if (dialer.error.empty()) dialer.error = "the session did not come up (no HELLO_ACK) in time";
      break;
    }
  }
  if (dialer.failed || dialer.connections.size() != wanted) {
    fail_all("connect to " + target.host + ":" + std::to_string(target.port) + ": " +
             (dialer.failed ? dialer.error : control.stopped() ? "stopped" : "timed out"));
    for (auto& c : dialer.connections) c->close();
    loop.run_until([&] { return dialer.closed == dialer.connections.size(); }, 5'000'000'000ull);
    return;
  }
  // Each clone's window; set once its runners are built (100,000 streams, or a 64 MiB
  // message to fill, take a while), just before they start together.
  std::vector<Window> windows(clones.size());
  std::vector<std::unique_ptr<Runner>> runners;
  std::vector<std::size_t> clone_of_runner;
  // What every unverified stream writes (read-only, shared by the streams of every job).
  uint32_t message_bytes = 0;
  for (const CloneRun& clone : clones) message_bytes = std::max(message_bytes, SizePicker(*clone.job, 0).max());
  const std::vector<std::byte> stream_filler(message_bytes, std::byte{0x6b});
  // The shared connection, when some job uses it, is the first; own connections follow.
  std::vector<std::size_t> connection_of(clones.size(), 0);
  std::size_t own = shared ? 1 : 0;
  for (std::size_t j = 0; j < clones.size(); j++) {
    const Job& job = *clones[j].job;
    JobResult& result = *clones[j].result;
    if (job.rw == RwMode::quorum) {
      runners.push_back(std::make_unique<QuorumRunner>(*cluster, job, result, windows[j], progress));
      clone_of_runner.push_back(j);
      continue;
    }
    if (job.own_connection) connection_of[j] = own++;
    mux::Connection& connection = *dialer.connections[connection_of[j]];
    if (job.rw == RwMode::unary) {
      runners.push_back(std::make_unique<UnaryRunner>(connection, job, result, windows[j],
                                                      verify_stream_key(clones[j].index, 0), progress));
      clone_of_runner.push_back(j);
    } else {
      result.stream_bytes.assign(job.streams, 0);
      const std::span<const std::byte> filler(stream_filler.data(), SizePicker(job, 0).max());
      for (uint32_t s = 0; s < job.streams; s++) {
        runners.push_back(std::make_unique<StreamRunner>(connection, job, result, windows[j], job.size_bytes / job.streams,
                                                         s, verify_stream_key(clones[j].index, s), filler, progress));
        clone_of_runner.push_back(j);
      }
    }
  }
  const uint64_t start_ns = Loop::clock_ns();
  for (std::size_t j = 0; j < clones.size(); j++) {
    windows[j] = Window(*clones[j].job, start_ns, &control.stop_ns);
    clones[j].result->begin(windows[j], clones[j].log_window_ns);
  }
  for (auto& runner : runners) runner->start();
  // Housekeeping on the loop: copies for the status reports, and a stop passed on to the
  // runners that wait on timers.
  struct Housekeeping {
    const std::vector<CloneRun>& clones;
    const std::vector<Window>& windows;
    std::vector<std::unique_ptr<Runner>>& runners;
    RunControl& control;
    Loop& loop;
    std::function<void()> pass_on_progress;
    engine::Timer timer;
    uint64_t next_publish_ns = 0;
    bool interrupted = false;
    static void on_timer(engine::Timer& timer) noexcept {
      auto& self = *static_cast<Housekeeping*>(timer.context());
      const uint64_t now = Loop::clock_ns();
      self.pass_on_progress();
      if (self.control.stopped() && !self.interrupted) {
        self.interrupted = true;
        for (auto& runner : self.runners) runner->interrupt(now);
      }
      if (self.control.live != nullptr && now >= self.next_publish_ns) {
        for (std::size_t j = 0; j < self.clones.size(); j++) {
          self.control.live->publish(self.clones[j].index, 0, 1, *self.clones[j].result, self.windows[j].closed_at(now));
        }
        self.next_publish_ns = now + live_publish_ns;
      }
      self.loop.timer_start(self.timer, stop_poll_ns);
    }
  } housekeeping{clones, windows, runners, control, loop, pass_on_progress};
  housekeeping.timer.set_callback(&Housekeeping::on_timer, &housekeeping);
  loop.timer_start(housekeeping.timer, stop_poll_ns);
  uint64_t budget_ns = 0;
  for (const CloneRun& clone : clones) budget_ns = std::max(budget_ns, clone.job->ramp_time_ns + clone.job->runtime_ns);
  budget_ns += 60'000'000'000ull;  // size-bound jobs and the drain at the end
  // A clone's window closes when its last runner is done (within a loop turn of it).
  std::vector<std::size_t> running(clones.size(), 0);
  for (const std::size_t j : clone_of_runner) running[j]++;
  std::vector<bool> counted(runners.size(), false);
  const bool finished = loop.run_until(
      [&] {
        bool all = true;
        for (std::size_t r = 0; r < runners.size(); r++) {
          if (!runners[r]->done()) {
            all = false;
          } else if (!counted[r]) {
            counted[r] = true;
            const std::size_t j = clone_of_runner[r];
            if (--running[j] == 0) clones[j].result->close(windows[j], Loop::clock_ns());
          }
        }
        return all;
      },
      budget_ns);
  loop.timer_cancel(housekeeping.timer);
  pass_on_progress();
  if (!finished) fail_all("jobs did not finish within runtime + 60 s");
  for (std::size_t j = 0; j < clones.size(); j++) {
    if (running[j] != 0) clones[j].result->close(windows[j], Loop::clock_ns());
    if (clones[j].job->rw == RwMode::quorum) continue;
    const std::size_t c = connection_of[j];
    const mux::ResumeStats resumed = dialer.connections[c]->resume_stats();
    clones[j].result->resumes = resumed.resumes;
    clones[j].result->bytes_replayed = resumed.bytes_replayed;
    clones[j].result->resume_latency.merge(dialer.resume_latency[c]);
  }
  for (auto& c : dialer.connections) c->close();
  if (cluster) cluster->close();
  loop.run_until([&] { return dialer.closed == dialer.connections.size() && (!cluster || cluster->closed()); },
                 5'000'000'000ull);
  runners.clear();
}

}  // namespace

int clone_cpu(const Job& job, uint32_t clone) noexcept {
  if (job.cpus_allowed.empty()) return -1;
  return job.cpus_allowed[clone % job.cpus_allowed.size()];
}

void run_clones(const std::vector<CloneRun>& clones, const RunTarget& target, Progress* progress, RunControl& control) {
  if (clones.empty()) return;
  const bool tcp = clones.front().job->ioengine == IoEngine::tcp;
  for (const CloneRun& clone : clones) RM_ASSERT((clone.job->ioengine == IoEngine::tcp) == tcp);
  if (tcp) return run_tcp_clones(clones, target, progress, control);
  // One loop per CPU the clones are placed on, each on a thread of its own pinned there.
  std::vector<int> cpus;
  std::vector<std::vector<CloneRun>> on_cpu;
  for (const CloneRun& clone : clones) {
    const int cpu = clone_cpu(*clone.job, clone.clone);
    const auto at = std::find(cpus.begin(), cpus.end(), cpu);
    if (at == cpus.end()) {
      cpus.push_back(cpu);
      on_cpu.push_back({clone});
    } else {
      on_cpu[static_cast<std::size_t>(at - cpus.begin())].push_back(clone);
    }
  }
  std::vector<std::thread> loop_threads;
  for (std::size_t i = 0; i < cpus.size(); i++) {
    loop_threads.emplace_back([&, i] { run_ringmux(on_cpu[i], cpus[i], target, progress, control); });
  }
  for (std::thread& thread : loop_threads) thread.join();
}

}  // namespace ringmux::loadgen
