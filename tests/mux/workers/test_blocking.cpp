// Blocking handlers on a worker pool (mux/workers/blocking.h) and the pool itself
// (worker_pool.h): where handlers run, refusal when the queue is full, cancellation and
// deadlines reaching a running handler, ordered handlers, streams. Every test crosses
// threads: run under ThreadSanitizer too (tests/run.sh tsan).
#include "ringmux/mux/workers/blocking.h"

#include <doctest/doctest.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/mux/workers/harness.h"

using namespace ringmux;
using namespace ringmux::mux;
using engine::Loop;
using namespace ringmux::mux::threaded_test;

namespace {

constexpr uint32_t blocking_echo = 20;
constexpr uint32_t blocking_ordered = 21;
constexpr uint32_t blocking_stream = 22;
constexpr uint64_t generous_ns = 10'000'000'000;  // how long a test waits for an event

// A gate the handlers wait at until the test opens it (or the generous timeout passes).
struct Gate {
  std::mutex mutex;
  std::condition_variable changed;
  bool open = false;
  int waiting = 0;
  void wait() {
    std::unique_lock lock(mutex);
    waiting++;
    changed.notify_all();
    changed.wait_for(lock, std::chrono::nanoseconds(generous_ns), [&] { return open; });
    waiting--;
  }
  void open_now() {
    std::lock_guard lock(mutex);
    open = true;
    changed.notify_all();
  }
  // Waits until `count` handlers wait at the gate.
  bool wait_for_waiting(int count) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, std::chrono::nanoseconds(generous_ns), [&] { return waiting >= count; });
  }
};

// The outcomes of asynchronous calls, filled on the loop, read by the test thread.
struct Outcomes {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<MuxError> errors;
  std::vector<std::vector<std::byte>> responses;
  void add(const CallResult& result) {
    std::lock_guard lock(mutex);
    errors.push_back(result.error);
    responses.emplace_back(result.response.begin(), result.response.end());
    changed.notify_all();
  }
  bool wait_for(std::size_t count) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, std::chrono::nanoseconds(generous_ns), [&] { return errors.size() >= count; });
  }
  std::size_t count_of(MuxError error) {
    std::lock_guard lock(mutex);
    return static_cast<std::size_t>(std::count(errors.begin(), errors.end(), error));
  }
};

// Starts an asynchronous call on the loop; returns its stream id.
StreamId call_on_loop(Harness& h, uint32_t handler_id, std::vector<std::byte> request, uint64_t deadline_ns,
                      Outcomes& outcomes) {
  StreamId id = 0;
  on_loop(*h.engine, [&] {
    id = call(*h.side->client, handler_id, request, deadline_ns, [&outcomes](const CallResult& r) { outcomes.add(r); });
  });
  return id;
}

// Counts the handlers running at once, and the most seen.
struct Concurrency {
  std::atomic<int> running{0};
  std::atomic<int> most{0};
  // Runs for `duration`, as a handler blocked on a disk read would.
  void busy(std::chrono::microseconds duration) {
    const int now = running.fetch_add(1) + 1;
    for (int seen = most.load(); now > seen && !most.compare_exchange_weak(seen, now);) {
    }
    std::this_thread::sleep_for(duration);
    running.fetch_sub(1);
  }
};

// The tag of a request or response (tagged()); UINT32_MAX when it has the wrong size.
uint32_t tag_of(std::span<const std::byte> request) {
  uint32_t tag = UINT32_MAX;
  if (request.size() != sizeof(tag)) return tag;
  std::memcpy(&tag, request.data(), sizeof(tag));
  return tag;
}

std::vector<std::byte> tagged(uint32_t tag) {
  std::vector<std::byte> bytes(sizeof(tag));
  std::memcpy(bytes.data(), &tag, sizeof(tag));
  return bytes;
}

// Makes `calls` calls tagged 0.. to `handler_id` at once and waits for them all to succeed.
void call_tagged_all(Harness& h, uint32_t handler_id, uint32_t calls, Outcomes& outcomes) {
  for (uint32_t i = 0; i < calls; i++) call_on_loop(h, handler_id, tagged(i), 0, outcomes);
  REQUIRE(outcomes.wait_for(calls));
  CHECK(outcomes.count_of(MuxError::none) == calls);
}

}  // namespace

// Proves the pool runs every job exactly once when 4 threads submit 20,000 jobs each at
// once through a queue of 64 (submitters retry on "full"), with idle workers sleeping at
// once and with one of them spinning first (WorkerPoolOptions::spin_ns).
TEST_CASE("worker pool: 4 submitters, every job runs exactly once") {
  for (const uint64_t spin_ns : {uint64_t{0}, uint64_t{50'000}}) {
    CAPTURE(spin_ns);
    struct CountJob : PoolJob {
      std::atomic<uint32_t>* runs = nullptr;
    };
    constexpr int submitters = 4;
    constexpr int per_submitter = 20000;
    std::vector<std::atomic<uint32_t>> runs(submitters * per_submitter);
    std::vector<CountJob> jobs(submitters * per_submitter);
    std::atomic<uint64_t> full{0};
    {
      WorkerPool pool({.threads = 3, .queue_jobs_max = 64, .spin_ns = spin_ns});
      std::vector<std::thread> threads;
      for (int s = 0; s < submitters; s++) {
        threads.emplace_back([&, s] {
          for (int i = 0; i < per_submitter; i++) {
            CountJob& job = jobs[static_cast<std::size_t>(s * per_submitter + i)];
            job.runs = &runs[static_cast<std::size_t>(s * per_submitter + i)];
            job.run = [](PoolJob* j) noexcept { static_cast<CountJob*>(j)->runs->fetch_add(1); };
            // Bounded: the workers drain the queue, so "full" passes.
            for (int attempt = 0; !pool.try_submit(job) && attempt < 100'000'000; attempt++) {
              full.fetch_add(1);
              std::this_thread::yield();
            }
          }
        });
      }
      for (auto& thread : threads) thread.join();
      // The destructor runs what is still queued before it joins.
    }
    int wrong = 0;
    for (auto& count : runs) wrong += count.load() != 1;
    CHECK(wrong == 0);
    MESSAGE("spin_ns " << spin_ns << ": submits refused as full (retried): " << full.load());
  }
}

// Proves an idle pool's workers sleep on their futex and a submit wakes one: the job runs
// and the pool counts at least one sleep and one wake.
TEST_CASE("worker pool: idle workers sleep and a submit wakes one") {
  WorkerPool pool({.threads = 2});
  // Wait (bounded) until both workers have announced their sleep.
  for (int i = 0; i < 10000 && pool.stats().worker_sleeps < 2; i++) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  CHECK(pool.stats().worker_sleeps >= 2);
  struct FlagJob : PoolJob {
    std::atomic<bool> ran{false};
  } job;
  job.run = [](PoolJob* j) noexcept { static_cast<FlagJob*>(j)->ran.store(true); };
  REQUIRE(pool.try_submit(job));
  for (int i = 0; i < 10000 && !job.ran.load(); i++) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  CHECK(job.ran.load());
  CHECK(pool.stats().worker_wakes >= 1);
  CHECK(pool.stats().run == 1);
}

// Proves WorkerPool::start pins every worker to the CPUs it is given (each of three workers,
// held in its job until all three run one, sees the pinned affinity and runs there; for one
// CPU and for a list of two), leaves an unpinned pool's workers on the affinity of the
// thread that made it, and refuses a CPU list the process cannot run on, with no pool left.
TEST_CASE("worker pool: start pins its workers to the CPUs it is given") {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  REQUIRE(sched_getaffinity(0, sizeof(allowed), &allowed) == 0);
  struct PlaceJob : PoolJob {
    cpu_set_t affinity;
    int cpu = -1;
    std::thread::id thread;
    std::atomic<int>* arrived = nullptr;
    std::atomic<bool> ran{false};
  };
  constexpr int workers = 3;
  // Runs one job per worker, each held until all of them run (bounded), and returns them.
  auto place_jobs = [](WorkerPool& pool) {
    std::atomic<int> arrived{0};
    std::vector<PlaceJob> jobs(workers);
    for (auto& job : jobs) {
      job.arrived = &arrived;
      job.run = [](PoolJob* j) noexcept {
        auto& self = *static_cast<PlaceJob*>(j);
        CPU_ZERO(&self.affinity);
        (void)sched_getaffinity(0, sizeof(self.affinity), &self.affinity);
        self.cpu = sched_getcpu();
        self.thread = std::this_thread::get_id();
        self.arrived->fetch_add(1);
        for (int i = 0; i < 10000 && self.arrived->load() < workers; i++) {
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        self.ran.store(true, std::memory_order_release);
      };
      REQUIRE(pool.try_submit(job));
    }
    for (auto& job : jobs) {
      for (int i = 0; i < 20000 && !job.ran.load(std::memory_order_acquire); i++) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      REQUIRE(job.ran.load(std::memory_order_acquire));
    }
    std::vector<std::thread::id> threads;
    for (auto& job : jobs) threads.push_back(job.thread);
    std::sort(threads.begin(), threads.end());
    CHECK(std::unique(threads.begin(), threads.end()) == threads.end());  // one job on each worker
    return jobs;
  };
  // wake_worth_ns = 0: every queued job wakes a worker (the jobs are held until all run).
  const WorkerPoolOptions base{.threads = workers, .wake_worth_ns = 0};
  std::vector<int> usable;
  for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
    if (CPU_ISSET(cpu, &allowed)) usable.push_back(cpu);
  }
  REQUIRE_FALSE(usable.empty());
  std::vector<std::vector<int>> lists;
  for (std::size_t i = 0; i < usable.size() && i < 2; i++) lists.push_back({usable[i]});
  if (usable.size() >= 2) lists.push_back({usable[0], usable[1]});
  for (const auto& list : lists) {
    WorkerPoolOptions options = base;
    options.cpus = list;
    auto started = WorkerPool::start(options);
    REQUIRE(started);
    cpu_set_t wanted;
    CPU_ZERO(&wanted);
    for (const int cpu : list) CPU_SET(cpu, &wanted);
    int elsewhere = 0;
    for (auto& job : place_jobs(*started.value())) {
      elsewhere += !CPU_EQUAL(&job.affinity, &wanted) || !CPU_ISSET(job.cpu, &wanted);
    }
    CHECK_MESSAGE(elsewhere == 0, "CPUs " << list.front() << (list.size() > 1 ? " and more" : ""));
  }

  auto unpinned = WorkerPool::start(base);
  REQUIRE(unpinned);
  for (auto& job : place_jobs(*unpinned.value())) CHECK(CPU_EQUAL(&job.affinity, &allowed));

  // CPU 1000 exists on no machine of this project (CPU_SETSIZE is 1024); -1 on none at all.
  for (const int cpu : {1000, -1}) {
    WorkerPoolOptions options = base;
    options.cpus = {cpu};
    auto refused = WorkerPool::start(options);
    REQUIRE_FALSE(refused);
    CHECK(refused.error() == engine::IoError::address_invalid);
  }
}

// Proves blocking unary handlers run on the pool's worker threads (never the loop's), that
// several run at once, and that every caller gets its own answer back through the loop.
TEST_CASE("blocking handler: unary calls run on the workers, concurrently, and answer the caller") {
  Harness h;
  WorkerPool pool({.threads = 4});
  std::thread::id loop_thread;
  std::atomic<int> on_loop_thread{0};
  Concurrency concurrency;
  on_loop(*h.engine, [&] {
    loop_thread = std::this_thread::get_id();
    add_blocking_unary(h.side->registry, blocking_echo, pool, [&](BlockingCall& call) {
      if (std::this_thread::get_id() == loop_thread) on_loop_thread.fetch_add(1);
      concurrency.busy(std::chrono::microseconds(200));  // the others go on on other workers
      call.reply(call.request());
    });
  });
  Outcomes outcomes;
  constexpr uint32_t calls = 400;
  call_tagged_all(h, blocking_echo, calls, outcomes);
  std::vector<bool> seen(calls, false);
  for (const auto& response : outcomes.responses) {
    const uint32_t tag = tag_of(response);
    REQUIRE(tag < calls);
    seen[tag] = true;
  }
  CHECK(std::count(seen.begin(), seen.end(), true) == calls);
  CHECK(on_loop_thread.load() == 0);
  CHECK(concurrency.most.load() >= 2);  // 400 calls in flight on 4 workers
  CHECK(pool.stats().run == calls);
}

// Proves a full queue refuses new calls at once with refused (retryable, MuxError::refused
// on the caller) while the running and queued ones go on and succeed, and that a call
// made once there is room again succeeds.
TEST_CASE("blocking handler: a full pool queue refuses new calls with a retryable error") {
  Harness h;
  WorkerPool pool({.threads = 1, .queue_jobs_max = 2});
  Gate gate;
  on_loop(*h.engine, [&] {
    add_blocking_unary(h.side->registry, blocking_echo, pool, [&](BlockingCall& call) {
      gate.wait();
      call.reply(call.request());
    });
  });
  Outcomes outcomes;
  call_on_loop(h, blocking_echo, tagged(0), 0, outcomes);  // runs, waits at the gate
  REQUIRE(gate.wait_for_waiting(1));
  call_on_loop(h, blocking_echo, tagged(1), 0, outcomes);  // queued
  call_on_loop(h, blocking_echo, tagged(2), 0, outcomes);  // queued: the queue is full
  Outcomes refused;
  call_on_loop(h, blocking_echo, tagged(3), 0, refused);
  REQUIRE(refused.wait_for(1));
  CHECK(refused.count_of(MuxError::refused) == 1);
  CHECK(pool.stats().refused == 1);
  gate.open_now();
  REQUIRE(outcomes.wait_for(3));
  CHECK(outcomes.count_of(MuxError::none) == 3);
  Outcomes retried;
  call_on_loop(h, blocking_echo, tagged(3), 0, retried);
  REQUIRE(retried.wait_for(1));
  CHECK(retried.count_of(MuxError::none) == 1);
}

// Proves a peer's cancellation reaches a running handler both ways: the callback it
// registered runs (on the loop) and cancelled() turns true; the caller hears cancelled.
TEST_CASE("blocking handler: the peer's cancel reaches the running handler (callback and flag)") {
  Harness h;
  WorkerPool pool({.threads = 2});
  std::atomic<bool> started{false}, callback_ran{false}, saw_cancelled{false};
  std::mutex mutex;
  std::condition_variable changed;
  on_loop(*h.engine, [&] {
    add_blocking_unary(h.side->registry, blocking_echo, pool, [&](BlockingCall& call) {
      call.on_cancel([&] {
        std::lock_guard lock(mutex);
        callback_ran.store(true);
        changed.notify_all();
      });
      started.store(true);
      {
        std::unique_lock lock(mutex);
        changed.notify_all();
        changed.wait_for(lock, std::chrono::nanoseconds(generous_ns), [&] { return callback_ran.load(); });
      }
      saw_cancelled.store(call.cancelled());
      call.reply(call.request());  // dropped: the call is over
    });
  });
  Outcomes outcomes;
  const StreamId id = call_on_loop(h, blocking_echo, tagged(7), 0, outcomes);
  REQUIRE(id != 0);
  {
    std::unique_lock lock(mutex);
    REQUIRE(changed.wait_for(lock, std::chrono::nanoseconds(generous_ns), [&] { return started.load(); }));
  }
  on_loop(*h.engine, [&] { h.side->client->cancel(id); });
  REQUIRE(outcomes.wait_for(1));
  CHECK(outcomes.count_of(MuxError::cancelled) == 1);
  // The handler returns once the callback woke it (bounded by the generous wait).
  for (int i = 0; i < 10000 && !saw_cancelled.load(); i++) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  CHECK(callback_ran.load());
  CHECK(saw_cancelled.load());
}

// Proves a call's deadline reaches its running handler: deadline_ns() is the caller's,
// cancelled() turns true once it passed, and the caller hears deadline_exceeded.
TEST_CASE("blocking handler: the call's deadline reaches the running handler") {
  Harness h;
  WorkerPool pool({.threads = 1});
  std::atomic<uint64_t> handler_deadline{0};
  std::atomic<bool> saw_cancelled{false}, done{false};
  on_loop(*h.engine, [&] {
    add_blocking_unary(h.side->registry, blocking_echo, pool, [&](BlockingCall& call) {
      handler_deadline.store(call.deadline_ns());
      // A handler polling its token (bounded by the generous wait).
      const uint64_t give_up_ns = Loop::clock_ns() + generous_ns;
      while (!call.cancelled() && Loop::clock_ns() < give_up_ns) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      saw_cancelled.store(call.cancelled());
      call.reply(call.request());
      done.store(true);
    });
  });
  Outcomes outcomes;
  const uint64_t deadline_ns = Loop::clock_ns() + 200'000'000;
  call_on_loop(h, blocking_echo, tagged(1), deadline_ns, outcomes);
  REQUIRE(outcomes.wait_for(1));
  CHECK(outcomes.count_of(MuxError::deadline_exceeded) == 1);
  for (int i = 0; i < 10000 && !done.load(); i++) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  CHECK(done.load());
  CHECK(saw_cancelled.load());
  // The server's deadline is the budget the caller sent, measured from the OPEN's arrival:
  // it cannot be later than the caller's own by more than the trip, nor be missing.
  CHECK(handler_deadline.load() != 0);
  CHECK(handler_deadline.load() <= deadline_ns + 1'000'000'000);
}

// Proves a call cancelled while it waited in the queue never runs its handler.
TEST_CASE("blocking handler: a call cancelled while queued never runs") {
  Harness h;
  WorkerPool pool({.threads = 1});
  Gate gate;
  std::atomic<int> ran{0};
  on_loop(*h.engine, [&] {
    add_blocking_unary(h.side->registry, blocking_echo, pool, [&](BlockingCall& call) {
      ran.fetch_add(1);
      const uint32_t tag = tag_of(call.request());
      if (tag == 0) gate.wait();
      call.reply(call.request());
    });
  });
  Outcomes first, second;
  call_on_loop(h, blocking_echo, tagged(0), 0, first);
  REQUIRE(gate.wait_for_waiting(1));
  const StreamId queued = call_on_loop(h, blocking_echo, tagged(1), 0, second);
  // The server has the request queued once the pool counts it (bounded wait).
  for (int i = 0; i < 10000 && pool.stats().submitted < 2; i++) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  REQUIRE(pool.stats().submitted == 2);
  on_loop(*h.engine, [&] { h.side->client->cancel(queued); });
  REQUIRE(second.wait_for(1));
  CHECK(second.count_of(MuxError::cancelled) == 1);
  // Wait until the server has marked the queued job cancelled: the same step gives the
  // request's copy back to the connection's RPC buffer (4 of the 8 bytes charged).
  bool marked = false;
  for (int i = 0; i < 10000 && !marked; i++) {
    on_loop(*h.engine, [&] { marked = h.side->servers.at(0)->rpc_bytes_buffered() == sizeof(uint32_t); });
    if (!marked) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  REQUIRE(marked);
  gate.open_now();
  REQUIRE(first.wait_for(1));
  CHECK(first.count_of(MuxError::none) == 1);
  for (int i = 0; i < 10000 && pool.stats().run < 2; i++) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  CHECK(pool.stats().run == 2);
  CHECK(ran.load() == 1);
}

// Proves ordered blocking handlers start one at a time in arrival order on a 4-worker pool,
// and that release() lets the next start while the releasing one still runs.
TEST_CASE("blocking handler: ordered requests run one at a time in arrival order; release() lets the next start") {
  Harness h;
  WorkerPool pool({.threads = 4});
  std::mutex mutex;
  std::vector<uint32_t> started;
  Concurrency concurrency;
  std::atomic<bool> second_started{false}, first_saw_second{false};
  on_loop(*h.engine, [&] {
    add_blocking_unary_ordered(h.side->registry, blocking_ordered, pool, [&](BlockingCall& call) {
      const uint32_t tag = tag_of(call.request());
      {
        std::lock_guard lock(mutex);
        started.push_back(tag);
      }
      if (tag == 1000) {
        // Releases the order, then waits (bounded) for the next request to start.
        call.release();
        const uint64_t give_up_ns = Loop::clock_ns() + generous_ns;
        while (!second_started.load() && Loop::clock_ns() < give_up_ns) {
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        first_saw_second.store(second_started.load());
        call.reply(call.request());
        return;
      }
      if (tag == 1001) second_started.store(true);
      concurrency.busy(std::chrono::microseconds(300));
      call.reply(call.request());
    });
  });
  Outcomes outcomes;
  constexpr uint32_t calls = 32;
  call_tagged_all(h, blocking_ordered, calls, outcomes);
  CHECK(concurrency.most.load() == 1);
  {
    std::lock_guard lock(mutex);
    REQUIRE(started.size() == calls);
    for (uint32_t i = 0; i < calls; i++) CHECK(started[i] == i);
  }
  Outcomes released;
  call_on_loop(h, blocking_ordered, tagged(1000), 0, released);
  call_on_loop(h, blocking_ordered, tagged(1001), 0, released);
  REQUIRE(released.wait_for(2));
  CHECK(released.count_of(MuxError::none) == 2);
  CHECK(first_saw_second.load());
}

// Proves a stream handler on the pool serves a stream through its WorkerStream: it echoes
// what the client writes, in order, and ends when the client does; and that a stream opened
// while the queue is full is refused (refused, retryable) before anything is read.
TEST_CASE("blocking handler: a stream handler on the pool echoes; a full queue refuses the stream") {
  Harness h;
  WorkerPool pool({.threads = 1, .queue_jobs_max = 1});
  Gate gate;
  std::atomic<bool> handler_ok{true};
  on_loop(*h.engine, [&] {
    add_blocking_stream(h.side->registry, blocking_stream, pool, [&](WorkerStream& stream, const BlockingStreamStart& start) {
      if (start.id == 0) handler_ok.store(false);
      for (int i = 0; i < 100000; i++) {
        const WorkerStream::Message* message = stream.acquire(Loop::clock_ns() + generous_ns);
        if (message == nullptr) {
          handler_ok.store(false);
          return;
        }
        const std::vector<std::byte> bytes = message->bytes;
        const bool end = message->end_stream, finished = message->finished;
        stream.release();
        if (finished) return;
        if (!stream.write(bytes, end, Loop::clock_ns() + generous_ns)) handler_ok.store(false);
        if (end) return;
      }
    });
    add_blocking_unary(h.side->registry, blocking_echo, pool, [&](BlockingCall& call) {
      gate.wait();
      call.reply(call.request());
    });
  });
  // The echo: 64 messages of 1 KiB, then END.
  auto stream = h.open(blocking_stream, {}, false);
  std::vector<std::byte> sent, received;
  for (uint32_t i = 0; i < 64; i++) {
    std::vector<std::byte> message(1024);
    for (std::size_t b = 0; b < message.size(); b++) message[b] = pattern_byte(i * 1024 + b);
    REQUIRE(stream->write(message, i == 63, Loop::clock_ns() + generous_ns).ok());
    sent.insert(sent.end(), message.begin(), message.end());
  }
  for (int i = 0; i < 100000; i++) {
    const WorkerStream::Message* message = stream->acquire(Loop::clock_ns() + generous_ns);
    REQUIRE(message != nullptr);
    received.insert(received.end(), message->bytes.begin(), message->bytes.end());
    const bool finished = message->finished;
    if (finished) CHECK(message->error == MuxError::none);
    stream->release();
    if (finished) break;
  }
  CHECK(received == sent);
  CHECK(handler_ok.load());
  // Fill the pool: one call runs (at the gate), one waits; the stream is refused.
  Outcomes outcomes;
  call_on_loop(h, blocking_echo, tagged(0), 0, outcomes);
  REQUIRE(gate.wait_for_waiting(1));
  call_on_loop(h, blocking_echo, tagged(1), 0, outcomes);
  for (int i = 0; i < 10000 && pool.queued() < 1; i++) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto refused = h.open(blocking_stream, {}, false);
  const WorkerStream::Message* message = refused->acquire(Loop::clock_ns() + generous_ns);
  REQUIRE(message != nullptr);
  CHECK(message->finished);
  CHECK(message->error == MuxError::refused);
  refused->release();
  gate.open_now();
  REQUIRE(outcomes.wait_for(2));
  CHECK(outcomes.count_of(MuxError::none) == 2);
}
