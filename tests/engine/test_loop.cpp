// Loop: ring set-up and its fallbacks, completion dispatch, CQ overflow, timers, and
// cross-thread posting.
#include "ringmux/engine/loop.h"

#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "ringmux/engine/engine.h"
#include "tests/support.h"

using namespace ringmux;
using namespace ringmux::engine;

namespace {

struct Counted {
  Completion completion;
  int calls = 0;
  int32_t result = 0;
};

void count_completion(Completion& completion, int32_t result, uint32_t) noexcept {
  auto& counted = owner_of<Counted>(completion);
  counted.calls++;
  counted.result = result;
}

void submit_nop(Loop& loop, Counted& counted) {
  counted.completion.callback = &count_completion;
  counted.completion.context = &counted;
  io_uring_sqe* sqe = loop.sqe();
  io_uring_prep_nop(sqe);
  loop.prepare(sqe, counted.completion);
}

}  // namespace

// Proves the fastest set-up is used where the kernel has it, and that the loop's only
// operation at rest is its eventfd read.
TEST_CASE("loop: sets up SINGLE_ISSUER + DEFER_TASKRUN and dispatches by completion address") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  CHECK(loop->single_issuer());
  CHECK(loop->defer_taskrun());
  CHECK(loop->ops_in_flight() == 1);  // the armed eventfd read

  Counted a, b;
  submit_nop(*loop, a);
  submit_nop(*loop, b);
  CHECK(loop->ops_in_flight() == 3);
  CHECK(loop->run_until([&] { return a.calls == 1 && b.calls == 1; }, 1'000'000'000));
  CHECK(a.result == 0);
  CHECK(!a.completion.submitted);
  CHECK(loop->ops_in_flight() == 1);
}

// Proves the fallback set-ups work: a kernel without DEFER_TASKRUN (or SINGLE_ISSUER)
// still gets a working loop.
TEST_CASE("loop: falls back to COOP_TASKRUN and to a plain ring") {
  for (const bool single_issuer : {true, false}) {
    LoopOptions options;
    options.try_defer_taskrun = false;
    options.try_single_issuer = single_issuer;
    auto loop = test::make_test_loop(options);
    if (!loop) return;
    CHECK(!loop->defer_taskrun());
    CHECK(loop->single_issuer() == single_issuer);
    CHECK((loop->setup_flags() & IORING_SETUP_COOP_TASKRUN) != 0);
    Counted nop;
    submit_nop(*loop, nop);
    CHECK(loop->run_until([&] { return nop.calls == 1; }, 1'000'000'000));
  }
}

// Proves a CQ overflow is detected and drained with no completion lost: 4000 NOPs are
// pushed through a 16-entry SQ into a 32-entry CQ without reaping in between.
TEST_CASE("loop: CQ overflow is detected and every completion still arrives") {
  LoopOptions options;
  options.sq_entries = 16;
  options.cq_entries = 32;
  auto loop = test::make_test_loop(options);
  if (!loop) return;
  std::vector<Counted> nops(4000);
  for (auto& nop : nops) submit_nop(*loop, nop);
  CHECK(loop->stats().extra_submits > 0);
  CHECK(loop->run_until([&] { return loop->ops_in_flight() == 1; }, 5'000'000'000));
  int total = 0;
  for (const auto& nop : nops) total += nop.calls;
  CHECK(total == 4000);
  CHECK(loop->stats().cq_overflows > 0);
}

// Proves timers fire in deadline order, that a cancelled timer never fires, and that a
// callback may re-arm its own timer.
TEST_CASE("loop: timers fire in deadline order, cancel, and re-arm") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  struct Probe {
    std::vector<int>* order;
    int id;
    int rearms_left;
    Loop* loop;
  };
  std::vector<int> order;
  auto fire = [](Timer& timer) noexcept {
    auto& probe = *static_cast<Probe*>(timer.context());
    probe.order->push_back(probe.id);
    if (probe.rearms_left-- > 0) probe.loop->timer_start(timer, 1'000'000);
  };
  Probe p1{&order, 1, 0, loop.get()}, p2{&order, 2, 1, loop.get()}, p3{&order, 3, 0, loop.get()};
  Timer t1(fire, &p1), t2(fire, &p2), t3(fire, &p3);
  loop->timer_start(t3, 30'000'000);
  loop->timer_start(t1, 10'000'000);
  loop->timer_start(t2, 20'000'000);
  Probe p4{&order, 4, 0, loop.get()};
  Timer t4(fire, &p4);
  loop->timer_start(t4, 15'000'000);
  loop->timer_cancel(t4);
  // Deadlines count from the loop's cached time (now_ns), which is earlier than the clock.
  const uint64_t start = loop->now_ns();
  CHECK(loop->run_until([&] { return order.size() == 4; }, 2'000'000'000));
  CHECK(Loop::clock_ns() - start >= 30'000'000);
  CHECK(order == std::vector<int>{1, 2, 2, 3});
  CHECK(!t4.armed());
}

// Proves deferred work runs once, in queue order, after the callback that queued it has
// returned and before the loop waits; that work queued between iterations runs when the
// next one starts; that work left over by the rounds' budget keeps the loop from sleeping
// (a 10 s wait returns at once);
// that a node queued twice runs once, a cancelled one never, and one that queues itself
// again runs again in a later round; and that a node may destroy its own owner.
TEST_CASE("loop: deferred work runs after the queuing callback, before the loop waits") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  struct Probe {
    Deferred node;
    std::vector<int>* order = nullptr;
    Loop* loop = nullptr;
    int id = 0;
    int again = 0;  // times it queues itself again from its own run
  };
  std::vector<int> order;
  auto run = [](Deferred& node) noexcept {
    auto& probe = *static_cast<Probe*>(node.context());
    probe.order->push_back(probe.id);
    if (probe.again-- > 0) probe.loop->defer(probe.node);
  };
  Probe a, b, c;
  for (auto [probe, id] : {std::pair{&a, 1}, std::pair{&b, 2}, std::pair{&c, 3}}) {
    probe->node.set_run(run, probe);
    probe->order = &order;
    probe->loop = loop.get();
    probe->id = id;
  }
  b.again = 1;

  // Queued from a timer callback: nothing runs inside it, all of it before the next wait.
  bool ran_inside = false;
  struct Arm {
    Loop* loop;
    Probe *a, *b, *c;
    std::vector<int>* order;
    bool* ran_inside;
  } arm{loop.get(), &a, &b, &c, &order, &ran_inside};
  Timer timer(
      [](Timer& t) noexcept {
        auto& state = *static_cast<Arm*>(t.context());
        state.loop->defer(state.b->node);
        state.loop->defer(state.a->node);
        state.loop->defer(state.b->node);  // queued already: stays where it is
        state.loop->defer(state.c->node);
        state.loop->cancel_deferred(state.c->node);
        *state.ran_inside = !state.order->empty();
      },
      &arm);
  loop->timer_start(timer, 0);
  loop->run_once(true, 1'000'000'000);
  CHECK_FALSE(ran_inside);
  CHECK(order == std::vector<int>{2, 1, 2});  // b again in the second round; c cancelled
  CHECK_FALSE(loop->deferred_pending());

  // Queued by the loop's owner between iterations: runs when the next one starts.
  order.clear();
  loop->defer(a.node);
  CHECK(order.empty());
  loop->run_once(true, 1'000'000);
  CHECK(order == std::vector<int>{1});

  // Work that keeps deferring more than the rounds of one iteration allow: the rest runs
  // in the next iteration, which does not sleep for its 10 s timeout while work is queued.
  // One run per round here (the node queues itself again for the next round).
  constexpr std::size_t rounds = limits::loop_deferred_rounds_max;
  order.clear();
  c.again = 3 * static_cast<int>(rounds);
  loop->defer(c.node);
  loop->run_once(false);
  CHECK(order.size() == 2 * rounds);  // the rounds when the iteration starts and when it ends
  CHECK(loop->deferred_pending());
  const uint64_t start = Loop::clock_ns();
  loop->run_once(true, 10'000'000'000);  // rounds, no wait (work left), the last run
  CHECK(Loop::clock_ns() - start < 1'000'000'000);
  CHECK(order.size() == 3 * rounds + 1);  // every run, the first included
  CHECK_FALSE(loop->deferred_pending());

  // A node whose run destroys its owner: the loop touches it no more.
  struct Owned {
    Deferred node;
    bool* ran;
  };
  bool owned_ran = false;
  auto* owned = new Owned{};
  owned->ran = &owned_ran;
  owned->node.set_run(
      [](Deferred& node) noexcept {
        auto* self = static_cast<Owned*>(node.context());
        *self->ran = true;
        delete self;
      },
      owned);
  loop->defer(owned->node);
  loop->defer(a.node);
  loop->run_once(false);
  CHECK(owned_ran);
  CHECK_FALSE(loop->deferred_pending());
}

// Proves posting is safe from many threads at once: every task runs exactly once, on the
// loop thread, and tasks of one poster run in the order it posted them.
TEST_CASE("loop: tasks posted from 4 threads all run on the loop thread, in order per thread") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  constexpr int threads_count = 4;
  constexpr int tasks_per_thread = 10000;
  std::vector<int> last_seen(threads_count, -1);
  std::atomic<int> ran{0};
  bool order_ok = true;
  bool thread_ok = true;
  const auto loop_thread = std::this_thread::get_id();
  std::vector<std::thread> posters;
  for (int t = 0; t < threads_count; t++) {
    posters.emplace_back([&, t] {
      for (int i = 0; i < tasks_per_thread; i++) {
        loop->post_fn([&, t, i] {
          if (last_seen[t] != i - 1) order_ok = false;
          if (std::this_thread::get_id() != loop_thread) thread_ok = false;
          last_seen[t] = i;
          ran.fetch_add(1, std::memory_order_relaxed);
        });
      }
    });
  }
  CHECK(loop->run_until([&] { return ran.load() == threads_count * tasks_per_thread; }, 10'000'000'000));
  for (auto& poster : posters) poster.join();
  loop->run_once(false);
  CHECK(ran.load() == threads_count * tasks_per_thread);
  CHECK(order_ok);
  CHECK(thread_ok);
  // Taken by eventfd wake-ups (the loop was asleep) or by the loop's look at the stack in
  // each iteration (it was awake): one eventfd write per burst at most, not per task.
  CHECK(loop->stats().wakeups + loop->stats().posted_drains >= 1);
  CHECK(loop->stats().wakeups < static_cast<uint64_t>(threads_count * tasks_per_thread));
}

// Proves a post wakes a loop asleep in io_uring_enter through its eventfd, and that posts
// made while the loop is awake cost no eventfd write: the loop takes them in the same
// iteration (posted from the loop thread itself, where the loop is awake by definition,
// and from another thread while the loop runs its callbacks).
TEST_CASE("loop: tasks posted to a sleeping loop wake it, to an awake loop cost no wake-up") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  LoopStats before = loop->stats();
  std::atomic<bool> ran{false};
  std::thread poster([&] {
    // Post once the loop has gone to sleep in run_until below (no timer, no socket: only
    // the eventfd can end its wait). Bounded: 10 s.
    for (int i = 0; i < 10000 && !loop->sleeping(); i++) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    loop->post_fn([&] { ran.store(true); });
  });
  CHECK(loop->run_until([&] { return ran.load(); }, 10'000'000'000));
  poster.join();
  // The post saw the loop asleep, so it wrote the eventfd: its completion arrives (it may
  // come after the task ran, if the loop looked at the stack once more before sleeping).
  CHECK(loop->run_until([&] { return loop->stats().wakeups > before.wakeups; }, 10'000'000'000));
  CHECK(loop->stats().wakeups == before.wakeups + 1);

  // Awake: a task posted by a task runs on the next iteration, without a wake-up.
  before = loop->stats();
  bool second_ran = false;
  loop->post_fn([&] { loop->post_fn([&] { second_ran = true; }); });
  CHECK(loop->run_until([&] { return second_ran; }, 10'000'000'000));
  CHECK(loop->stats().wakeups == before.wakeups);
  CHECK(loop->stats().posted_drains >= before.posted_drains + 1);
}

// Proves request_stop_from_any_thread ends run() of a loop on another thread, and that an
// Engine pins its loops and runs posted work on them.
TEST_CASE("engine: runs pinned loops and stops them from the owning thread") {
  EngineOptions options;
  options.loop_count = 2;
  options.cpus = {0, 1};
  auto started = Engine::start(options);
  if (!started && started.error() == IoError::not_supported) {
    MESSAGE("skipped: this kernel has no usable io_uring");
    return;
  }
  REQUIRE(started.ok());
  auto engine = std::move(started).value();
  std::atomic<int> cpu_seen[2] = {-1, -1};
  for (uint32_t i = 0; i < 2; i++) {
    engine->post(i, [&cpu_seen, i] { cpu_seen[i].store(sched_getcpu()); });
  }
  for (int spin = 0; spin < 2000 && (cpu_seen[0].load() < 0 || cpu_seen[1].load() < 0); spin++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  CHECK(cpu_seen[0].load() == 0);
  CHECK(cpu_seen[1].load() == 1);
  engine->stop();
  CHECK(engine->loop_count() == 0);
}

// Proves run_sync runs its function on the loop's thread and returns only after it ran
// (from another thread: posted and waited for; on the loop thread itself: at once).
TEST_CASE("engine: run_sync runs on the loop thread and returns after it") {
  auto started = Engine::start(EngineOptions{});
  if (!started && started.error() == IoError::not_supported) {
    MESSAGE("skipped: this kernel has no usable io_uring");
    return;
  }
  REQUIRE(started.ok());
  auto engine = std::move(started).value();
  Loop& loop = engine->loop(0);
  for (int i = 0; i < 100; i++) {
    bool on_loop = false;
    int inner = 0;
    loop.run_sync([&] {
      on_loop = loop.on_loop_thread();
      loop.run_sync([&] { inner++; });  // on the loop thread: runs inline, no deadlock
      inner++;
    });
    CHECK(on_loop);
    CHECK(inner == 2);  // both ran before run_sync returned
  }
  engine->stop();
}

// Proves a CPU that does not exist is an error, not a silently unpinned loop.
TEST_CASE("engine: pinning to a CPU that does not exist fails start") {
  EngineOptions options;
  options.cpus = {4095};
  auto started = Engine::start(options);
  REQUIRE(!started.ok());
  CHECK(started.error() == IoError::address_invalid);
}
