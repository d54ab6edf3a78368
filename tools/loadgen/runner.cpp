#include "tools/loadgen/runner.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "engine/engine.h"
#include "engine/loop.h"
#include "engine/socket.h"
#include "mux/link/connection.h"
#include "mux/rpc/call.h"
#include "cluster/manager.h"
#include "cluster/quorum.h"
#include "tools/blocking_io.h"
#include "tools/loadgen/pacer.h"
#include "tools/loadgen/protocol.h"
#include "tools/loadgen/verify.h"

namespace ringmux::loadgen {

using engine::Loop;

namespace {

// The measured window of one job: [from, until); `until` is 0 when only size bounds it.
struct Window {
  uint64_t start_ns = 0;
  uint64_t from_ns = 0;
  uint64_t until_ns = 0;
  explicit Window(const Job& job) {
    start_ns = Loop::clock_ns();
    from_ns = start_ns + job.ramp_time_ns;
    until_ns = job.runtime_ns == 0 ? UINT64_MAX : from_ns + job.runtime_ns;
  }
  bool measuring(uint64_t now) const { return now >= from_ns && now < until_ns; }
  bool over(uint64_t now) const { return now >= until_ns; }
};

// Arms `timer` to fire at `at_ns` on the monotonic clock. Loop::timer_start counts its
// delay from the loop's cached time (the start of its current iteration), which lags the
// clock by however long the caller has run since: a delay measured from the clock would
// fire early by that much (runners built before the loop turns again: 240 ms with a
// 64 MiB message to fill on a loaded machine, enough to cut a 300 ms job's read stream
// before its first byte).
void timer_at(Loop& loop, engine::Timer& timer, uint64_t at_ns) {
  loop.timer_start(timer, at_ns > loop.now_ns() ? at_ns - loop.now_ns() : 0);
}

// Message sizes of a job: bs, or drawn from bssplit by a generator of its own per stream
// or call source (seeded, so a run is repeatable and the mix holds on every stream).
class SizePicker {
 public:
  SizePicker(const Job& job, uint64_t seed) noexcept : job_(job), state_(seed | 1) {}
  uint32_t next() noexcept {
    if (job_.bssplit.empty()) return job_.bs;
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    uint64_t roll = (state_ * 0x2545f4914f6cdd1dull >> 32) % 100;
    for (const BsSplitEntry& entry : job_.bssplit) {
      if (roll < entry.percent) return entry.bytes;
      roll -= entry.percent;
    }
    return job_.bssplit.back().bytes;
  }
  uint32_t max() const noexcept {
    uint32_t largest = job_.bs;
    for (const BsSplitEntry& entry : job_.bssplit) largest = std::max(largest, entry.bytes);
    return largest;
  }

 private:
  const Job& job_;
  uint64_t state_;
};

void add_verify(JobResult& result, const VerifyCounts& counts) {
  result.verified_messages += counts.messages;
  result.verify_mismatches += counts.mismatches;
  result.verify_gaps += counts.gaps;
  result.verify_duplicates += counts.duplicates;
}

// A sink's answer (protocol.h): its byte count and, verified, its verifier's counts.
void read_sink_answer(std::span<const std::byte> answer, JobResult& result) {
  uint64_t fields[5] = {};
  std::memcpy(fields, answer.data(), std::min(answer.size(), sizeof(fields)));
  result.server_confirmed_bytes += fields[0];
  if (answer.size() >= sink_answer_verify_bytes) add_verify(result, {fields[1], fields[2], fields[3], fields[4]});
}

// The preamble of a unary request or a stream's OPEN (protocol.h).
std::size_t write_preamble(std::span<std::byte> out, uint32_t size, const Job& job, uint64_t stream_key) {
  const uint32_t flags = job.verify ? flag_verify : 0;
  std::memcpy(out.data(), &size, 4);
  std::memcpy(out.data() + 4, &flags, 4);
  if (!job.verify) return preamble_bytes;
  std::memcpy(out.data() + preamble_bytes, &stream_key, 8);
  return open_verify_bytes;
}

// ---- ringmux engine ----------------------------------------------------------------------

class Runner {
 public:
  virtual ~Runner() = default;
  virtual void start() = 0;
  virtual bool done() const = 0;
};

// Unary calls. Closed loop: iodepth calls in flight, each completion issues the next.
// Open loop (rate_iops): the Pacer's schedule (pacer.h): at most iodepth calls in flight,
// a late call starts as soon as a slot frees, its latency counts from its due time, and
// the schedule ends with the window.
class UnaryRunner final : public Runner {
 public:
  UnaryRunner(mux::Connection& connection, const Job& job, JobResult& result, uint64_t stream_key, Progress* progress)
      : connection_(connection), job_(job), result_(result), window_(job), sizes_(job, stream_key), stream_key_(stream_key),
        progress_(progress), request_(sizes_.max(), std::byte{0x6b}), tick_(&UnaryRunner::on_tick, this) {
    write_preamble(request_, job.response_bytes(), job, stream_key);
  }
  ~UnaryRunner() override { connection_.loop().timer_cancel(tick_); }

  void start() override {
    window_ = Window(job_);  // the job starts now, however long building it took
    if (job_.rate_iops != 0) {
      pacer_.emplace(job_.rate_iops, window_.start_ns, window_.until_ns);
      pace(Loop::clock_ns());
      return;
    }
    for (uint32_t i = 0; i < job_.iodepth; i++) issue(Loop::clock_ns());
  }
  bool done() const override { return stopping_ && in_flight_ == 0; }

 private:
  bool should_stop(uint64_t now) const {
    return window_.over(now) || (job_.size_bytes != 0 && sent_bytes_ >= job_.size_bytes) || result_.errors >= job_errors_max;
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
    const uint64_t wake = in_flight_ < job_.iodepth ? pacer_->wake_ns() : window_.until_ns;
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
        result_.errors++;
        if (progress_ != nullptr) progress_->errors.fetch_add(1, std::memory_order_relaxed);
        if (job_.verify && r.message.rfind("verify:", 0) == 0) result_.verify_mismatches++;
        if (result_.error_message.empty()) result_.error_message = mux::describe(r.error) + (r.message.empty() ? "" : ": " + r.message);
      } else if (job_.verify && !check_response(r.response, sequence)) {
        result_.errors++;
        if (result_.error_message.empty()) result_.error_message = "verify: response damaged, missing or repeated";
      } else if (window_.measuring(now) || window_.until_ns == UINT64_MAX) {
        result_.ops++;
        result_.bytes_written += size;
        result_.bytes_read += r.response.size();
        result_.latency.record(now - since_ns);
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
  Window window_;
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
  QuorumRunner(cluster::Manager& manager, const Job& job, JobResult& result, Progress* progress)
      : manager_(manager), job_(job), result_(result), window_(job), sizes_(job, 0), progress_(progress),
        request_(sizes_.max(), std::byte{0x6b}) {
    write_preamble(request_, job.response_bytes(), job, 0);
    for (const std::string& peer : job.peers) configuration_.push_back(engine::Address::parse(peer).value());
    if (job.quorum == "majority") quorum_ = cluster::quorum::majority();
    else if (job.quorum == "all") quorum_ = cluster::quorum::all();
    else if (job.quorum == "first") quorum_ = cluster::quorum::first();
    else quorum_ = cluster::quorum::threshold(std::stoul(job.quorum));
  }
  void start() override {
    window_ = Window(job_);
    for (uint32_t i = 0; i < job_.iodepth; i++) issue();
  }
  bool done() const override { return stopping_ && in_flight_ == 0; }

 private:
  void issue() {
    const uint64_t now = Loop::clock_ns();
    if (window_.over(now) || (job_.size_bytes != 0 && sent_bytes_ >= job_.size_bytes) ||
        result_.errors >= job_errors_max) {
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
                         result_.errors++;
                         if (progress_ != nullptr) progress_->errors.fetch_add(1, std::memory_order_relaxed);
                         if (result_.error_message.empty()) {
                           result_.error_message = std::string("quorum ") + job_.quorum + " failed: " + mux::describe(r.error);
                         }
                       } else if (window_.measuring(end) || window_.until_ns == UINT64_MAX) {
                         result_.ops++;
                         result_.bytes_written += size * configuration_.size();
                         for (const auto& reply : r.replies) result_.bytes_read += reply.response.size();
                         result_.latency.record(end - now);
                       }
                       if (!stopping_) issue();
                     });
  }

  cluster::Manager& manager_;
  const Job& job_;
  JobResult& result_;
  Window window_;
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
  StreamRunner(mux::Connection& connection, const Job& job, JobResult& result, uint64_t size_share, std::size_t index,
               uint64_t stream_key, std::span<const std::byte> filler, Progress* progress)
      : connection_(connection), job_(job), result_(result), window_(job), size_share_(size_share), sizes_(job, stream_key),
        stream_key_(stream_key), progress_(progress), stamped_(job.verify ? sizes_.max() : 0, std::byte{0x6b}),
        message_(job.verify ? std::span<const std::byte>(stamped_) : filler), index_(index),
        verifier_(stream_key, message_bytes_max) {
    RM_ASSERT(message_.size() >= sizes_.max());
  }

  void start() override {
    window_ = Window(job_);
    open_stream();
  }
  bool done() const override { return finished_; }

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
               window_.until_ns == UINT64_MAX ? Loop::clock_ns() + 10'000'000'000ull : window_.until_ns);
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
      result_.bytes_read += bytes.size();
      if (job_.rw == RwMode::read) result_.stream_bytes[index_] += bytes.size();
    }
    if (job_.rw == RwMode::bidi) {
      // Round trip of each message: its bytes came back.
      while (!sent_at_.empty() && received_total_ >= sent_at_.front().first) {
        if (window_.measuring(now)) result_.latency.record(now - sent_at_.front().second);
        sent_at_.pop_front();
      }
    } else {
      if (window_.measuring(now)) {
        // Messages completed by this delivery, counted on the stream's own total: a delivery
        // is any part of a message (small ones when credit comes back in pieces), and
        // dividing each one by bs would lose every message split across deliveries.
        const uint64_t bs = std::max<uint32_t>(job_.bs, 1);
        result_.ops += (measured_bytes_ + bytes.size()) / bs - measured_bytes_ / bs;
        measured_bytes_ += bytes.size();
      }
      if (job_.size_bytes != 0 && received_total_ >= size_share_) {
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
      if (verifier_.counts().errors() != 0) {
        result_.errors++;
        if (result_.error_message.empty()) result_.error_message = "verify: stream bytes damaged, missing or repeated";
      }
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
    result_.errors++;
    if (progress_ != nullptr) progress_->errors.fetch_add(1, std::memory_order_relaxed);
    if (result_.error_message.empty()) {
      result_.error_message = mux::describe(error) + (peer_message_.empty() ? "" : ": " + peer_message_);
    }
    finished_ = true;
  }
  bool out_of_work(uint64_t now) const {
    return window_.over(now) || (job_.size_bytes != 0 && written_total_ >= size_share_);
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
        result_.bytes_written += taken.value();
        result_.stream_bytes[index_] += taken.value();
      }
      offset_ += taken.value();
      if (offset_ == message_bytes_) {
        offset_ = 0;
        if (progress_ != nullptr) progress_->add(1, message_bytes_);
        message_bytes_ = 0;
        const uint64_t completed = Loop::clock_ns();
        if (job_.rw == RwMode::bidi) {
          sent_at_.emplace_back(written_total_, message_started_);
        } else if (window_.measuring(completed)) {
          result_.ops++;
          result_.latency.record(completed - message_started_);
        }
        if (job_.rw == RwMode::bidi && window_.measuring(completed)) result_.ops++;
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
  Window window_;
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
  std::deque<std::pair<uint64_t, uint64_t>> sent_at_;  // bidi: (end offset, start time)
  std::size_t index_;  // into result_.stream_bytes
  StreamVerifier verifier_;  // read and bidi: what comes back
  engine::Timer read_timer_;
  std::string peer_message_;
  bool ended_ = false;
  bool finished_ = false;
};

// Dials the load server. Every connection is resumable: a broken TCP connection (ringmux-chaos
// between) is replaced and its session resumes, invisible to the jobs but for the counts.
struct Dialer final : engine::ConnectHandler, mux::ConnectionObserver {
  Dialer(Loop& l, const engine::Address& target) : loop(l), connector(l, *this) {
    options.resume = true;
    options.peer = target;
  }
  void on_connect(Result<int, engine::IoError> fd) noexcept override {
    if (!fd) {
      error = engine::describe(fd.error());
      failed = true;
      return;
    }
    connections.push_back(std::make_unique<mux::Connection>(loop, fd.value(), true, nullptr, *this, options));
    resume_latency.emplace_back();
    connections.back()->start();
  }
  void on_connection_closed(mux::Connection&, mux::MuxError, engine::IoError) noexcept override { closed++; }
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
  bool failed = false;
  std::string error;
};

void run_ringmux(const std::vector<const Job*>& jobs, std::vector<JobResult*>& results, const RunTarget& target,
                 const std::vector<std::size_t>& job_indices, Progress* progress) {
  for (const Job* job : jobs) {
    if (!job->cpus_allowed.empty()) {
      (void)engine::pin_current_thread(job->cpus_allowed.front());
      break;
    }
  }
  auto created = Loop::create();
  auto address = engine::Address::parse(target.host + ":" + std::to_string(target.port));
  auto fail_all = [&](const std::string& message) {
    for (JobResult* r : results) {
      r->errors++;
      r->error_message = message;
    }
  };
  if (!created) return fail_all(std::string("loop: ") + engine::describe(created.error()));
  if (!address) return fail_all("bad target address " + target.host);
  Loop& loop = *created.value();
  Dialer dialer(loop, address.value());
  // Every stream of the jobs may be open at once on the shared connection.
  uint64_t streams = 0;
  for (const Job* job : jobs) streams += job->rw == RwMode::unary || job->rw == RwMode::quorum ? 0 : job->streams;
  dialer.options.session.streams_concurrent_max = streams_limit_for(streams);
  // Quorum jobs call the cluster of their --peers through a client manager (it dials each).
  std::unique_ptr<cluster::Manager> cluster;
  std::vector<std::string> peers;
  for (const Job* job : jobs) {
    for (const std::string& peer : job->peers) {
      if (std::find(peers.begin(), peers.end(), peer) == peers.end()) peers.push_back(peer);
    }
  }
  if (!peers.empty()) {
    cluster::ManagerOptions options;
    options.client_only = true;
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
  for (const Job* job : jobs) {
    if (job->rw == RwMode::quorum) continue;
    wanted += job->own_connection ? 1 : 0;
    shared |= !job->own_connection;
  }
  wanted += shared ? 1 : 0;
  for (std::size_t i = 0; i < wanted && !dialer.failed; i++) {
    const std::size_t before = dialer.connections.size();
    dialer.connector.connect(address.value(), 5000);
    loop.run_until([&] { return dialer.failed || dialer.connections.size() > before; }, 10'000'000'000ull);
  }
  if (dialer.failed || dialer.connections.size() != wanted) {
    fail_all("connect to " + target.host + ":" + std::to_string(target.port) + ": " + dialer.error);
    for (auto& c : dialer.connections) c->close();
    loop.run_until([&] { return dialer.closed == dialer.connections.size(); }, 5'000'000'000ull);
    return;
  }
  std::vector<std::unique_ptr<Runner>> runners;
  // What every unverified stream writes (read-only, shared by the streams of every job).
  uint32_t message_bytes = 0;
  for (const Job* job : jobs) message_bytes = std::max(message_bytes, SizePicker(*job, 0).max());
  const std::vector<std::byte> stream_filler(message_bytes, std::byte{0x6b});
  // The shared connection, when some job uses it, is the first; own connections follow.
  std::vector<std::size_t> connection_of(jobs.size(), 0);
  std::size_t own = shared ? 1 : 0;
  for (std::size_t j = 0; j < jobs.size(); j++) {
    const Job& job = *jobs[j];
    if (job.rw == RwMode::quorum) {
      runners.push_back(std::make_unique<QuorumRunner>(*cluster, job, *results[j], progress));
      continue;
    }
    if (job.own_connection) connection_of[j] = own++;
    mux::Connection& connection = *dialer.connections[connection_of[j]];
    if (job.rw == RwMode::unary) {
      runners.push_back(
          std::make_unique<UnaryRunner>(connection, job, *results[j], verify_stream_key(job_indices[j], 0), progress));
    } else {
      results[j]->stream_bytes.assign(job.streams, 0);
      const std::span<const std::byte> filler(stream_filler.data(), SizePicker(job, 0).max());
      for (uint32_t s = 0; s < job.streams; s++) {
        runners.push_back(std::make_unique<StreamRunner>(connection, job, *results[j], job.size_bytes / job.streams, s,
                                                         verify_stream_key(job_indices[j], s), filler, progress));
      }
    }
  }
  for (auto& runner : runners) runner->start();
  uint64_t budget_ns = 0;
  for (const Job* job : jobs) budget_ns = std::max(budget_ns, job->ramp_time_ns + job->runtime_ns);
  budget_ns += 60'000'000'000ull;  // size-bound jobs and the drain at the end
  const bool finished = loop.run_until(
      [&] {
        for (auto& runner : runners) {
          if (!runner->done()) return false;
        }
        return true;
      },
      budget_ns);
  if (!finished) fail_all("jobs did not finish within runtime + 60 s");
  for (std::size_t j = 0; j < jobs.size(); j++) {
    if (jobs[j]->rw == RwMode::quorum) continue;
    const std::size_t c = connection_of[j];
    const mux::ResumeStats resumed = dialer.connections[c]->resume_stats();
    results[j]->resumes = resumed.resumes;
    results[j]->bytes_replayed = resumed.bytes_replayed;
    results[j]->resume_latency.merge(dialer.resume_latency[c]);
  }
  for (auto& c : dialer.connections) c->close();
  if (cluster) cluster->close();
  loop.run_until([&] { return dialer.closed == dialer.connections.size() && (!cluster || cluster->closed()); },
                 5'000'000'000ull);
  runners.clear();
}

// ---- tcp engine (the raw baseline) -------------------------------------------------------

int tcp_connect(const RunTarget& target, uint32_t mode, const Job& job, uint64_t stream_key, std::string& error) {
  auto address = engine::Address::parse(target.host + ":" + std::to_string(target.port));
  if (!address) {
    error = "bad target address";
    return -1;
  }
  const int fd = ::socket(address->storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (fd < 0 || ::connect(fd, address->sockaddr_ptr(), address->length) != 0) {
    error = std::string("connect: ") + std::strerror(errno);
    if (fd >= 0) ::close(fd);
    return -1;
  }
  std::byte hello[tcp_hello_bytes] = {};
  write_preamble(hello, mode, job, stream_key);  // mode, flags, stream key
  // The message size, as in a stream's OPEN: a source's messages, a sink's largest.
  const uint32_t message_bytes = mode == tcp_mode_sink ? SizePicker(job, 0).max() : job.bs;
  std::memcpy(hello + open_verify_bytes, &message_bytes, sizeof(message_bytes));
  if (!tools::send_all(fd, hello, sizeof(hello))) {
    error = "hello failed";
    ::close(fd);
    return -1;
  }
  return fd;
}

// Pipelined echo: iodepth requests in flight on one connection; each response is the
// request's own bytes. Verified, the echoed byte stream is checked like a read stream.
void tcp_unary(const Job& job, JobResult& result, const RunTarget& target, uint64_t stream_key, Progress* progress) {
  std::string error;
  const int fd = tcp_connect(target, tcp_mode_echo, job, stream_key, error);
  if (fd < 0) {
    result.errors++;
    result.error_message = error;
    return;
  }
  Window window(job);
  SizePicker sizes(job, stream_key);
  StreamVerifier verifier(stream_key, message_bytes_max);
  std::vector<std::byte> out;  // requests of one send, built in place (capacity kept)
  std::vector<std::byte> buffer(256 * 1024);
  struct Issued {
    uint64_t at_ns;
    uint32_t bytes;
  };
  std::deque<Issued> issued;
  uint64_t sequence = 0;
  uint64_t sent_bytes = 0;
  auto send_requests = [&](uint32_t count, uint64_t now) {
    out.clear();
    for (uint32_t i = 0; i < count; i++) {
      const uint32_t size = sizes.next();
      const std::size_t at = out.size();
      out.resize(at + size, std::byte{0x6b});
      if (job.verify) stamp_message(std::span(out).subspan(at, size), stream_key, sequence++);
      issued.push_back({now, size});
      sent_bytes += size;
    }
    return tools::send_all(fd, out.data(), out.size());
  };
  bool ok = send_requests(job.iodepth, Loop::clock_ns());
  uint64_t partial = 0;
  bool stopping = false;
  while (ok && !issued.empty()) {
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      ok = false;
      break;
    }
    const uint64_t now = Loop::clock_ns();
    if (job.verify) verifier.feed(std::span<const std::byte>(buffer.data(), static_cast<std::size_t>(n)));
    partial += static_cast<uint64_t>(n);
    uint32_t completed = 0;
    while (!issued.empty() && partial >= issued.front().bytes) {
      const Issued call = issued.front();
      issued.pop_front();
      partial -= call.bytes;
      if (progress != nullptr) progress->add(1, 2ull * call.bytes);
      if (window.measuring(now) || window.until_ns == UINT64_MAX) {
        result.ops++;
        result.bytes_written += call.bytes;
        result.bytes_read += call.bytes;
        result.latency.record(now - call.at_ns);
      }
      completed++;
    }
    stopping = stopping || window.over(now) || (job.size_bytes != 0 && sent_bytes >= job.size_bytes);
    if (completed > 0 && !stopping) ok = send_requests(completed, now);  // pipelined
  }
  if (!ok) {
    result.errors++;
    result.error_message = "connection failed";
  }
  if (job.verify) {
    verifier.finish();
    add_verify(result, verifier.counts());
    if (verifier.counts().errors() != 0) {
      result.errors++;
      if (result.error_message.empty()) result.error_message = "verify: echoed bytes damaged, missing or repeated";
    }
  }
  ::close(fd);
}

// Open loop on the baseline: a sender thread issues requests on the Pacer's schedule (at
// most iodepth in flight; a late request goes as soon as a slot frees; the schedule ends
// with the window) and this thread reads the echoes in order; latency counts from each
// request's due time, as on ringmux.
void tcp_unary_paced(const Job& job, JobResult& result, const RunTarget& target, uint64_t stream_key, Progress* progress) {
  std::string error;
  const int fd = tcp_connect(target, tcp_mode_echo, job, stream_key, error);
  if (fd < 0) {
    result.errors++;
    result.error_message = error;
    return;
  }
  Window window(job);
  struct Issued {
    uint64_t due_ns;
    uint32_t bytes;
  };
  std::mutex mutex;
  std::condition_variable slot_freed;
  std::deque<Issued> issued;
  bool reader_done = false;  // the echoes ended: no slot frees any more
  bool send_failed = false;
  uint64_t dropped = 0;
  std::thread sender([&] {
    if (!job.cpus_allowed.empty()) (void)engine::pin_current_thread(job.cpus_allowed.front());
    SizePicker sizes(job, stream_key);
    std::vector<std::byte> request(sizes.max(), std::byte{0x6b});
    Pacer pacer(job.rate_iops, window.start_ns, window.until_ns);
    uint64_t sent_bytes = 0;
    for (uint64_t sequence = 0;;) {
      uint64_t now = Loop::clock_ns();
      if (window.over(now) || (job.size_bytes != 0 && sent_bytes >= job.size_bytes)) break;
      {
        // A free slot first, waiting for an echo no later than the window's end (a job
        // bound by size only looks again every wait_slice_ns).
        constexpr uint64_t wait_slice_ns = 100'000'000;
        std::unique_lock<std::mutex> lock(mutex);
        while (issued.size() >= job.iodepth && !reader_done && !window.over(now)) {
          slot_freed.wait_for(lock, std::chrono::nanoseconds(std::min(window.until_ns - now, wait_slice_ns)));
          now = Loop::clock_ns();
        }
        if (issued.size() >= job.iodepth) break;  // the window ended, or the connection did
      }
      const auto due = pacer.take(now);
      if (!due) {
        if (pacer.over(now)) break;
        // Sleep to the next due time, the last 50 us spinning (a timer slack would add latency).
        const uint64_t wake = pacer.wake_ns();
        for (now = Loop::clock_ns(); now < wake; now = Loop::clock_ns()) {
          if (wake - now > 50'000) std::this_thread::sleep_for(std::chrono::nanoseconds(wake - now - 50'000));
        }
        continue;
      }
      const uint32_t size = sizes.next();
      if (job.verify) stamp_message(std::span(request).first(size), stream_key, sequence++);
      {
        std::lock_guard<std::mutex> lock(mutex);
        issued.push_back({*due, size});
      }
      if (!tools::send_all(fd, request.data(), size)) {
        std::lock_guard<std::mutex> lock(mutex);
        send_failed = true;
        break;
      }
      sent_bytes += size;
    }
    pacer.stop(Loop::clock_ns());
    std::lock_guard<std::mutex> lock(mutex);
    dropped = pacer.dropped();
    ::shutdown(fd, SHUT_WR);  // the server's echo ends with ours
  });
  StreamVerifier verifier(stream_key, message_bytes_max);
  std::vector<std::byte> buffer(256 * 1024);
  uint64_t partial = 0;
  for (;;) {
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    const uint64_t now = Loop::clock_ns();
    if (job.verify) verifier.feed(std::span<const std::byte>(buffer.data(), static_cast<std::size_t>(n)));
    partial += static_cast<uint64_t>(n);
    std::lock_guard<std::mutex> lock(mutex);
    while (!issued.empty() && partial >= issued.front().bytes) {
      const Issued call = issued.front();
      issued.pop_front();
      partial -= call.bytes;
      if (progress != nullptr) progress->add(1, 2ull * call.bytes);
      if (window.measuring(now) || window.until_ns == UINT64_MAX) {
        result.ops++;
        result.bytes_written += call.bytes;
        result.bytes_read += call.bytes;
        result.latency.record(now - call.due_ns);
      }
    }
    slot_freed.notify_one();
  }
  {
    std::lock_guard<std::mutex> lock(mutex);
    reader_done = true;
  }
  slot_freed.notify_one();
  sender.join();
  result.rate_dropped = dropped;
  if (send_failed || !issued.empty()) {
    result.errors++;
    result.error_message = "connection failed";
  }
  if (job.verify) {
    verifier.finish();
    add_verify(result, verifier.counts());
    if (verifier.counts().errors() != 0) {
      result.errors++;
      if (result.error_message.empty()) result.error_message = "verify: echoed bytes damaged, missing or repeated";
    }
  }
  ::close(fd);
}

void tcp_write_stream(const Job& job, JobResult& result, const RunTarget& target, uint64_t size_share,
                      uint64_t stream_key, Progress* progress) {
  std::string error;
  const int fd = tcp_connect(target, tcp_mode_sink, job, stream_key, error);
  if (fd < 0) {
    result.errors++;
    result.error_message = error;
    return;
  }
  Window window(job);
  SizePicker sizes(job, stream_key);
  std::vector<std::byte> message(sizes.max(), std::byte{0x6b});
  uint64_t written = 0;
  uint64_t sequence = 0;
  for (;;) {
    const uint64_t started = Loop::clock_ns();
    if (window.over(started) || (job.size_bytes != 0 && written >= size_share)) break;
    const uint32_t size = sizes.next();
    if (job.verify) stamp_message(std::span(message).first(size), stream_key, sequence++);
    if (!tools::send_all(fd, message.data(), size)) {
      result.errors++;
      result.error_message = "send failed";
      break;
    }
    written += size;
    if (progress != nullptr) progress->add(1, size);
    const uint64_t now = Loop::clock_ns();
    if (window.measuring(now)) {
      result.ops++;
      result.bytes_written += size;
      result.latency.record(now - started);
    }
  }
  result.client_sent_bytes += written;
  ::shutdown(fd, SHUT_WR);
  std::byte answer[sink_answer_verify_bytes];
  const std::size_t answer_bytes = job.verify ? sink_answer_verify_bytes : sink_answer_bytes;
  if (tools::recv_exact(fd, answer, answer_bytes)) {
    read_sink_answer(std::span<const std::byte>(answer, answer_bytes), result);
    if (result.verify_mismatches + result.verify_gaps + result.verify_duplicates != 0) {
      result.errors++;
      if (result.error_message.empty()) result.error_message = "verify: the server saw damaged, missing or repeated messages";
    }
  } else {
    result.errors++;
    if (result.error_message.empty()) result.error_message = "no count from the server";
  }
  ::close(fd);
}

// Server-to-client stream: the server writes bs-byte messages; the client reads for the
// window (or size), then closes. Verified, the bytes are checked as they arrive.
void tcp_read_stream(const Job& job, JobResult& result, const RunTarget& target, uint64_t size_share,
                     uint64_t stream_key, Progress* progress) {
  std::string error;
  const int fd = tcp_connect(target, tcp_mode_source, job, stream_key, error);
  if (fd < 0) {
    result.errors++;
    result.error_message = error;
    return;
  }
  Window window(job);
  StreamVerifier verifier(stream_key, message_bytes_max);
  std::vector<std::byte> buffer(256 * 1024);
  uint64_t received = 0;
  for (;;) {
    const uint64_t now = Loop::clock_ns();
    if (window.over(now) || (job.size_bytes != 0 && received >= size_share)) break;
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      result.errors++;
      result.error_message = "the server closed the stream";
      break;
    }
    const auto bytes = static_cast<uint64_t>(n);
    received += bytes;
    if (job.verify) verifier.feed(std::span<const std::byte>(buffer.data(), bytes));
    if (progress != nullptr) progress->add(0, bytes);
    if (window.measuring(Loop::clock_ns())) {
      result.bytes_read += bytes;
      result.ops = result.bytes_read / std::max<uint32_t>(job.bs, 1);
    }
  }
  if (job.verify) {
    add_verify(result, verifier.counts());  // a message cut by our close is no gap
    if (verifier.counts().errors() != 0) {
      result.errors++;
      if (result.error_message.empty()) result.error_message = "verify: stream bytes damaged, missing or repeated";
    }
  }
  ::close(fd);
}

// Both directions: a writer thread sends messages, this thread reads the echo and times
// each message's round trip (issue of its first byte to arrival of its last).
void tcp_bidi_stream(const Job& job, JobResult& result, const RunTarget& target, uint64_t size_share,
                     uint64_t stream_key, Progress* progress) {
  std::string error;
  const int fd = tcp_connect(target, tcp_mode_echo, job, stream_key, error);
  if (fd < 0) {
    result.errors++;
    result.error_message = error;
    return;
  }
  Window window(job);
  std::mutex mutex;
  std::deque<std::pair<uint64_t, uint64_t>> sent_at;  // (end offset, start time) of each message
  bool send_failed = false;
  uint64_t written = 0;
  uint64_t written_in_window = 0;
  std::thread writer([&] {
    if (!job.cpus_allowed.empty()) (void)engine::pin_current_thread(job.cpus_allowed.front());
    SizePicker sizes(job, stream_key);
    std::vector<std::byte> message(sizes.max(), std::byte{0x6b});
    for (uint64_t sequence = 0;; sequence++) {
      const uint64_t started = Loop::clock_ns();
      if (window.over(started) || (job.size_bytes != 0 && written >= size_share)) break;
      const uint32_t size = sizes.next();
      if (job.verify) stamp_message(std::span(message).first(size), stream_key, sequence);
      if (!tools::send_all(fd, message.data(), size)) {
        std::lock_guard<std::mutex> lock(mutex);
        send_failed = true;
        break;
      }
      const uint64_t now = Loop::clock_ns();
      std::lock_guard<std::mutex> lock(mutex);
      written += size;
      if (window.measuring(now)) written_in_window += size;
      sent_at.emplace_back(written, started);
    }
    ::shutdown(fd, SHUT_WR);  // the echo ends when ours does
  });
  StreamVerifier verifier(stream_key, message_bytes_max);
  std::vector<std::byte> buffer(256 * 1024);
  uint64_t received = 0;
  for (;;) {
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the echo of our shutdown, or a failure (counted below)
    const auto bytes = static_cast<uint64_t>(n);
    const uint64_t now = Loop::clock_ns();
    received += bytes;
    if (job.verify) verifier.feed(std::span<const std::byte>(buffer.data(), bytes));
    if (progress != nullptr) progress->add(0, bytes);
    if (window.measuring(now)) result.bytes_read += bytes;
    std::lock_guard<std::mutex> lock(mutex);
    while (!sent_at.empty() && received >= sent_at.front().first) {
      if (window.measuring(now)) {
        result.ops++;
        result.latency.record(now - sent_at.front().second);
      }
      sent_at.pop_front();
    }
  }
  writer.join();
  result.client_sent_bytes += written;
  result.bytes_written += written_in_window;
  if (send_failed || received != written) {
    result.errors++;
    if (result.error_message.empty()) result.error_message = "echo incomplete: connection failed";
  }
  if (job.verify) {
    verifier.finish();
    add_verify(result, verifier.counts());
    if (verifier.counts().errors() != 0) {
      result.errors++;
      if (result.error_message.empty()) result.error_message = "verify: echoed bytes damaged, missing or repeated";
    }
  }
  ::close(fd);
}

}  // namespace

std::vector<JobResult> run_jobs(const Invocation& invocation, const RunTarget& target, Progress* progress) {
  // Expand numjobs into clones, each with its own result.
  std::vector<Job> clones;
  for (const Job& job : invocation.jobs) {
    for (uint32_t i = 0; i < job.numjobs; i++) {
      clones.push_back(job);
      if (job.numjobs > 1) clones.back().name = job.name + "." + std::to_string(i);
    }
  }
  std::vector<JobResult> results(clones.size());
  std::vector<const Job*> ringmux_jobs;
  std::vector<JobResult*> ringmux_results;
  std::vector<std::size_t> ringmux_indices;
  std::vector<std::thread> threads;
  // tcp stream jobs: one connection (and thread) per stream, each counting into its own
  // part of the job's result; summed once every thread is done.
  auto job_rw_is_read = [](RwMode rw) { return rw == RwMode::read; };
  struct Parts {
    std::size_t result_index;
    std::vector<JobResult> parts;
  };
  std::vector<std::unique_ptr<Parts>> stream_parts;
  for (std::size_t i = 0; i < clones.size(); i++) {
    const Job& job = clones[i];
    JobResult& result = results[i];
    result.name = job.name;
    result.rw = job.rw;
    result.engine = job.ioengine;
    result.window_seconds = job.runtime_ns != 0 ? static_cast<double>(job.runtime_ns) / 1e9 : 0;
    if (job.ioengine == IoEngine::ringmux) {
      ringmux_jobs.push_back(&job);
      ringmux_results.push_back(&result);
      ringmux_indices.push_back(i);
      continue;
    }
    if (job.rw == RwMode::unary) {
      if (job.response_bytes() != job.bs || (job.resp_bs && !job.bssplit.empty())) {
        result.errors++;
        result.error_message = "ioengine=tcp echoes: resp_bs must equal bs";
        continue;
      }
      threads.emplace_back([&job, &result, &target, i, progress] {
        if (!job.cpus_allowed.empty()) (void)engine::pin_current_thread(job.cpus_allowed.front());
        if (job.rate_iops != 0) {
          tcp_unary_paced(job, result, target, verify_stream_key(i, 0), progress);
        } else {
          tcp_unary(job, result, target, verify_stream_key(i, 0), progress);
        }
      });
    } else {
      // Streams: one connection (and thread) per stream, each counting into its part.
      auto parts = std::make_unique<Parts>(Parts{i, std::vector<JobResult>(job.streams)});
      for (uint32_t s = 0; s < job.streams; s++) {
        JobResult* part = &parts->parts[s];
        threads.emplace_back([&job, part, &target, i, s, progress] {
          if (!job.cpus_allowed.empty()) (void)engine::pin_current_thread(job.cpus_allowed.front());
          const uint64_t share = job.size_bytes / job.streams;
          const uint64_t key = verify_stream_key(i, s);
          switch (job.rw) {
            case RwMode::write: tcp_write_stream(job, *part, target, share, key, progress); break;
            case RwMode::read: tcp_read_stream(job, *part, target, share, key, progress); break;
            case RwMode::bidi: tcp_bidi_stream(job, *part, target, share, key, progress); break;
            case RwMode::unary: break;   // handled above
            case RwMode::quorum: break;  // ringmux only (validated)
          }
        });
      }
      stream_parts.push_back(std::move(parts));
    }
  }
  if (!ringmux_jobs.empty()) {
    threads.emplace_back([&] { run_ringmux(ringmux_jobs, ringmux_results, target, ringmux_indices, progress); });
  }
  for (auto& thread : threads) thread.join();
  for (auto& parts : stream_parts) {
    JobResult& result = results[parts->result_index];
    for (auto& part : parts->parts) {
      result.ops += part.ops;
      result.bytes_written += part.bytes_written;
      result.bytes_read += part.bytes_read;
      result.stream_bytes.push_back(job_rw_is_read(result.rw) ? part.bytes_read : part.bytes_written);
      result.errors += part.errors;
      result.server_confirmed_bytes += part.server_confirmed_bytes;
      result.client_sent_bytes += part.client_sent_bytes;
      result.verified_messages += part.verified_messages;
      result.verify_mismatches += part.verify_mismatches;
      result.verify_gaps += part.verify_gaps;
      result.verify_duplicates += part.verify_duplicates;
      if (result.error_message.empty()) result.error_message = part.error_message;
      result.latency.merge(part.latency);
    }
  }
  return results;
}

}  // namespace ringmux::loadgen
