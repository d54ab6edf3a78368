// Worker streams (mux/workers/worker_stream.h): streams served by application threads
// through per-stream SPSC slot rings, against a real connection on an engine loop. The
// readers and writers sleep on futexes and are woken by the loop; these tests prove it
// (thread CPU time while blocked, sleep and wake counts), and prove the data, the credit,
// the deadlines and cancellation. Run under ThreadSanitizer (tests/run.sh tsan).
#include "ringmux/mux/workers/worker_stream.h"

#include <doctest/doctest.h>
#include <sys/resource.h>

#include <atomic>
#include <cstring>
#include <future>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "tests/mux/workers/harness.h"
#include "tests/support.h"

using namespace ringmux;
using namespace ringmux::mux;
using namespace ringmux::mux::threaded_test;

namespace {

constexpr uint64_t ms_ns = 1'000'000;
constexpr uint64_t second_ns = 1000 * ms_ns;

#if defined(__SANITIZE_THREAD__)
constexpr uint64_t bulk_bytes = 2u << 20;  // ThreadSanitizer runs ~10x slower
#else
constexpr uint64_t bulk_bytes = 8u << 20;
#endif

// CPU time the calling thread has used (user + system).
uint64_t thread_cpu_ns() {
  rusage usage{};
  REQUIRE(getrusage(RUSAGE_THREAD, &usage) == 0);
  auto ns = [](const timeval& t) { return static_cast<uint64_t>(t.tv_sec) * second_ns + static_cast<uint64_t>(t.tv_usec) * 1000; };
  return ns(usage.ru_utime) + ns(usage.ru_stime);
}

// A connection whose streams have a fixed window (64 KiB by default), far below the
// transfers of the tests.
ConnectionOptions small_windows(uint32_t window_bytes = 64 * 1024) {
  ConnectionOptions options;
  options.session.stream_window_bytes = window_bytes;
  options.session.stream_window_bytes_max = window_bytes;
  return options;
}

// Reads a stream to its end, checking each byte against pattern_byte(position).
struct ReadAll {
  uint64_t bytes = 0;
  uint64_t mismatches = 0;
  uint64_t messages = 0;
  bool ended = false;  // a message carried end_stream
  bool finished = false;
  MuxError error = MuxError::cancelled;
};
ReadAll read_all(WorkerStream& stream, uint64_t deadline_ns) {
  ReadAll seen;
  while (!seen.finished) {
    const WorkerStream::Message* message = stream.acquire(deadline_ns);
    if (message == nullptr) break;
    for (std::size_t i = 0; i < message->bytes.size(); i++) {
      if (message->bytes[i] != pattern_byte(seen.bytes + i)) seen.mismatches++;
    }
    seen.bytes += message->bytes.size();
    seen.messages++;
    seen.ended = seen.ended || message->end_stream;
    if (message->finished) {
      seen.finished = true;
      seen.error = message->error;
    }
    stream.release();
  }
  return seen;
}

// Waits (bounded: 10 s) until `condition()` holds; returns it.
template <typename Condition>
bool eventually(Condition&& condition) {
  for (int i = 0; i < 10000 && !condition(); i++) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return condition();
}

}  // namespace

// Proves a reader blocked on an empty stream sleeps in the kernel rather than polling: over
// 300 ms blocked it makes one futex wait and uses almost no CPU (a sleep-slice loop of
// 20-50 us would wake thousands of times and count them here), and the first frame wakes it
// through the loop's one futex wake, not a timeout. Then, message by message, the loop's
// wakes never outnumber the deliveries. (No sleep call exists on this path at all:
// tests/check_no_sleep.sh fails the build's tests if one appears in mux/workers/.)
TEST_CASE("worker stream wake-up without polling: a blocked reader uses no CPU and the first frame wakes it") {
  Harness h;
  std::shared_ptr<WorkerStream> stream = h.open(echo_stream, {}, false);
  uint64_t blocked_wall_ns = 0;
  uint64_t blocked_cpu_ns = 0;
  std::size_t first_bytes = 0;
  std::thread reader([&] {
    const uint64_t wall_start = Loop::clock_ns();
    const uint64_t cpu_start = thread_cpu_ns();
    const WorkerStream::Message* message = stream->acquire(Loop::clock_ns() + 60 * second_ns);
    blocked_wall_ns = Loop::clock_ns() - wall_start;
    blocked_cpu_ns = thread_cpu_ns() - cpu_start;
    if (message != nullptr) {
      first_bytes = message->bytes.size();
      stream->release();
    }
  });
  REQUIRE(eventually([&] { return stream->stats().reader_sleeps == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the reader stays blocked meanwhile
  CHECK(stream->stats().reader_sleeps == 1);  // still its one sleep: nothing woke it to look again
  CHECK(stream->stats().reader_wakes == 0);
  const std::byte ping[5] = {std::byte{'p'}, std::byte{'i'}, std::byte{'n'}, std::byte{'g'}, std::byte{'!'}};
  REQUIRE(stream->write(ping, false, Loop::clock_ns() + 10 * second_ns).ok());
  reader.join();
  CHECK(first_bytes == sizeof(ping));
  CHECK(blocked_wall_ns >= 300 * ms_ns);
  // Generous: a blocked thread uses microseconds; a poller of 20-50 us slices far more.
  CHECK(blocked_cpu_ns < blocked_wall_ns / 20);
  WorkerStreamStats stats = stream->stats();
  CHECK(stats.reader_sleeps == 1);
  CHECK(stats.reader_wakes == 1);  // the frame's commit woke it
  CHECK(stats.reader_timeouts == 0);
  MESSAGE("blocked " << blocked_wall_ns / 1000 << " us, reader CPU " << blocked_cpu_ns / 1000 << " us");

  // Message by message (each echo is awaited): every sleep ends in a wake, never a timeout,
  // and the loop makes at most one wake syscall per delivery.
  constexpr int messages = 200;
  for (int i = 0; i < messages; i++) {
    REQUIRE(stream->write(ping, false, Loop::clock_ns() + 10 * second_ns).ok());
    const WorkerStream::Message* message = stream->acquire(Loop::clock_ns() + 10 * second_ns);
    REQUIRE(message != nullptr);
    CHECK(message->bytes.size() == sizeof(ping));
    stream->release();
  }
  stats = stream->stats();
  CHECK(stats.deliveries == messages + 1);
  CHECK(stats.reader_timeouts == 0);
  CHECK(stats.reader_wakes <= stats.deliveries);
  CHECK(stats.writer_wakes <= messages + 1);
  MESSAGE("after " << messages + 1 << " messages: reader sleeps " << stats.reader_sleeps << ", reader wakes "
                   << stats.reader_wakes << ", writer sleeps " << stats.writer_sleeps << ", writer wakes "
                   << stats.writer_wakes << ", loop tasks " << stats.tasks_run);
  REQUIRE(stream->end(Loop::clock_ns() + 10 * second_ns).ok());
  const ReadAll rest = read_all(*stream, Loop::clock_ns() + 10 * second_ns);
  CHECK(rest.ended);
  CHECK(rest.finished);
  CHECK(rest.error == MuxError::none);
}

// Proves the bytes of many messages of random sizes (seeded) arrive whole and in order
// through the rings of both ends: a server worker writes them with blocking writes into a
// 64 KiB window, the client's worker reads them through a ring of 4 slots (so deliveries
// also wait on the loop side), and each release's credit lets the rest come.
TEST_CASE("worker stream: data integrity through the ring, many messages of random sizes (seeded)") {
  const uint64_t seed = test::test_seed("worker stream integrity");
  std::mt19937_64 random(seed);
  Harness h(small_windows());
  std::promise<std::shared_ptr<WorkerStream>> served;
  on_loop(*h.engine, [&] {
    h.side->on_served = [&served](std::shared_ptr<WorkerStream> stream) { served.set_value(std::move(stream)); };
  });
  WorkerStreamOptions client_options;
  client_options.slots = 4;
  std::shared_ptr<WorkerStream> client = h.open(worker_served, {}, false, client_options);
  std::shared_ptr<WorkerStream> server = served.get_future().get();

  // The message sizes: mostly small, some larger than the window, a few tiny.
  std::vector<std::size_t> sizes;
  uint64_t total = 0;
  while (total < bulk_bytes) {
    const uint64_t kind = random() % 8;
    const std::size_t size = kind == 0 ? 1 + random() % 16 : kind < 6 ? 1 + random() % 8192 : 1 + random() % 200'000;
    sizes.push_back(size);
    total += size;
  }
  std::vector<std::byte> data(total);
  for (uint64_t i = 0; i < total; i++) data[i] = pattern_byte(i);

  std::atomic<bool> writes_ok{true};
  std::thread server_worker([&] {
    std::size_t at = 0;
    for (std::size_t size : sizes) {
      if (!server->write(std::span<const std::byte>(data).subspan(at, size), false, Loop::clock_ns() + 30 * second_ns)) {
        writes_ok.store(false);
        return;
      }
      at += size;
    }
    if (!server->end(Loop::clock_ns() + 30 * second_ns)) writes_ok.store(false);
    // The client half-closes too; the stream is then over.
    const ReadAll from_client = read_all(*server, Loop::clock_ns() + 30 * second_ns);
    if (!from_client.ended || !from_client.finished || from_client.error != MuxError::none) writes_ok.store(false);
  });
  REQUIRE(client->end(Loop::clock_ns() + 10 * second_ns).ok());
  const ReadAll seen = read_all(*client, Loop::clock_ns() + 60 * second_ns);
  server_worker.join();
  CHECK(writes_ok.load());
  CHECK(seen.bytes == total);
  CHECK(seen.mismatches == 0);
  CHECK(seen.ended);
  CHECK(seen.finished);
  CHECK(seen.error == MuxError::none);
  const WorkerStreamStats stats = client->stats();
  // Every released byte went back as credit, but for those released after the stream had
  // ended (no credit is due then): at most one window's worth.
  CHECK(stats.credit_bytes <= total);
  CHECK(stats.credit_bytes + 64 * 1024 >= total);
  MESSAGE(sizes.size() << " messages, " << total << " bytes in " << seen.messages << " deliveries; queued peak "
                       << stats.queued_peak << ", loop tasks " << stats.tasks_run << ", reader sleeps "
                       << stats.reader_sleeps);
}

// Proves credit returns through the releases: a stream whose 256 KiB window is a small
// part of the transfer completes, the loop credited what the worker released, and
// deliveries that found the 2-slot ring full (a window holds four 64 KiB chunks) waited on
// the loop side and came in order.
TEST_CASE("worker stream: credit returns, a window smaller than the transfer completes") {
  Harness h(small_windows(256 * 1024));
  WorkerStreamOptions options;
  options.slots = 2;
  options.credit_ahead_bytes = 0;  // credit on release only
  std::byte request[sizeof(bulk_bytes)];
  std::memcpy(request, &bulk_bytes, sizeof(bulk_bytes));
  std::shared_ptr<WorkerStream> stream = h.open(source_stream, request, true, options);
  // The window's worth arrives while nobody reads: the ring fills and the rest queues.
  REQUIRE(eventually([&] { return stream->stats().queued_peak > 0; }));
  const WorkerStreamStats before = stream->stats();
  CHECK(before.credit_bytes == 0);  // nothing released yet, nothing credited
  const ReadAll seen = read_all(*stream, Loop::clock_ns() + 60 * second_ns);
  CHECK(seen.bytes == bulk_bytes);
  CHECK(seen.mismatches == 0);
  CHECK(seen.finished);
  CHECK(seen.error == MuxError::none);
  // Credited: what was released while the stream was open, all but the last window.
  CHECK(stream->stats().credit_bytes <= bulk_bytes);
  CHECK(stream->stats().credit_bytes + 256 * 1024 >= bulk_bytes);
}

// Proves the credit given ahead: the loop credits up to credit_ahead_bytes of what it
// received before the reader has released any of it (so a reader waiting for a CPU does
// not stop the sender), and not a byte more: with nobody reading, the credit stops at
// exactly that, and the stream holds at most its window plus it. Once read, every byte
// arrives in order and the total credit stays within what was received.
TEST_CASE("worker stream: credit given ahead of the reader is bounded by credit_ahead_bytes") {
  Harness h(small_windows(256 * 1024));
  WorkerStreamOptions options;
  options.slots = 2;
  options.credit_ahead_bytes = 512 * 1024;
  std::byte request[sizeof(bulk_bytes)];
  std::memcpy(request, &bulk_bytes, sizeof(bulk_bytes));
  std::shared_ptr<WorkerStream> stream = h.open(source_stream, request, true, options);
  // The peer spends its window and the credit given ahead, and then waits.
  const uint64_t bound = 256 * 1024 + options.credit_ahead_bytes;
  REQUIRE(eventually([&] { return stream->stats().received_bytes == bound; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // more would show within this
  const WorkerStreamStats idle = stream->stats();
  CHECK(idle.received_bytes == bound);
  CHECK(idle.credit_bytes == options.credit_ahead_bytes);
  CHECK(idle.credit_ahead_bytes == options.credit_ahead_bytes);
  const ReadAll seen = read_all(*stream, Loop::clock_ns() + 60 * second_ns);
  CHECK(seen.bytes == bulk_bytes);
  CHECK(seen.mismatches == 0);
  CHECK(seen.finished);
  CHECK(seen.error == MuxError::none);
  const WorkerStreamStats done = stream->stats();
  CHECK(done.credit_bytes <= bulk_bytes);
  CHECK(done.credit_bytes + 256 * 1024 >= bulk_bytes);
  CHECK(done.credit_ahead_bytes >= options.credit_ahead_bytes);
}

// Proves a stream that ends with bytes its reader has not released yet gives the
// connection its credit back all the same: eight streams, each cancelled while a full
// window (256 KiB) waits unread, on a connection whose window is 1 MiB. Were that credit
// lost, the connection's window would be gone after four and the fifth would receive
// nothing; then one more stream moves 2 MiB, twice the connection window.
TEST_CASE("worker stream: a stream that ends before its reader released everything returns the connection's credit") {
  ConnectionOptions connection_options = small_windows(256 * 1024);
  connection_options.session.connection_window_bytes = 1024 * 1024;
  Harness h(connection_options);
  WorkerStreamOptions options;
  options.slots = 2;
  options.credit_ahead_bytes = 0;
  const uint64_t total = 4u << 20;
  std::byte request[sizeof(total)];
  std::memcpy(request, &total, sizeof(total));
  for (int round = 0; round < 8; round++) {
    CAPTURE(round);
    std::shared_ptr<WorkerStream> stream = h.open(source_stream, request, true, options);
    REQUIRE(eventually([&] { return stream->stats().received_bytes == 256 * 1024; }));
    stream->cancel();
    const ReadAll seen = read_all(*stream, Loop::clock_ns() + 10 * second_ns);
    REQUIRE(seen.finished);
    CHECK(seen.error == MuxError::cancelled);
    CHECK(seen.mismatches == 0);
  }
  const uint64_t last_total = 2u << 20;
  std::memcpy(request, &last_total, sizeof(last_total));
  std::shared_ptr<WorkerStream> last = h.open(source_stream, request, true, options);
  const ReadAll seen = read_all(*last, Loop::clock_ns() + 30 * second_ns);
  CHECK(seen.bytes == last_total);
  CHECK(seen.mismatches == 0);
  CHECK(seen.error == MuxError::none);
}

// Proves a reader blocked past its deadline returns empty at the deadline (not before, not
// much after), having slept rather than spun.
TEST_CASE("worker stream: a blocked read ends at its deadline") {
  Harness h;
  std::shared_ptr<WorkerStream> stream = h.open(echo_stream, {}, false);
  const uint64_t start = Loop::clock_ns();
  const uint64_t cpu_start = thread_cpu_ns();
  const WorkerStream::Message* message = stream->acquire(start + 200 * ms_ns);
  const uint64_t elapsed = Loop::clock_ns() - start;
  const uint64_t cpu = thread_cpu_ns() - cpu_start;
  CHECK(message == nullptr);
  CHECK(elapsed >= 200 * ms_ns);
  CHECK(elapsed < 5 * second_ns);
  CHECK(cpu < elapsed / 20);
  CHECK(stream->stats().reader_timeouts == 1);
  // A deadline already passed only looks.
  CHECK(stream->acquire(Loop::clock_ns() - 1) == nullptr);
  CHECK(stream->stats().reader_sleeps == 1);
  stream->cancel();
  const ReadAll rest = read_all(*stream, Loop::clock_ns() + 10 * second_ns);
  CHECK(rest.finished);
  CHECK(rest.error == MuxError::cancelled);
}

// Proves cancel() from a third thread wakes a reader and a writer that are both blocked
// (no deadlines): the reader gets the finished message, the write fails with cancelled,
// and the peer's handler observes the cancellation.
TEST_CASE("worker stream: cancel wakes a blocked reader and a blocked writer") {
  Harness h(small_windows());
  on_loop(*h.engine, [&] { h.side->sink_stalls = true; });  // the sink takes no bytes: writes block
  std::shared_ptr<WorkerStream> stream = h.open(counting_sink, {}, false);
  ReadAll read;
  Result<void, MuxError> written;
  std::thread reader([&] { read = read_all(*stream, 0); });
  std::vector<std::byte> block(1 << 20, std::byte{0x5a});
  std::thread writer([&] { written = stream->write(block, false, 0); });
  REQUIRE(eventually([&] { return stream->stats().reader_sleeps >= 1 && stream->stats().writer_sleeps >= 1; }));
  stream->cancel();
  reader.join();
  writer.join();
  CHECK(read.finished);
  CHECK(read.error == MuxError::cancelled);
  REQUIRE(!written.ok());
  CHECK(written.error() == MuxError::cancelled);
  CHECK(eventually([&] { return h.side->sink_finished.load() == static_cast<int>(MuxError::cancelled); }));
}

// Proves a worker writes a stream with blocking writes under flow control (16 MiB through
// a 64 KiB window) and reads the server's byte count back.
TEST_CASE("worker stream: a worker writes a stream with blocking writes") {
  Harness h(small_windows());
  std::shared_ptr<WorkerStream> stream = h.open(counting_sink, {}, false);
  std::vector<std::byte> block(1 << 20, std::byte{0x33});
  const int blocks = static_cast<int>(bulk_bytes >> 20) * 2;
  for (int i = 0; i < blocks; i++) {
    REQUIRE(stream->write(block, i == blocks - 1, Loop::clock_ns() + 10 * second_ns).ok());
  }
  uint64_t count = 0;
  bool finished = false;
  while (!finished) {
    const WorkerStream::Message* message = stream->acquire(Loop::clock_ns() + 10 * second_ns);
    REQUIRE(message != nullptr);
    if (message->bytes.size() == sizeof(count)) std::memcpy(&count, message->bytes.data(), sizeof(count));
    finished = message->finished;
    if (finished) CHECK(message->error == MuxError::none);
    stream->release();
  }
  CHECK(count == static_cast<uint64_t>(blocks) << 20);
  // After the end, writes fail with stream_closed instead of blocking, and a read returns
  // the end again at once (no deadline: it would block forever otherwise).
  auto late = stream->write(block, false, Loop::clock_ns() + 10 * second_ns);
  REQUIRE(!late.ok());
  CHECK(late.error() == MuxError::stream_closed);
  const WorkerStream::Message* again = stream->acquire(0);
  REQUIRE(again != nullptr);
  CHECK(again->finished);
  CHECK(again->error == MuxError::none);
  stream->release();
}

// Proves a blocking write against a peer that stopped reading fails at its deadline
// (and resets the stream) instead of hanging, and that the reader learns of the reset.
TEST_CASE("worker stream: a blocking write to a stalled peer fails at its deadline") {
  Harness h(small_windows());
  on_loop(*h.engine, [&] { h.side->sink_stalls = true; });
  std::shared_ptr<WorkerStream> stream = h.open(counting_sink, {}, false);
  std::vector<std::byte> block(1 << 20, std::byte{0x44});
  const uint64_t start = Loop::clock_ns();
  auto written = stream->write(block, false, start + 200 * ms_ns);
  const uint64_t elapsed = Loop::clock_ns() - start;
  REQUIRE(!written.ok());
  CHECK(written.error() == MuxError::deadline_exceeded);
  CHECK(elapsed >= 200 * ms_ns);
  CHECK(elapsed < 5 * second_ns);
  const ReadAll rest = read_all(*stream, Loop::clock_ns() + 5 * second_ns);
  CHECK(rest.finished);
  CHECK(rest.error == MuxError::deadline_exceeded);
  // The sink's stream was reset too (it hears the reason the reset carried).
  CHECK(eventually([&] { return h.side->sink_finished.load() > static_cast<int>(MuxError::none); }));
}
