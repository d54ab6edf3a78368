// blocking_w8: W8 of shared/WORKLOADS.md: W1 (unary ping-pong, 1 call in flight, 64 B each
// way) and W2 (64 calls in flight on one connection, 64 B each way) with the server's
// handler run in two ways, interleaved in one run (inline, pool, inline, pool, ...):
//   inline  a plain unary handler that replies on the server's loop (Registry::add_unary);
//   pool    the same handler as a blocking handler (mux/workers/blocking.h) on a WorkerPool
//           of --threads workers: the loop copies the request to a worker, the worker
//           replies, the reply goes back to the loop as a posted task.
// Latency = issue to full response on the client's loop (monotonic clock), every call of
// the measured window, nearest-rank percentiles; calls/s = completed calls / window.
//
//   build/perf/blocking_w8 [--runs=3] [--seconds=3] [--warmup_ms=500] [--threads=4]
//       [--client_cpu=0] [--server_cpu=1] [--loop_spin_ns=20000] [--w2_in_flight=64]
//       [--pool_spin_ns=N] [--pool_wake_worth_ns=20000] [--pool_wake_per_turn=1] [--pool_cpus=LIST]
//       [--workloads=W1,W2]
// (--pool_wake_worth_ns=0 --pool_wake_per_turn=0: the pool's wake rule before both existed.)
//
// The client's loop is pinned to CPU 0 and the server's to CPU 1 (WORKLOADS.md); the pool's
// workers are not pinned unless --pool_cpus says where (e.g. --pool_cpus=1: the server
// loop's CPU, WorkerPoolOptions::cpus). Not a test: perf/RESULTS.md records what it printed.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "perf/two_loops_workloads.h"
#include "ringmux/mux/workers/blocking.h"

using namespace ringmux;
using namespace ringmux::mux;
using engine::Loop;

namespace {

constexpr uint32_t handler_inline = 1;
constexpr uint32_t handler_pool = 2;

struct Options : perf::CommonFlags {
  uint32_t threads = limits::worker_pool_threads_default;
  uint32_t w2_in_flight = 64;
  uint64_t pool_spin_ns = limits::worker_pool_spin_ns_default;
  uint64_t pool_wake_worth_ns = limits::worker_pool_wake_worth_ns_default;
  bool pool_wake_per_turn = true;
  std::vector<int> pool_cpus;  // --pool_cpus=1,3; empty: not pinned
  bool w1 = true, w2 = true;  // --workloads=W1,W2 (one of them alone: to profile it)
};

Options parse(int argc, char** argv) {
  Options options;
  const std::string usage = "usage: blocking_w8 [--runs=3] [--seconds=3] [--warmup_ms=500] [--threads=" +
                            std::to_string(limits::worker_pool_threads_default) +
                            "] [--client_cpu=0]\n  [--server_cpu=1] [--loop_spin_ns=" +
                            std::to_string(limits::loop_spin_ns_default) + "] [--w2_in_flight=64]\n  [--pool_spin_ns=" +
                            std::to_string(limits::worker_pool_spin_ns_default) + "] [--pool_wake_worth_ns=" +
                            std::to_string(limits::worker_pool_wake_worth_ns_default) + "]\n  [--pool_wake_per_turn=1] [--pool_cpus=LIST] [--workloads=W1,W2]\n";
  perf::parse_flags(
      argc, argv,
      [&](const std::string& name, const char* value) {
        if (options.take(name, value)) return true;
        if (name == "--threads") options.threads = static_cast<uint32_t>(std::strtoul(value, nullptr, 10));
        else if (name == "--pool_spin_ns") options.pool_spin_ns = std::strtoull(value, nullptr, 10);
        else if (name == "--pool_wake_worth_ns") options.pool_wake_worth_ns = std::strtoull(value, nullptr, 10);
        else if (name == "--pool_wake_per_turn") options.pool_wake_per_turn = std::atoi(value) != 0;
        else if (name == "--pool_cpus") {
          options.pool_cpus.clear();
          for (const char* at = value; *at != '\0';) {
            char* end = nullptr;
            const long cpu = std::strtol(at, &end, 10);
            if (end == at || cpu < 0 || (*end != ',' && *end != '\0')) return false;
            options.pool_cpus.push_back(static_cast<int>(cpu));
            at = *end == ',' ? end + 1 : end;
          }
          if (options.pool_cpus.empty()) return false;
        }
        else if (name == "--workloads") {
          const std::string list = value;
          options.w1 = list.find("W1") != std::string::npos;
          options.w2 = list.find("W2") != std::string::npos;
          if (!options.w1 && !options.w2) return false;
        } else if (name == "--w2_in_flight") options.w2_in_flight = static_cast<uint32_t>(std::strtoul(value, nullptr, 10));
        else return false;
        return true;
      },
      usage);
  return options;
}

constexpr const char* program = "blocking_w8";

// The server: both handlers, the same reply, on the loop and on the pool.
struct ServerSide final : perf::ServerSide {
  ServerSide(Loop& loop_ref, WorkerPool& pool) : perf::ServerSide(loop_ref, {}) {
    registry.add_unary(handler_inline, [](std::span<const std::byte> request, std::shared_ptr<Responder> responder) {
      responder->reply(request);
    });
    add_blocking_unary(registry, handler_pool, pool, [](BlockingCall& call) { call.reply(call.request()); });
  }
};

struct Run {
  std::string workload;
  std::string mode;
  double calls_per_s = 0;
  double p50_us = 0, p99_us = 0, p999_us = 0;
  uint64_t errors = 0;
};

Run measure(engine::Engine& engine, perf::CallingClient& client, const Options& options, const std::string& workload,
            const std::string& mode) {
  const uint32_t in_flight = workload == "W1" ? 1 : options.w2_in_flight;
  const uint32_t handler = mode == "inline" ? handler_inline : handler_pool;
  const perf::CallFigures figures = perf::measure_calls(program, engine, client, handler, in_flight, options);
  Run run;
  run.workload = workload;
  run.mode = mode;
  run.calls_per_s = figures.calls_per_s;
  run.p50_us = figures.p50_us;
  run.p99_us = figures.p99_us;
  run.p999_us = figures.p999_us;
  run.errors = figures.errors;
  return run;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  auto engine = perf::start_two_loops(program, options.client_cpu, options.server_cpu, options.loop_spin_ns);
  auto started = WorkerPool::start({.threads = options.threads,
                                    .spin_ns = options.pool_spin_ns,
                                    .wake_worth_ns = options.pool_wake_worth_ns,
                                    .wake_per_turn = options.pool_wake_per_turn,
                                    .cpus = options.pool_cpus});
  if (!started) {
    std::fprintf(stderr, "%s: the pool's workers cannot be pinned to --pool_cpus: %s\n", program,
                 engine::describe(started.error()));
    return 2;
  }
  std::unique_ptr<WorkerPool> pool = std::move(started).value();
  auto [server, client] = perf::connect_pair(
      program, *engine, [&](Loop& loop) { return std::make_unique<ServerSide>(loop, *pool); },
      [&](Loop& loop) { return std::make_unique<perf::CallingClient>(loop, ConnectionOptions{}); });

  std::string pool_cpus_text = options.pool_cpus.empty() ? "any" : "";
  for (const int cpu : options.pool_cpus) {
    if (!pool_cpus_text.empty()) pool_cpus_text += ',';
    pool_cpus_text += std::to_string(cpu);
  }
  std::printf("W8: W1 (1 in flight) and W2 (%u in flight), 64 B each way, handler inline on the server loop vs on a "
              "%u-thread worker pool; interleaved, %d runs of %.1f s (+%llu ms warm-up), client CPU %d, server CPU %d, "
              "loop_spin_ns=%llu, pool_spin_ns=%llu, pool_wake_worth_ns=%llu, pool_wake_per_turn=%d, pool CPUs %s\n",
              options.w2_in_flight, options.threads, options.runs, options.seconds,
              static_cast<unsigned long long>(options.warmup_ms), options.client_cpu, options.server_cpu,
              static_cast<unsigned long long>(options.loop_spin_ns),
              static_cast<unsigned long long>(options.pool_spin_ns),
              static_cast<unsigned long long>(options.pool_wake_worth_ns), options.pool_wake_per_turn ? 1 : 0,
              pool_cpus_text.c_str());
  std::printf("%-4s %-7s %4s %12s %9s %9s %9s %7s\n", "load", "mode", "run", "calls/s", "p50 us", "p99 us", "p99.9 us",
              "errors");
  std::vector<Run> runs;
  uint64_t errors = 0;
  for (int r = 1; r <= options.runs; r++) {
    for (const char* workload : {"W1", "W2"}) {
      if (!(workload[1] == '1' ? options.w1 : options.w2)) continue;
      for (const char* mode : {"inline", "pool"}) {
        Run run = measure(*engine, *client, options, workload, mode);
        errors += run.errors;
        std::printf("%-4s %-7s %4d %12.0f %9.1f %9.1f %9.1f %7llu\n", workload, mode, r, run.calls_per_s, run.p50_us,
                    run.p99_us, run.p999_us, static_cast<unsigned long long>(run.errors));
        std::fflush(stdout);
        runs.push_back(std::move(run));
      }
    }
  }
  std::printf("\nmedians:\n");
  for (const char* workload : {"W1", "W2"}) {
    if (!(workload[1] == '1' ? options.w1 : options.w2)) continue;
    double inline_rate = 0, inline_p50 = 0, inline_p99 = 0;
    for (const char* mode : {"inline", "pool"}) {
      std::vector<double> rates, p50s, p99s;
      for (const Run& run : runs) {
        if (run.workload != workload || run.mode != mode) continue;
        rates.push_back(run.calls_per_s);
        p50s.push_back(run.p50_us);
        p99s.push_back(run.p99_us);
      }
      const double rate = perf::median(rates), p50 = perf::median(p50s), p99 = perf::median(p99s);
      std::printf("%-4s %-7s %10.0f calls/s, p50 %.1f us, p99 %.1f us", workload, mode, rate, p50, p99);
      if (std::string(mode) == "inline") {
        inline_rate = rate;
        inline_p50 = p50;
        inline_p99 = p99;
      } else if (inline_rate > 0) {
        std::printf("  (%.2fx of inline calls/s, p50 %+.1f us, p99 %+.1f us)", rate / inline_rate, p50 - inline_p50,
                    p99 - inline_p99);
      }
      std::printf("\n");
    }
  }
  const WorkerPoolStats stats = pool->stats();
  std::printf("pool: %llu calls run, %llu refused, %llu worker sleeps, %llu worker wakes\n",
              static_cast<unsigned long long>(stats.run), static_cast<unsigned long long>(stats.refused),
              static_cast<unsigned long long>(stats.worker_sleeps), static_cast<unsigned long long>(stats.worker_wakes));

  perf::shut_down(*engine, server, client, [&] { pool.reset(); });  // the pool goes while the loops run
  return errors == 0 ? 0 : 1;
}
