#include "tools/loadgen/runner.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <memory>
#include <thread>

#include "engine/engine.h"
#include "engine/loop.h"
#include "engine/socket.h"
#include "mux/connection.h"
#include "tools/blocking_io.h"
#include "tools/loadgen/protocol.h"

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

void reserve_samples(JobResult& result, const Job& job) {
  const double seconds = job.runtime_ns == 0 ? 10.0 : static_cast<double>(job.runtime_ns) / 1e9;
  result.latency.reserve(static_cast<std::size_t>(std::min(seconds * 2e6, 5e7)));
}

// ---- ringmux engine ----------------------------------------------------------------------

class Runner {
 public:
  virtual ~Runner() = default;
  virtual void start() = 0;
  virtual bool done() const = 0;
};

// Unary calls. Closed loop: iodepth calls in flight, each completion issues the next.
// Open loop (rate_iops): calls are due at start + k / rate whatever the server does; at
// most iodepth are in flight, a late call starts as soon as a slot frees, and its latency
// counts from the time it was due, so a slow server cannot hide its queueing
// (no coordinated omission).
class UnaryRunner final : public Runner {
 public:
  UnaryRunner(mux::Connection& connection, const Job& job, JobResult& result)
      : connection_(connection), job_(job), result_(result), window_(job), request_(std::max<uint32_t>(job.bs, 4)),
        tick_(&UnaryRunner::on_tick, this) {
    const uint32_t response_bytes = job.response_bytes();
    std::memcpy(request_.data(), &response_bytes, sizeof(response_bytes));
  }
  ~UnaryRunner() override { connection_.loop().timer_cancel(tick_); }

  void start() override {
    if (job_.rate_iops != 0) {
      interval_ns_ = std::max<uint64_t>(1, 1'000'000'000ull / job_.rate_iops);
      next_due_ns_ = Loop::clock_ns();
      on_tick(tick_);
      return;
    }
    for (uint32_t i = 0; i < job_.iodepth; i++) issue(Loop::clock_ns());
  }
  bool done() const override { return stopping_ && in_flight_ == 0; }

 private:
  bool should_stop(uint64_t now) const {
    return window_.over(now) || (job_.size_bytes != 0 && sent_bytes_ >= job_.size_bytes) || result_.errors >= job_errors_max;
  }

  // Open loop: queue every call now due, start what the depth allows, sleep to the next.
  static void on_tick(engine::Timer& timer) noexcept {
    auto& self = *static_cast<UnaryRunner*>(timer.context());
    const uint64_t now = Loop::clock_ns();
    if (self.should_stop(now)) {
      self.stopping_ = true;
      self.due_.clear();  // calls not yet started are not part of the window
      return;
    }
    while (self.next_due_ns_ <= now) {
      self.due_.push_back(self.next_due_ns_);
      self.next_due_ns_ += self.interval_ns_;
    }
    self.start_due();
    self.connection_.loop().timer_start(self.tick_, self.next_due_ns_ - now);
  }
  void start_due() {
    while (!due_.empty() && in_flight_ < job_.iodepth && !stopping_) {
      const uint64_t due = due_.front();
      due_.pop_front();
      issue(due);
    }
  }

  // Issues one call whose latency counts from `since_ns`.
  void issue(uint64_t since_ns) {
    if (should_stop(Loop::clock_ns())) {
      stopping_ = true;
      return;
    }
    in_flight_++;
    sent_bytes_ += request_.size();
    connection_.call(handler_unary, request_, 0, [this, since_ns](const mux::CallResult& r) {
      in_flight_--;
      const uint64_t now = Loop::clock_ns();
      if (r.error != mux::MuxError::none) {
        result_.errors++;
        if (result_.error_message.empty()) result_.error_message = mux::describe(r.error);
      } else if (window_.measuring(now) || window_.until_ns == UINT64_MAX) {
        result_.ops++;
        result_.bytes_written += request_.size();
        result_.bytes_read += r.response.size();
        result_.latency.add(now - since_ns);
      }
      if (stopping_) return;
      if (job_.rate_iops != 0) {
        start_due();
      } else {
        issue(now);
      }
    });
  }

  mux::Connection& connection_;
  const Job& job_;
  JobResult& result_;
  Window window_;
  std::vector<std::byte> request_;
  uint32_t in_flight_ = 0;
  uint64_t sent_bytes_ = 0;
  bool stopping_ = false;
  // Open loop only.
  engine::Timer tick_;
  uint64_t interval_ns_ = 0;
  uint64_t next_due_ns_ = 0;
  std::deque<uint64_t> due_;  // due times of calls waiting for a free slot
};

// One stream of a write / read / bidi job.
class StreamRunner final : public Runner, public mux::StreamObserver {
 public:
  StreamRunner(mux::Connection& connection, const Job& job, JobResult& result, uint64_t size_share, std::size_t index)
      : connection_(connection), job_(job), result_(result), window_(job), size_share_(size_share),
        message_(job.bs, std::byte{0x6b}), index_(index) {}

  void start() override {
    const uint32_t handler = job_.rw == RwMode::write ? handler_sink
                             : job_.rw == RwMode::read ? handler_source
                                                       : handler_echo_stream;
    std::byte payload[sizeof(uint32_t)];
    std::memcpy(payload, &job_.bs, sizeof(job_.bs));
    auto id = connection_.open(handler, 0, job_.rw == RwMode::read ? std::span<const std::byte>(payload)
                                                                    : std::span<const std::byte>(),
                               false, *this);
    if (!id) {
      fail(id.error());
      return;
    }
    id_ = id.value();
    if (job_.rw == RwMode::read) {
      read_timer_.set_callback(&StreamRunner::on_read_deadline, this);
      const uint64_t now = Loop::clock_ns();
      connection_.loop().timer_start(read_timer_, window_.until_ns == UINT64_MAX ? 10'000'000'000ull : window_.until_ns - now);
    } else {
      pump();
    }
  }
  bool done() const override { return finished_; }

  void on_stream_data(std::span<const std::byte> bytes, bool) noexcept override {
    connection_.consume(id_, bytes.size());
    const uint64_t now = Loop::clock_ns();
    if (job_.rw == RwMode::write) {
      if (bytes.size() == sizeof(uint64_t)) {
        uint64_t confirmed = 0;  // this stream's count; the job's is the sum over streams
        std::memcpy(&confirmed, bytes.data(), sizeof(confirmed));
        result_.server_confirmed_bytes += confirmed;
      }
      return;
    }
    received_total_ += bytes.size();
    if (window_.measuring(now)) {
      result_.bytes_read += bytes.size();
      if (job_.rw == RwMode::read) result_.stream_bytes[index_] += bytes.size();
    }
    if (job_.rw == RwMode::bidi) {
      // Round trip of each message: its bytes came back.
      while (!sent_at_.empty() && received_total_ >= sent_at_.front().first) {
        if (window_.measuring(now)) result_.latency.add(now - sent_at_.front().second);
        sent_at_.pop_front();
      }
    } else {
      if (window_.measuring(now)) result_.ops += bytes.size() / std::max<uint32_t>(job_.bs, 1);
      if (job_.size_bytes != 0 && received_total_ >= size_share_) {
        connection_.loop().timer_cancel(read_timer_);
        connection_.cancel(id_);
      }
    }
  }
  void on_stream_writable() noexcept override { pump(); }
  void on_stream_finished(mux::MuxError error) noexcept override {
    connection_.loop().timer_cancel(read_timer_);
    finished_ = true;
    const bool expected = error == mux::MuxError::none || (job_.rw == RwMode::read && error == mux::MuxError::cancelled);
    if (!expected) fail(error);
  }

 private:
  void fail(mux::MuxError error) {
    result_.errors++;
    if (result_.error_message.empty()) result_.error_message = mux::describe(error);
    finished_ = true;
  }
  void pump() {
    while (!ended_) {
      const uint64_t now = Loop::clock_ns();
      if (offset_ == 0) {
        if (window_.over(now) || (job_.size_bytes != 0 && written_total_ >= size_share_)) {
          ended_ = true;
          (void)connection_.end(id_);
          return;
        }
        message_started_ = now;
      }
      auto taken = connection_.write(id_, std::span<const std::byte>(message_).subspan(offset_), false);
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
      if (offset_ == message_.size()) {
        offset_ = 0;
        const uint64_t completed = Loop::clock_ns();
        if (job_.rw == RwMode::bidi) {
          sent_at_.emplace_back(written_total_, message_started_);
        } else if (window_.measuring(completed)) {
          result_.ops++;
          result_.latency.add(completed - message_started_);
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
  std::vector<std::byte> message_;
  mux::StreamId id_ = 0;
  std::size_t offset_ = 0;
  uint64_t message_started_ = 0;
  uint64_t written_total_ = 0;
  uint64_t received_total_ = 0;
  std::deque<std::pair<uint64_t, uint64_t>> sent_at_;  // bidi: (end offset, start time)
  std::size_t index_;  // into result_.stream_bytes
  engine::Timer read_timer_;
  bool ended_ = false;
  bool finished_ = false;
};

struct Dialer final : engine::ConnectHandler, mux::ConnectionObserver {
  explicit Dialer(Loop& l) : loop(l), connector(l, *this) {}
  void on_connect(Result<int, engine::IoError> fd) noexcept override {
    if (!fd) {
      error = engine::describe(fd.error());
      failed = true;
      return;
    }
    connections.push_back(std::make_unique<mux::Connection>(loop, fd.value(), true, nullptr, *this));
    connections.back()->start();
  }
  void on_connection_closed(mux::Connection&, mux::MuxError, engine::IoError) noexcept override { closed++; }
  Loop& loop;
  engine::Connector connector;
  std::vector<std::unique_ptr<mux::Connection>> connections;
  std::size_t closed = 0;
  bool failed = false;
  std::string error;
};

void run_ringmux(const std::vector<const Job*>& jobs, std::vector<JobResult*>& results, const RunTarget& target) {
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
  Dialer dialer(loop);
  // One shared connection, plus one per job that wants its own.
  std::size_t wanted = 1;
  for (const Job* job : jobs) wanted += job->own_connection ? 1 : 0;
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
  std::size_t own = 1;
  for (std::size_t j = 0; j < jobs.size(); j++) {
    const Job& job = *jobs[j];
    mux::Connection& connection = job.own_connection ? *dialer.connections[own++] : *dialer.connections[0];
    reserve_samples(*results[j], job);
    if (job.rw == RwMode::unary) {
      runners.push_back(std::make_unique<UnaryRunner>(connection, job, *results[j]));
    } else {
      results[j]->stream_bytes.assign(job.streams, 0);
      for (uint32_t s = 0; s < job.streams; s++) {
        runners.push_back(
            std::make_unique<StreamRunner>(connection, job, *results[j], job.size_bytes / job.streams, s));
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
  for (auto& c : dialer.connections) c->close();
  loop.run_until([&] { return dialer.closed == dialer.connections.size(); }, 5'000'000'000ull);
  runners.clear();
}

// ---- tcp engine (the raw baseline) -------------------------------------------------------

int tcp_connect(const RunTarget& target, uint32_t mode, std::string& error) {
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
  std::byte hello[8] = {};
  std::memcpy(hello, &mode, sizeof(mode));
  if (::send(fd, hello, sizeof(hello), MSG_NOSIGNAL) != sizeof(hello)) {
    error = "hello failed";
    ::close(fd);
    return -1;
  }
  return fd;
}

void tcp_unary(const Job& job, JobResult& result, const RunTarget& target) {
  std::string error;
  const int fd = tcp_connect(target, tcp_mode_echo, error);
  if (fd < 0) {
    result.errors++;
    result.error_message = error;
    return;
  }
  reserve_samples(result, job);
  Window window(job);
  const std::vector<std::byte> requests(std::size_t{job.bs} * job.iodepth, std::byte{0x6b});
  std::vector<std::byte> buffer(256 * 1024);
  std::deque<uint64_t> issued;
  uint64_t now = Loop::clock_ns();
  for (uint32_t i = 0; i < job.iodepth; i++) issued.push_back(now);
  bool ok = tools::send_all(fd, requests.data(), requests.size());
  uint64_t partial = 0;
  uint64_t sent_bytes = requests.size();
  bool stopping = false;
  while (ok && !issued.empty()) {
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      ok = false;
      break;
    }
    now = Loop::clock_ns();
    partial += static_cast<uint64_t>(n);
    uint32_t completed = 0;
    while (partial >= job.bs && !issued.empty()) {
      partial -= job.bs;
      if (window.measuring(now) || window.until_ns == UINT64_MAX) {
        result.ops++;
        result.bytes_written += job.bs;
        result.bytes_read += job.bs;
        result.latency.add(now - issued.front());
      }
      issued.pop_front();
      completed++;
    }
    stopping = stopping || window.over(now) || (job.size_bytes != 0 && sent_bytes >= job.size_bytes);
    if (completed > 0 && !stopping) {
      for (uint32_t i = 0; i < completed; i++) issued.push_back(now);
      sent_bytes += std::size_t{completed} * job.bs;
      ok = tools::send_all(fd, requests.data(), std::size_t{completed} * job.bs);  // pipelined
    }
  }
  if (!ok) {
    result.errors++;
    result.error_message = "connection failed";
  }
  ::close(fd);
}

void tcp_write_stream(const Job& job, JobResult& result, const RunTarget& target, uint64_t size_share) {
  std::string error;
  const int fd = tcp_connect(target, tcp_mode_sink, error);
  if (fd < 0) {
    result.errors++;
    result.error_message = error;
    return;
  }
  Window window(job);
  const std::vector<std::byte> message(job.bs, std::byte{0x6b});
  uint64_t written = 0;
  for (;;) {
    const uint64_t started = Loop::clock_ns();
    if (window.over(started) || (job.size_bytes != 0 && written >= size_share)) break;
    if (!tools::send_all(fd, message.data(), message.size())) {
      result.errors++;
      result.error_message = "send failed";
      break;
    }
    written += message.size();
    const uint64_t now = Loop::clock_ns();
    if (window.measuring(now)) {
      result.ops++;
      result.bytes_written += message.size();
      result.latency.add(now - started);
    }
  }
  result.client_sent_bytes += written;
  ::shutdown(fd, SHUT_WR);
  uint64_t confirmed = 0;
  std::byte answer[sizeof(confirmed)];
  std::size_t have = 0;
  while (have < sizeof(answer)) {
    const ssize_t n = ::recv(fd, answer + have, sizeof(answer) - have, 0);
    if (n <= 0) break;
    have += static_cast<std::size_t>(n);
  }
  if (have == sizeof(answer)) std::memcpy(&confirmed, answer, sizeof(confirmed));
  result.server_confirmed_bytes += confirmed;
  ::close(fd);
}

}  // namespace

std::vector<JobResult> run_jobs(const Invocation& invocation, const RunTarget& target) {
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
  std::vector<std::thread> threads;
  // tcp write jobs: one connection (and thread) per stream, each counting into its own
  // part of the job's result; summed once every thread is done.
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
      continue;
    }
    if (job.rw == RwMode::unary) {
      if (job.rate_iops != 0) {
        result.errors++;
        result.error_message = "rate_iops runs with ioengine=ringmux only so far";
        continue;
      }
      if (job.response_bytes() != job.bs) {
        result.errors++;
        result.error_message = "ioengine=tcp echoes: resp_bs must equal bs";
        continue;
      }
      threads.emplace_back([&job, &result, &target] {
        if (!job.cpus_allowed.empty()) (void)engine::pin_current_thread(job.cpus_allowed.front());
        tcp_unary(job, result, target);
      });
    } else if (job.rw == RwMode::write) {
      auto parts = std::make_unique<Parts>(Parts{i, std::vector<JobResult>(job.streams)});
      for (auto& part : parts->parts) reserve_samples(part, job);
      for (uint32_t s = 0; s < job.streams; s++) {
        JobResult* part = &parts->parts[s];
        threads.emplace_back([&job, part, &target] {
          if (!job.cpus_allowed.empty()) (void)engine::pin_current_thread(job.cpus_allowed.front());
          tcp_write_stream(job, *part, target, job.size_bytes / job.streams);
        });
      }
      stream_parts.push_back(std::move(parts));
    } else {
      result.errors++;
      result.error_message = "ioengine=tcp supports rw=unary and rw=write so far";
    }
  }
  if (!ringmux_jobs.empty()) {
    threads.emplace_back([&] { run_ringmux(ringmux_jobs, ringmux_results, target); });
  }
  for (auto& thread : threads) thread.join();
  for (auto& parts : stream_parts) {
    JobResult& result = results[parts->result_index];
    for (auto& part : parts->parts) {
      result.ops += part.ops;
      result.bytes_written += part.bytes_written;
      result.errors += part.errors;
      result.server_confirmed_bytes += part.server_confirmed_bytes;
      result.client_sent_bytes += part.client_sent_bytes;
      if (result.error_message.empty()) result.error_message = part.error_message;
      result.latency.merge(part.latency);
    }
  }
  return results;
}

}  // namespace ringmux::loadgen
