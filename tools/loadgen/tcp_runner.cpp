#include "tools/loadgen/tcp_runner.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <latch>
#include <memory>
#include <mutex>
#include <thread>

#include "ringmux/engine/engine.h"
#include "ringmux/engine/loop.h"
#include "ringmux/engine/socket.h"
#include "tools/blocking_io.h"
#include "tools/loadgen/job_messages.h"
#include "tools/loadgen/pacer.h"
#include "tools/loadgen/protocol.h"
#include "tools/loadgen/verify.h"

namespace ringmux::loadgen {

using engine::Loop;

namespace {

// Bytes one recv may take (the echo and source streams are read in pieces of up to this).
constexpr std::size_t recv_buffer_bytes = 256 * 1024;

// What one tcp thread works with: its clone's job and window, its result (part), the
// stream key of its connection and its share of the job's size.
struct TcpTask {
  const Job& job;
  const Window& window;
  JobResult& result;
  const RunTarget& target;
  uint64_t stream_key;
  uint64_t size_share;
  Progress* progress;
  Publisher publisher;

  void fail(const std::string& message) {
    result.add_error(message);
    if (progress != nullptr) progress->errors.fetch_add(1, std::memory_order_relaxed);
  }
  // A failed send or recv, with the cause: errno's text, or the peer's close.
  void fail_io(const char* operation, ssize_t n) {
    fail(std::string(operation) + ": " + (n == 0 ? "the server closed the connection" : std::strerror(errno)));
  }
  bool size_done(uint64_t bytes) const { return !job.time_based && job.size_bytes != 0 && bytes >= size_share; }
};

int tcp_connect(const RunTarget& target, uint32_t mode, const Job& job, uint64_t stream_key, std::string& error) {
  auto address = engine::Address::parse(target.host + ":" + std::to_string(target.port));
  if (!address) {
    error = "bad target address " + target.host + ":" + std::to_string(target.port);
    return -1;
  }
  const int fd = ::socket(address->storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (fd < 0 || ::connect(fd, address->sockaddr_ptr(), address->length) != 0) {
    error = "connect to " + target.host + ":" + std::to_string(target.port) + ": " + std::strerror(errno);
    if (fd >= 0) ::close(fd);
    return -1;
  }
  std::byte hello[tcp_hello_bytes] = {};
  write_preamble(hello, mode, job, stream_key);  // mode, flags, stream key
  // The message size, as in a stream's OPEN: a source's messages, a sink's largest.
  const uint32_t message_bytes = mode == tcp_mode_sink ? SizePicker(job, 0).max() : job.bs;
  std::memcpy(hello + open_verify_bytes, &message_bytes, sizeof(message_bytes));
  if (!tools::send_all(fd, hello, sizeof(hello))) {
    error = std::string("hello: send: ") + std::strerror(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

// Unary requests on the baseline. Echoed (the response is the request's bytes) when every
// response is the size of its request, as on ringmux (resp_bs, by default bs); otherwise
// (resp_bs other than bs, or a bssplit mix of requests) each request starts with the call
// header (protocol.h: u32 request bytes, u32 response bytes). Verified, the request (after
// the header) is a stamped message; the responses form a stream of stamped messages.
class TcpRequests {
 public:
  TcpRequests(const Job& job, uint64_t stream_key) noexcept : job_(job), sizes_(job, stream_key), stream_key_(stream_key) {}

  // Echoed unless a response's size is not its request's.
  static bool calls(const Job& job) noexcept { return job.response_bytes() != job.bs || !job.bssplit.empty(); }
  uint32_t mode() const noexcept { return calls(job_) ? tcp_mode_call : tcp_mode_echo; }
  uint32_t largest() const noexcept { return sizes_.max(); }

  struct Sizes {
    uint32_t request_bytes;
    uint32_t response_bytes;
  };
  // Writes the next request at the end of `out`.
  Sizes append(std::vector<std::byte>& out) {
    const uint32_t size = sizes_.next();
    const std::size_t at = out.size();
    out.resize(at + size, std::byte{0x6b});
    const std::span<std::byte> request = std::span(out).subspan(at, size);
    if (!calls(job_)) {
      if (job_.verify) stamp_message(request, stream_key_, sequence_++);
      return {size, size};
    }
    const uint32_t response_bytes = job_.response_bytes();
    std::memcpy(request.data(), &size, 4);
    std::memcpy(request.data() + 4, &response_bytes, 4);
    if (job_.verify) stamp_message(request.subspan(tcp_call_header_bytes), stream_key_, sequence_++);
    return {size, response_bytes};
  }

 private:
  const Job& job_;
  SizePicker sizes_;
  uint64_t stream_key_;
  uint64_t sequence_ = 0;
};

// A request on the wire, waiting for its response.
struct Issued {
  uint64_t since_ns;  // issued, or due (rate_iops): where its latency counts from
  uint32_t request_bytes;
  uint32_t response_bytes;
};

// Counts what a unary response that arrived at `now` completed.
void count_call(TcpTask& task, const Issued& call, uint64_t now) {
  if (task.progress != nullptr) task.progress->add(1, uint64_t{call.request_bytes} + call.response_bytes);
  if (!task.window.measuring(now)) return;
  task.result.count_bytes(now, Direction::write, call.request_bytes);
  task.result.count_bytes(now, Direction::read, call.response_bytes);
  task.result.count_op(now, now - call.since_ns, call.request_bytes);
}

void finish_verify(TcpTask& task, StreamVerifier& verifier, bool whole, const char* what) {
  if (!task.job.verify) return;
  if (whole) verifier.finish();  // a stream we cut ourselves may end mid-message
  add_verify(task.result, verifier.counts());
  if (verifier.counts().errors() != 0) task.fail(std::string("verify: ") + what + " damaged, missing or repeated");
}

// Pipelined calls: iodepth requests in flight on one connection, answered in order.
void tcp_unary(TcpTask& task, int fd) {
  TcpRequests requests(task.job, task.stream_key);
  StreamVerifier verifier(task.stream_key, message_bytes_max);
  std::vector<std::byte> out;  // requests of one send, built in place (capacity kept)
  std::vector<std::byte> buffer(recv_buffer_bytes);
  std::deque<Issued> issued;
  uint64_t sent_bytes = 0;
  auto send_requests = [&](uint32_t count, uint64_t now) {
    out.clear();
    for (uint32_t i = 0; i < count; i++) {
      const TcpRequests::Sizes sizes = requests.append(out);
      issued.push_back({now, sizes.request_bytes, sizes.response_bytes});
      sent_bytes += sizes.request_bytes;
    }
    if (tools::send_all(fd, out.data(), out.size())) return true;
    task.fail_io("send", -1);
    return false;
  };
  bool ok = send_requests(task.job.iodepth, Loop::clock_ns());
  uint64_t partial = 0;
  bool stopping = false;
  while (ok && !issued.empty()) {
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      task.fail_io("recv", n);
      ok = false;
      break;
    }
    const uint64_t now = Loop::clock_ns();
    if (task.job.verify) verifier.feed(std::span<const std::byte>(buffer.data(), static_cast<std::size_t>(n)));
    partial += static_cast<uint64_t>(n);
    uint32_t completed = 0;
    while (!issued.empty() && partial >= issued.front().response_bytes) {
      const Issued call = issued.front();
      issued.pop_front();
      partial -= call.response_bytes;
      count_call(task, call, now);
      completed++;
    }
    task.publisher.tick(task.result, task.window, now);
    stopping = stopping || task.window.over(now) || size_reached(task.job, sent_bytes);
    if (completed > 0 && !stopping) ok = send_requests(completed, now);  // pipelined
  }
  finish_verify(task, verifier, ok, requests.mode() == tcp_mode_echo ? "echoed bytes" : "responses");
}

// Open loop on the baseline: a sender thread issues requests on the Pacer's schedule (at
// most iodepth in flight; a late request goes as soon as a slot frees; the schedule ends
// with the window) and this thread reads the responses in order; latency counts from each
// request's due time, as on ringmux.
void tcp_unary_paced(TcpTask& task, int fd) {
  const Job& job = task.job;
  const Window& window = task.window;
  std::mutex mutex;
  std::condition_variable slot_freed;
  std::deque<Issued> issued;
  bool reader_done = false;  // the responses ended: no slot frees any more
  int send_errno = 0;        // the sender's failure (0: none)
  uint64_t dropped = 0;
  TcpRequests requests(job, task.stream_key);
  std::thread sender([&] {
    if (!job.cpus_allowed.empty()) (void)engine::pin_current_thread(job.cpus_allowed.front());
    std::vector<std::byte> request;
    request.reserve(requests.largest());
    Pacer pacer(job.rate_iops, window.start_ns, window.until_ns);
    uint64_t sent_bytes = 0;
    for (;;) {
      uint64_t now = Loop::clock_ns();
      if (window.over(now) || size_reached(job, sent_bytes)) break;
      {
        // A free slot first, waiting for a response no later than the window's end or a
        // stop (a job bound by size only looks again every stop_poll_ns).
        std::unique_lock<std::mutex> lock(mutex);
        while (issued.size() >= job.iodepth && !reader_done && !window.over(now)) {
          slot_freed.wait_for(lock, std::chrono::nanoseconds(std::min(window.end_ns() - now, stop_poll_ns)));
          now = Loop::clock_ns();
        }
        if (issued.size() >= job.iodepth) break;  // the window ended, or the connection did
      }
      const auto due = pacer.take(now);
      if (!due) {
        if (pacer.over(now)) break;
        // Sleep to the next due time (looking for a stop every stop_poll_ns), the last
        // 50 us spinning (a timer slack would add latency).
        const uint64_t wake = pacer.wake_ns();
        for (now = Loop::clock_ns(); now < wake && !window.over(now); now = Loop::clock_ns()) {
          if (wake - now > 50'000) std::this_thread::sleep_for(std::chrono::nanoseconds(std::min(wake - now - 50'000, stop_poll_ns)));
        }
        continue;
      }
      request.clear();
      const TcpRequests::Sizes sizes = requests.append(request);
      {
        std::lock_guard<std::mutex> lock(mutex);
        issued.push_back({*due, sizes.request_bytes, sizes.response_bytes});
      }
      if (!tools::send_all(fd, request.data(), request.size())) {
        std::lock_guard<std::mutex> lock(mutex);
        send_errno = errno;
        break;
      }
      sent_bytes += sizes.request_bytes;
    }
    pacer.stop(Loop::clock_ns());
    std::lock_guard<std::mutex> lock(mutex);
    dropped = pacer.dropped();
    ::shutdown(fd, SHUT_WR);  // the server's responses end with our requests
  });
  StreamVerifier verifier(task.stream_key, message_bytes_max);
  std::vector<std::byte> buffer(recv_buffer_bytes);
  uint64_t partial = 0;
  ssize_t last = 0;
  for (;;) {
    last = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (last < 0 && errno == EINTR) continue;
    if (last <= 0) break;
    const uint64_t now = Loop::clock_ns();
    if (job.verify) verifier.feed(std::span<const std::byte>(buffer.data(), static_cast<std::size_t>(last)));
    partial += static_cast<uint64_t>(last);
    {
      std::lock_guard<std::mutex> lock(mutex);
      while (!issued.empty() && partial >= issued.front().response_bytes) {
        const Issued call = issued.front();
        issued.pop_front();
        partial -= call.response_bytes;
        count_call(task, call, now);
      }
    }
    slot_freed.notify_one();
    task.publisher.tick(task.result, window, now);
  }
  const int recv_errno = errno;
  {
    std::lock_guard<std::mutex> lock(mutex);
    reader_done = true;
  }
  slot_freed.notify_one();
  sender.join();
  task.result.rate_dropped = dropped;
  if (send_errno != 0) {
    task.fail(std::string("send: ") + std::strerror(send_errno));
  } else if (!issued.empty()) {
    errno = recv_errno;
    task.fail_io("recv", last);
  }
  finish_verify(task, verifier, send_errno == 0 && issued.empty(),
                requests.mode() == tcp_mode_echo ? "echoed bytes" : "responses");
}

// Client-to-server stream: bs-byte messages (or a bssplit mix) timed from their first byte
// to send() taking their last; the server answers its count when we shut down our side.
// With stream_messages, the stream ends after that many and a new connection takes its
// place (the baseline's stream churn), sequences starting again at 0 as on ringmux.
void tcp_write_stream(TcpTask& task, int& fd) {
  const Job& job = task.job;
  SizePicker sizes(job, task.stream_key);
  std::vector<std::byte> message(sizes.max(), std::byte{0x6b});
  uint64_t written = 0;
  for (;;) {
    uint64_t sequence = 0;
    bool failed = false;
    for (;;) {
      const uint64_t started = Loop::clock_ns();
      if (task.window.over(started) || task.size_done(written)) break;
      if (job.stream_messages != 0 && sequence == job.stream_messages) break;
      const uint32_t size = sizes.next();
      if (job.verify) stamp_message(std::span(message).first(size), task.stream_key, sequence);
      sequence++;
      if (!tools::send_all(fd, message.data(), size)) {
        task.fail_io("send", -1);
        failed = true;
        break;
      }
      written += size;
      task.result.client_sent_bytes += size;
      if (task.progress != nullptr) task.progress->add(1, size);
      const uint64_t now = Loop::clock_ns();
      if (task.window.measuring(now)) {
        task.result.count_bytes(now, Direction::write, size);
        task.result.count_op(now, now - started, size);
      }
      task.publisher.tick(task.result, task.window, now);
    }
    ::shutdown(fd, SHUT_WR);
    std::byte answer[sink_answer_verify_bytes];
    const std::size_t answer_bytes = job.verify ? sink_answer_verify_bytes : sink_answer_bytes;
    if (tools::recv_exact(fd, answer, answer_bytes)) {
      read_sink_answer(std::span<const std::byte>(answer, answer_bytes), task.result);
      if (task.result.verify_mismatches + task.result.verify_gaps + task.result.verify_duplicates != 0) {
        task.fail("verify: the server saw damaged, missing or repeated messages");
        failed = true;
      }
    } else {
      task.fail(std::string("no count from the server: ") + (errno != 0 ? std::strerror(errno) : "connection closed"));
      failed = true;
    }
    const uint64_t now = Loop::clock_ns();
    if (failed || job.stream_messages == 0 || task.window.over(now) || task.size_done(written)) return;
    ::close(fd);  // churn: the next stream on a new connection
    std::string error;
    fd = tcp_connect(task.target, tcp_mode_sink, job, task.stream_key, error);
    if (fd < 0) {
      task.fail(error);
      return;
    }
  }
}

// Server-to-client stream: the server writes bs-byte messages; the client reads for the
// window (or size), then closes. Verified, the bytes are checked as they arrive.
void tcp_read_stream(TcpTask& task, int fd) {
  const Job& job = task.job;
  StreamVerifier verifier(task.stream_key, message_bytes_max);
  std::vector<std::byte> buffer(recv_buffer_bytes);
  uint64_t received = 0;
  uint64_t measured = 0;  // bytes read in the window: its messages are measured / bs
  for (;;) {
    const uint64_t now = Loop::clock_ns();
    if (task.window.over(now) || task.size_done(received)) break;
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      task.fail_io("recv", n);
      break;
    }
    const auto bytes = static_cast<uint64_t>(n);
    received += bytes;
    if (job.verify) verifier.feed(std::span<const std::byte>(buffer.data(), bytes));
    if (task.progress != nullptr) task.progress->add(0, bytes);
    const uint64_t arrived = Loop::clock_ns();
    if (task.window.measuring(arrived)) {
      const uint64_t bs = std::max<uint32_t>(job.bs, 1);
      task.result.count_bytes(arrived, Direction::read, bytes);
      task.result.count_ops(arrived, (measured + bytes) / bs - measured / bs);
      measured += bytes;
    }
    task.publisher.tick(task.result, task.window, arrived);
  }
  finish_verify(task, verifier, false, "stream bytes");  // a message cut by our close is no gap
}

// Both directions: a writer thread sends messages, this thread reads the echo and times
// each message's round trip (issue of its first byte to arrival of its last); a message's
// bytes count as written in the window when its echo is back in it.
void tcp_bidi_stream(TcpTask& task, int fd) {
  const Job& job = task.job;
  struct Sent {
    uint64_t end_offset;  // the stream's bytes written when the message was whole
    uint64_t started_ns;
    uint32_t bytes;
  };
  std::mutex mutex;
  std::deque<Sent> sent_at;
  int send_errno = 0;
  uint64_t written = 0;
  std::thread writer([&] {
    if (!job.cpus_allowed.empty()) (void)engine::pin_current_thread(job.cpus_allowed.front());
    SizePicker sizes(job, task.stream_key);
    std::vector<std::byte> message(sizes.max(), std::byte{0x6b});
    for (uint64_t sequence = 0;; sequence++) {
      const uint64_t started = Loop::clock_ns();
      {
        std::lock_guard<std::mutex> lock(mutex);
        if (task.window.over(started) || task.size_done(written)) break;
      }
      const uint32_t size = sizes.next();
      if (job.verify) stamp_message(std::span(message).first(size), task.stream_key, sequence);
      if (!tools::send_all(fd, message.data(), size)) {
        std::lock_guard<std::mutex> lock(mutex);
        send_errno = errno;
        break;
      }
      std::lock_guard<std::mutex> lock(mutex);
      written += size;
      sent_at.push_back({written, started, size});
    }
    ::shutdown(fd, SHUT_WR);  // the echo ends when ours does
  });
  StreamVerifier verifier(task.stream_key, message_bytes_max);
  std::vector<std::byte> buffer(recv_buffer_bytes);
  uint64_t received = 0;
  ssize_t last = 0;
  for (;;) {
    last = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (last < 0 && errno == EINTR) continue;
    if (last <= 0) break;  // the echo of our shutdown, or a failure (counted below)
    const auto bytes = static_cast<uint64_t>(last);
    const uint64_t now = Loop::clock_ns();
    received += bytes;
    if (job.verify) verifier.feed(std::span<const std::byte>(buffer.data(), bytes));
    if (task.progress != nullptr) task.progress->add(0, bytes);
    if (task.window.measuring(now)) task.result.count_bytes(now, Direction::read, bytes);
    {
      std::lock_guard<std::mutex> lock(mutex);
      while (!sent_at.empty() && received >= sent_at.front().end_offset) {
        if (task.window.measuring(now)) {
          task.result.count_bytes(now, Direction::write, sent_at.front().bytes);
          task.result.count_op(now, now - sent_at.front().started_ns, sent_at.front().bytes);
        }
        sent_at.pop_front();
      }
    }
    task.publisher.tick(task.result, task.window, now);
  }
  const int recv_errno = errno;
  writer.join();
  task.result.client_sent_bytes += written;
  if (send_errno != 0) {
    task.fail(std::string("send: ") + std::strerror(send_errno));
  } else if (received != written) {
    errno = recv_errno;
    task.fail("echo incomplete (" + std::to_string(received) + " of " + std::to_string(written) + " bytes back): " +
              (last == 0 ? "the server closed the connection" : std::strerror(recv_errno)));
  }
  finish_verify(task, verifier, send_errno == 0 && received == written, "echoed bytes");
}

// Connects, waits for every connection of the run (`connected`) and the windows (`go`),
// runs one task on its connection, closes it, and closes the task's window.
void run_task(TcpTask task, std::latch& connected, std::latch& go) {
  const Job& job = task.job;
  if (!job.cpus_allowed.empty()) (void)engine::pin_current_thread(job.cpus_allowed.front());
  const uint32_t mode = job.rw == RwMode::unary ? TcpRequests(job, 0).mode()
                        : job.rw == RwMode::write ? tcp_mode_sink
                        : job.rw == RwMode::read  ? tcp_mode_source
                                                  : tcp_mode_echo;
  std::string error;
  int fd = tcp_connect(task.target, mode, job, task.stream_key, error);
  connected.count_down();
  go.wait();
  if (fd < 0) {
    task.fail(error);
  } else {
    switch (job.rw) {
      case RwMode::unary:
        if (job.rate_iops != 0) {
          tcp_unary_paced(task, fd);
        } else {
          tcp_unary(task, fd);
        }
        break;
      case RwMode::write: tcp_write_stream(task, fd); break;  // may replace fd (stream churn)
      case RwMode::read: tcp_read_stream(task, fd); break;
      case RwMode::bidi: tcp_bidi_stream(task, fd); break;
      case RwMode::quorum: RM_ASSERT(false && "rw=quorum runs on ioengine=ringmux only (validated)"); break;
    }
    if (fd >= 0) ::close(fd);
  }
  task.result.close(task.window, Loop::clock_ns());
}

}  // namespace

void run_tcp_clones(const std::vector<CloneRun>& clones, const RunTarget& target, Progress* progress, RunControl& control) {
  // The parts of a clone (its streams) count into results of their own, merged when every
  // thread is done. The windows start once every connection is up (or failed), as a
  // ringmux stream's starts once the runners are built.
  std::vector<Window> windows(clones.size());
  std::vector<std::vector<JobResult>> parts(clones.size());
  std::size_t threads_count = 0;
  for (std::size_t c = 0; c < clones.size(); c++) {
    const JobResult& result = *clones[c].result;
    parts[c].assign(clones[c].job->rw == RwMode::unary ? 1 : clones[c].job->streams, JobResult());
    for (JobResult& part : parts[c]) {
      part.rw = result.rw;
      part.engine = result.engine;
      part.latency_log = result.latency_log;
    }
    threads_count += parts[c].size();
  }
  std::latch connected(static_cast<std::ptrdiff_t>(threads_count)), go(1);
  std::vector<std::thread> threads;
  for (std::size_t c = 0; c < clones.size(); c++) {
    const Job& job = *clones[c].job;
    for (uint32_t s = 0; s < parts[c].size(); s++) {
      threads.emplace_back(run_task,
                           TcpTask{job, windows[c], parts[c][s], target, verify_stream_key(clones[c].index, s),
                                   job.size_bytes / job.streams, progress,
                                   Publisher(control.live, clones[c].index, s, parts[c].size())},
                           std::ref(connected), std::ref(go));
    }
  }
  connected.wait();
  const uint64_t start_ns = Loop::clock_ns();
  for (std::size_t c = 0; c < clones.size(); c++) {
    windows[c] = Window(*clones[c].job, start_ns, &control.stop_ns);
    clones[c].result->begin(windows[c], clones[c].log_window_ns);
    for (JobResult& part : parts[c]) part.begin(windows[c], clones[c].log_window_ns);
  }
  go.count_down();
  for (auto& thread : threads) thread.join();
  for (std::size_t c = 0; c < clones.size(); c++) {
    JobResult& result = *clones[c].result;
    for (const JobResult& part : parts[c]) {
      result.merge(part, false);
      if (result.rw != RwMode::unary) result.stream_bytes.push_back(result.rw == RwMode::read ? part.bytes_read : part.bytes_written);
    }
  }
}

}  // namespace ringmux::loadgen
