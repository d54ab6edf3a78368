// worker_w3: W3 of shared/WORKLOADS.md (one bulk stream, the client writes 64 KiB messages
// back to back, the server counts and discards them) with the server's stream read in two
// ways, interleaved in one run (loop, worker, loop, worker, ...):
//   loop    the stream's observer counts on the server's loop (what ringmux-serve does);
//   worker  WorkerStream::serve hands the stream to a worker thread, which acquires each
//           delivery from the stream's slot ring, counts it and releases it (credit goes
//           back through the stream's task), and answers the count with a blocking write.
// Payload GiB/s as received by the server in the measured window; at the end the client
// ends the stream and the server answers its count, which must equal what was written.
// Also per mode: the CPU of the server loop, the worker and the client loop, the share of
// the window the server loop and the worker waited for a CPU while runnable (schedstat),
// and per delivery the worker's futex sleeps, the loop's futex wakes, the stream's tasks
// and the loop's eventfd wake-ups, and the server loop's iterations per second.
//
//   build/perf/worker_w3 [--runs=5] [--seconds=3] [--warmup_ms=500] [--bs=65536]
//       [--client_cpu=0] [--server_cpu=1] [--worker_cpu=-1] [--spin_ns=0]
//       [--slots=64] [--touch] [--window=BYTES] [--credit_ahead=2097152] [--loop_spin_ns=20000]
//       [--modes=loop,worker]
//
// The client's loop is pinned to CPU 0 and the server's to CPU 1 (WORKLOADS.md); the
// worker thread is not pinned unless --worker_cpu says so (on a 2-core machine it shares a
// core with one loop whatever it does). --touch makes both readers hash every byte (XXH3)
// instead of only counting. Not a test: perf/RESULTS.md records what it printed.
#include <pthread.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "perf/two_loops_workloads.h"
#include "ringmux/mux/workers/worker_stream.h"

using namespace ringmux;
using namespace ringmux::mux;
using engine::Loop;
using perf::on_loop;

namespace {

constexpr uint32_t handler_loop_sink = 1;
constexpr uint32_t handler_worker_sink = 2;
// How long the end of a run (the client's END, the server's answer) may take.
constexpr uint64_t finish_timeout_ns = 30'000'000'000;

struct Options : perf::CommonFlags {
  Options() { runs = 5; }
  uint32_t bs = 64 * 1024;
  int worker_cpu = -1;
  WorkerStreamOptions worker;
  bool touch = false;
  uint32_t window_bytes = 0;  // 0: the default (grows from the initial window)
  std::vector<std::string> modes = {"loop", "worker"};
};

Options parse(int argc, char** argv) {
  Options options;
  const std::string usage =
      "usage: worker_w3 [--runs=5] [--seconds=3] [--warmup_ms=500] [--bs=65536] [--client_cpu=0]\n"
      "  [--server_cpu=1] [--worker_cpu=-1] [--spin_ns=" + std::to_string(limits::worker_spin_ns_default) +
      "] [--slots=" + std::to_string(limits::worker_stream_slots_default) + "] [--touch] [--window=BYTES]\n"
      "  [--credit_ahead=" + std::to_string(limits::worker_stream_credit_ahead_bytes_default) + "]\n"
      "  [--loop_spin_ns=" + std::to_string(limits::loop_spin_ns_default) + "] [--modes=loop,worker]\n";
  perf::parse_flags(
      argc, argv,
      [&](const std::string& name, const char* value) {
        if (options.take(name, value)) return true;
        if (name == "--bs") options.bs = static_cast<uint32_t>(std::strtoul(value, nullptr, 10));
        else if (name == "--worker_cpu") options.worker_cpu = std::atoi(value);
        else if (name == "--spin_ns") options.worker.spin_ns = std::strtoull(value, nullptr, 10);
        else if (name == "--credit_ahead") options.worker.credit_ahead_bytes = std::strtoull(value, nullptr, 10);
        else if (name == "--slots") options.worker.slots = static_cast<uint32_t>(std::strtoul(value, nullptr, 10));
        else if (name == "--touch") options.touch = true;
        else if (name == "--window") options.window_bytes = static_cast<uint32_t>(std::strtoul(value, nullptr, 10));
        else if (name == "--modes") {
          options.modes.clear();
          const std::string list = value;
          for (std::size_t at = 0; at <= list.size();) {
            const std::size_t comma = std::min(list.find(',', at), list.size());
            options.modes.push_back(list.substr(at, comma - at));
            at = comma + 1;
          }
        } else {
          return false;
        }
        return true;
      },
      usage);
  return options;
}

// Nanoseconds thread `tid` has waited on a run queue (runnable, not running), from
// /proc/self/task/TID/schedstat; 0 where the kernel does not keep it.
uint64_t runq_wait_ns_of(pid_t tid) {
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/self/task/%d/schedstat", static_cast<int>(tid));
  FILE* file = std::fopen(path, "r");
  if (file == nullptr) return 0;
  unsigned long long run_ns = 0, wait_ns = 0;
  const int got = std::fscanf(file, "%llu %llu", &run_ns, &wait_ns);
  std::fclose(file);
  return got == 2 ? wait_ns : 0;
}

uint64_t cpu_ns_of(pthread_t thread) {
  clockid_t clock{};
  if (pthread_getcpuclockid(thread, &clock) != 0) return 0;
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

// What the readers count, sampled by the main thread.
struct Counters {
  std::atomic<uint64_t> bytes{0};
  std::atomic<uint64_t> hash{0};  // --touch: keeps the hashing from being optimised away
};

// Counts (and with --touch hashes) what it reads.
void take(Counters& counters, std::span<const std::byte> bytes, bool touch) {
  if (touch) counters.hash.fetch_xor(XXH3_64bits(bytes.data(), bytes.size()), std::memory_order_relaxed);
  counters.bytes.fetch_add(bytes.size(), std::memory_order_relaxed);
}

ConnectionOptions connection_options(const Options& options) {
  ConnectionOptions connection;
  if (options.window_bytes != 0) {
    connection.session.stream_window_bytes = options.window_bytes;
    connection.session.stream_window_bytes_max = options.window_bytes;
  }
  return connection;
}

// The server's side, on its loop: the handlers of both modes.
struct ServerSide final : perf::ServerSide {
  ServerSide(Loop& loop_ref, const Options& options)
      : perf::ServerSide(loop_ref, connection_options(options)), options_(options) {
    registry.add_stream(handler_loop_sink, [this](const StreamStart& start) -> StreamObserver* {
      return new perf::CountingSink(start, [this](std::span<const std::byte> bytes) { take(counters, bytes, options_.touch); });
    });
    registry.add_stream(handler_worker_sink, [this](const StreamStart& start) -> StreamObserver* {
      WorkerStream::Served served = WorkerStream::serve(start, options_.worker);
      served_->set_value(std::move(served.stream));
      return served.observer;
    });
  }

  Options options_;
  Counters counters;
  std::promise<std::shared_ptr<WorkerStream>>* served_ = nullptr;  // set before each worker run
};

struct Sample {
  uint64_t at_ns;
  uint64_t bytes;
  uint64_t server_cpu_ns;
  uint64_t client_cpu_ns;
  uint64_t worker_cpu_ns;
  uint64_t worker_wait_ns;  // waiting for a CPU while runnable
  uint64_t server_wait_ns;
  engine::LoopStats server_stats;
  WorkerStreamStats stream;
};

struct Run {
  std::string mode;
  double gib_per_s = 0;
  double server_cpu = 0;  // share of one core over the window
  double client_cpu = 0;
  double worker_cpu = 0;
  double worker_wait = 0;  // share of the window the worker was runnable but not running
  double server_wait = 0;
  double deliveries_per_s = 0;
  double reader_sleeps = 0;  // per delivery
  double reader_wakes = 0;
  double tasks = 0;
  double eventfd_wakeups = 0;
  double iterations_per_s = 0;  // the server loop's
  bool ok = false;
};

Run measure(engine::Engine& engine, ServerSide& server, perf::ClientSide& client, const Options& options, const std::string& mode,
            std::span<const std::byte> message, pthread_t server_thread, pid_t server_tid, pthread_t client_thread) {
  Run run;
  run.mode = mode;
  const bool worker = mode == "worker";
  std::promise<std::shared_ptr<WorkerStream>> served;
  std::shared_ptr<WorkerStream> stream;
  std::thread reader;
  std::atomic<bool> reader_failed{false};
  on_loop(engine, 1, [&] {
    server.counters.bytes.store(0);
    server.served_ = &served;
    return 0;
  });
  auto writer = on_loop(engine, 0, [&] {
    auto w = std::make_unique<perf::BulkWriter>(*client.connection, message);
    if (!w->open(worker ? handler_worker_sink : handler_loop_sink)) perf::die("worker_w3", "open failed");
    return w;
  });
  pthread_t worker_thread{};
  pid_t worker_tid = 0;
  if (worker) {
    stream = served.get_future().get();
    std::promise<std::pair<pthread_t, pid_t>> started;
    reader = std::thread([&] {
      if (options.worker_cpu >= 0 && !engine::pin_current_thread(options.worker_cpu)) reader_failed.store(true);
      started.set_value({pthread_self(), gettid()});
      uint64_t count = 0;
      for (;;) {
        const WorkerStream::Message* delivery = stream->acquire(Loop::clock_ns() + finish_timeout_ns);
        if (delivery == nullptr) {
          reader_failed.store(true);
          return;
        }
        take(server.counters, delivery->bytes, options.touch);
        count += delivery->bytes.size();
        const bool end = delivery->end_stream;
        const bool finished = delivery->finished;
        stream->release();
        if (finished) return;
        if (end) {
          std::byte answer[sizeof(count)];
          std::memcpy(answer, &count, sizeof(count));
          if (!stream->write(answer, true, Loop::clock_ns() + finish_timeout_ns)) reader_failed.store(true);
        }
      }
    });
    std::tie(worker_thread, worker_tid) = started.get_future().get();
  }
  auto sample = [&] {
    Sample s{};
    s.server_stats = on_loop(engine, 1, [&] { return server.loop.stats(); });
    s.at_ns = Loop::clock_ns();
    s.bytes = server.counters.bytes.load();
    s.server_cpu_ns = cpu_ns_of(server_thread);
    s.client_cpu_ns = cpu_ns_of(client_thread);
    s.worker_cpu_ns = worker ? cpu_ns_of(worker_thread) : 0;
    s.worker_wait_ns = worker ? runq_wait_ns_of(worker_tid) : 0;
    s.server_wait_ns = runq_wait_ns_of(server_tid);
    if (stream) s.stream = stream->stats();
    return s;
  };
  std::this_thread::sleep_for(std::chrono::milliseconds(options.warmup_ms));
  const Sample start = sample();
  std::this_thread::sleep_for(std::chrono::nanoseconds(static_cast<uint64_t>(options.seconds * 1e9)));
  const Sample end = sample();
  on_loop(engine, 0, [&] {
    writer->stop();
    return 0;
  });
  const uint64_t give_up_ns = Loop::clock_ns() + finish_timeout_ns;
  while (!writer->finished.load(std::memory_order_acquire) && Loop::clock_ns() < give_up_ns) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (reader.joinable()) reader.join();
  const bool finished = writer->finished.load(std::memory_order_acquire);
  const auto [written, answer, result] =
      on_loop(engine, 0, [&] { return std::tuple(writer->written, writer->answer, writer->result); });
  on_loop(engine, 0, [&] {
    if (writer->finished.load()) writer.reset();
    return 0;
  });
  if (!finished || writer) {
    std::fprintf(stderr, "%s: the stream did not finish\n", mode.c_str());
    std::exit(1);
  }
  run.ok = result == MuxError::none && answer == written && !reader_failed.load();
  if (!run.ok) {
    std::fprintf(stderr, "%s: result %d, written %llu, server counted %llu, reader failed %d\n", mode.c_str(),
                 static_cast<int>(result), static_cast<unsigned long long>(written),
                 static_cast<unsigned long long>(answer), static_cast<int>(reader_failed.load()));
  }
  const double window_s = static_cast<double>(end.at_ns - start.at_ns) / 1e9;
  run.gib_per_s = static_cast<double>(end.bytes - start.bytes) / window_s / (1024.0 * 1024 * 1024);
  run.server_cpu = static_cast<double>(end.server_cpu_ns - start.server_cpu_ns) / 1e9 / window_s;
  run.client_cpu = static_cast<double>(end.client_cpu_ns - start.client_cpu_ns) / 1e9 / window_s;
  run.worker_cpu = static_cast<double>(end.worker_cpu_ns - start.worker_cpu_ns) / 1e9 / window_s;
  run.worker_wait = static_cast<double>(end.worker_wait_ns - start.worker_wait_ns) / 1e9 / window_s;
  run.server_wait = static_cast<double>(end.server_wait_ns - start.server_wait_ns) / 1e9 / window_s;
  const double eventfd = static_cast<double>(end.server_stats.wakeups - start.server_stats.wakeups);
  run.iterations_per_s = static_cast<double>(end.server_stats.iterations - start.server_stats.iterations) / window_s;
  if (worker) {
    const double deliveries = static_cast<double>(end.stream.deliveries - start.stream.deliveries);
    run.deliveries_per_s = deliveries / window_s;
    if (deliveries > 0) {
      run.reader_sleeps = static_cast<double>(end.stream.reader_sleeps - start.stream.reader_sleeps) / deliveries;
      run.reader_wakes = static_cast<double>(end.stream.reader_wakes - start.stream.reader_wakes) / deliveries;
      run.tasks = static_cast<double>(end.stream.tasks_run - start.stream.tasks_run) / deliveries;
      run.eventfd_wakeups = eventfd / deliveries;
    }
  }
  return run;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  auto engine = perf::start_two_loops("worker_w3", options.client_cpu, options.server_cpu, options.loop_spin_ns);
  auto [server, client] = perf::connect_pair(
      "worker_w3", *engine, [&](Loop& loop) { return std::make_unique<ServerSide>(loop, options); },
      [&](Loop& loop) { return std::make_unique<perf::ClientSide>(loop, connection_options(options)); });
  const pthread_t server_thread = on_loop(*engine, 1, [] { return pthread_self(); });
  const pid_t server_tid = on_loop(*engine, 1, [] { return gettid(); });
  const pthread_t client_thread = on_loop(*engine, 0, [] { return pthread_self(); });
  std::vector<std::byte> message(options.bs, std::byte{0x6b});

  std::printf("W3 read on the server's loop and by a worker thread (%s): bs=%u, %d runs of %.1f s (+%llu ms warm-up), "
              "client CPU %d, server CPU %d, worker CPU %d, spin_ns=%llu, loop_spin_ns=%llu, slots=%u%s\n",
              "interleaved", options.bs, options.runs, options.seconds,
              static_cast<unsigned long long>(options.warmup_ms), options.client_cpu, options.server_cpu,
              options.worker_cpu, static_cast<unsigned long long>(options.worker.spin_ns),
              static_cast<unsigned long long>(options.loop_spin_ns), options.worker.slots,
              options.touch ? ", readers hash every byte" : "");
  std::printf("%-7s %4s %6s %10s %10s %10s %11s %11s %12s %12s %11s %11s %13s %11s\n", "mode", "run", "GiB/s",
              "server CPU", "worker CPU", "client CPU", "server runq", "worker runq", "deliveries/s", "sleeps/deliv",
              "wakes/deliv", "tasks/deliv", "eventfd/deliv", "loop iter/s");
  std::vector<Run> runs;
  bool all_ok = true;
  for (int r = 1; r <= options.runs; r++) {
    for (const std::string& mode : options.modes) {
      Run run = measure(*engine, *server, *client, options, mode, message, server_thread, server_tid, client_thread);
      all_ok = all_ok && run.ok;
      std::printf("%-7s %4d %6.2f %9.0f%% %9.0f%% %9.0f%% %10.0f%% %10.0f%% %12.0f %12.3f %11.3f %11.3f %13.3f %11.0f%s\n",
                  mode.c_str(), r, run.gib_per_s, run.server_cpu * 100, run.worker_cpu * 100, run.client_cpu * 100,
                  run.server_wait * 100, run.worker_wait * 100, run.deliveries_per_s, run.reader_sleeps,
                  run.reader_wakes, run.tasks, run.eventfd_wakeups, run.iterations_per_s, run.ok ? "" : "  COUNT MISMATCH");
      std::fflush(stdout);
      runs.push_back(std::move(run));
    }
  }
  std::printf("\nmedians:\n");
  double loop_median = 0;
  for (const std::string& mode : options.modes) {
    std::vector<double> rates, server_cpu, worker_cpu, client_cpu;
    for (const Run& run : runs) {
      if (run.mode != mode) continue;
      rates.push_back(run.gib_per_s);
      server_cpu.push_back(run.server_cpu);
      worker_cpu.push_back(run.worker_cpu);
      client_cpu.push_back(run.client_cpu);
    }
    const double rate = perf::median(rates);
    if (mode == "loop") loop_median = rate;
    std::printf("%-7s %.2f GiB/s, server loop CPU %.0f%%, worker CPU %.0f%%, client loop CPU %.0f%%", mode.c_str(),
                rate, perf::median(server_cpu) * 100, perf::median(worker_cpu) * 100, perf::median(client_cpu) * 100);
    if (mode != "loop" && loop_median > 0) std::printf(", %.2fx of loop", rate / loop_median);
    std::printf("\n");
  }

  perf::shut_down(*engine, server, client, [] {});
  return all_ok ? 0 : 1;
}
