#include "tools/loadgen/run.h"

// GCC 12 at -O3 reports a false -Wrestrict inside std::string concatenation (GCC bug
// 105329), as in report.cpp.
#pragma GCC diagnostic ignored "-Wrestrict"

#include <pthread.h>
#include <sched.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "ringmux/engine/loop.h"
#include "tools/fd_limit.h"
#include "tools/loadgen/logs.h"
#include "tools/loadgen/plot.h"
#include "tools/loadgen/report.h"
#include "tools/loadgen/runner.h"
#include "tools/loadgen/server.h"
#include "tools/loadgen/status.h"
#include "tools/tls_stage.h"

namespace ringmux::loadgen {

namespace {

// TCP connections a set of clones of one engine holds at once: the ringmux clones share
// one connection (plus one per clone that asks for its own, and one per quorum peer); each
// tcp clone uses one per stream (one for unary).
uint64_t connections_needed(const std::vector<const Job*>& jobs) {
  uint64_t ringmux = 0, tcp = 0;
  bool shared = false;
  std::vector<std::string> peers;
  for (const Job* job : jobs) {
    if (job->ioengine == IoEngine::tcp) {
      tcp += job->rw == RwMode::unary ? 1 : job->streams;
    } else if (job->rw == RwMode::quorum) {
      for (const std::string& peer : job->peers) {
        if (std::find(peers.begin(), peers.end(), peer) == peers.end()) peers.push_back(peer);
      }
    } else if (job->own_connection) {
      ringmux++;
    } else {
      shared = true;
    }
  }
  return std::max(ringmux + (shared ? 1 : 0) + peers.size(), tcp);
}

// "0,2-3" for {0, 2, 3}.
std::string cpu_list_text(const std::vector<int>& cpus) {
  std::string out;
  for (std::size_t i = 0; i < cpus.size();) {
    std::size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) j++;
    out += (out.empty() ? "" : ",") + std::to_string(cpus[i]) + (j > i ? "-" + std::to_string(cpus[j]) : "");
    i = j + 1;
  }
  return out;
}

// A CPU of a job's cpus_allowed that this process may not run on (not online, or outside
// its affinity mask), as an error naming the job, the CPU and the CPUs there are; "" when
// every one is allowed.
std::string cpus_refused(const Invocation& invocation) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) return "";  // nothing to compare with
  std::vector<int> usable;
  for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
    if (CPU_ISSET(cpu, &allowed)) usable.push_back(cpu);
  }
  for (const Job& job : invocation.jobs) {
    for (const int cpu : job.cpus_allowed) {
      if (cpu < CPU_SETSIZE && CPU_ISSET(cpu, &allowed)) continue;
      return "job '" + job.name + "': cpus_allowed=" + cpu_list_text(job.cpus_allowed) + ": CPU " + std::to_string(cpu) +
             " is not online or not allowed for this process (it may run on " + cpu_list_text(usable) + ")";
    }
  }
  return "";
}

// SIGINT and SIGTERM, taken on a thread of their own: blocked in the thread that builds
// this (and so in every thread it starts afterwards), awaited with sigtimedwait. The first
// asks the run to stop (the jobs end and the report shows what ran); a second ends the
// process at once, as the signal would have.
class SignalWatch {
 public:
  explicit SignalWatch(RunControl& control) : control_(control) {
    sigemptyset(&signals_);
    sigaddset(&signals_, SIGINT);
    sigaddset(&signals_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals_, nullptr);
    thread_ = std::thread([this] { watch(); });
  }
  ~SignalWatch() {
    done_.store(true, std::memory_order_relaxed);
    thread_.join();
  }
  SignalWatch(const SignalWatch&) = delete;
  SignalWatch& operator=(const SignalWatch&) = delete;

 private:
  // How long one wait lasts before the thread looks whether the run is over.
  static constexpr long wait_slice_ns = 50'000'000;

  void watch() {
    bool stopping = false;
    while (!done_.load(std::memory_order_relaxed)) {
      const timespec slice{0, wait_slice_ns};
      const int signal = sigtimedwait(&signals_, nullptr, &slice);
      if (signal < 0) continue;  // the slice ended (EAGAIN) or EINTR
      if (!stopping) {
        stopping = true;
        control_.request_stop(engine::Loop::clock_ns());
        std::fprintf(stderr, "ringmux-loadgen: %s: ending the jobs, reporting what ran (again to quit at once)\n",
                     strsignal(signal));
        continue;
      }
      ::signal(signal, SIG_DFL);
      pthread_sigmask(SIG_UNBLOCK, &signals_, nullptr);
      raise(signal);
    }
  }

  RunControl& control_;
  sigset_t signals_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

// Where the reports go: stdout, or the --output file. Status reports and the final one
// come from two threads: a mutex keeps each whole.
class Output {
 public:
  // nullptr and `error` set when the file cannot be created.
  static std::unique_ptr<Output> open(const std::optional<std::string>& path, std::string& error) {
    if (!path) return std::unique_ptr<Output>(new Output(stdout, ""));
    std::FILE* file = std::fopen(path->c_str(), "w");
    if (file == nullptr) {
      error = "--output: cannot write '" + *path + "': " + std::strerror(errno);
      return nullptr;
    }
    return std::unique_ptr<Output>(new Output(file, *path));
  }
  ~Output() {
    if (file_ != stdout) std::fclose(file_);
  }
  // "" or what failed.
  std::string write(const std::string& text) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (std::fwrite(text.data(), 1, text.size(), file_) != text.size() || std::fflush(file_) != 0) {
      return "writing the report to " + (path_.empty() ? std::string("stdout") : "'" + path_ + "'") + " failed: " +
             std::strerror(errno);
    }
    return "";
  }

 private:
  Output(std::FILE* file, std::string path) : file_(file), path_(std::move(path)) {}
  std::mutex mutex_;
  std::FILE* file_;
  std::string path_;
};

// group_reporting, fio's rule: a job clone with group_reporting joins the report of the
// clone before it when both are in the same group (stonewall starts one), so a group whose
// jobs all have it reports once, under its first job's name and options; a clone without
// it reports on its own. (fio walks its threads the same way: a thread starts a new report
// unless it has group_reporting and the previous thread's groupid.)
std::vector<JobResult> grouped(std::vector<JobResult> results, const Invocation& invocation) {
  std::vector<JobResult> out;
  std::vector<int> shared_counted;  // the loops (by CPU) whose shared connection out.back() counts
  for (JobResult& r : results) {
    const Job& job = invocation.jobs[r.job_index];
    // The figures of a shared connection (one per client loop, runner.h) are in each of its
    // clones' results: a report adds them once per loop, and those of every connection of
    // its own.
    const bool joins = job.group_reporting && !out.empty() && out.back().group == r.group;
    if (!joins) shared_counted.clear();
    bool counts_connection = job.own_connection;
    if (!job.own_connection && std::find(shared_counted.begin(), shared_counted.end(), r.loop_cpu) == shared_counted.end()) {
      shared_counted.push_back(r.loop_cpu);
      counts_connection = true;
    }
    if (joins) {
      out.back().merge(r, counts_connection);
      continue;
    }
    out.push_back(std::move(r));
    if (job.group_reporting) out.back().name = job.name;  // not the clone's name.N
  }
  return out;
}

// One clone of a job, as planned before the run.
struct Planned {
  Job job;                    // its name ends in .N when the job has several clones
  JobResult result;
  std::unique_ptr<JobLogs> logs;
  uint32_t wave = 0;          // stonewalls before it: what it waits for
  uint32_t clone = 0;         // which clone of its job
  bool attempted = false;     // its wave was started
};

// The periodic reports of --status-interval: every interval, the latest copies of the
// results (LiveResults), merged as the final report would be, in the final report's
// formats, to the output.
class StatusReports {
 public:
  StatusReports(const Invocation& invocation, LiveResults& live, Output& output)
      : invocation_(invocation), live_(live), output_(output) {
    thread_ = std::thread([this] { run(); });
  }
  ~StatusReports() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  StatusReports(const StatusReports&) = delete;
  StatusReports& operator=(const StatusReports&) = delete;

 private:
  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    const auto interval = std::chrono::nanoseconds(invocation_.status_interval_ns);
    while (!wake_.wait_for(lock, interval, [this] { return stopping_; })) {
      lock.unlock();
      const std::vector<JobResult> results = grouped(live_.collect(), invocation_);
      if (!results.empty()) {
        const std::string error = output_.write(report_all(results, invocation_));
        if (!error.empty()) std::fprintf(stderr, "ringmux-loadgen: status report: %s\n", error.c_str());
      }
      lock.lock();
    }
  }

  const Invocation& invocation_;
  LiveResults& live_;
  Output& output_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace

int run_invocation(const Invocation& invocation) {
  if (const std::string refused = cpus_refused(invocation); !refused.empty()) {
    std::fprintf(stderr, "ringmux-loadgen: %s\n", refused.c_str());
    return 2;
  }
  RunControl control;
  SignalWatch signals(control);  // before any other thread starts
  // The clones, in the jobs' order, numbered over the invocation from 1 (fio's log names).
  const std::vector<uint32_t> groups = job_groups(invocation);
  std::vector<Planned> planned;
  uint32_t wave = 0;  // the jobs up to the next stonewall run together
  for (std::size_t j = 0; j < invocation.jobs.size(); j++) {
    const Job& job = invocation.jobs[j];
    if (j > 0 && job.stonewall) wave++;
    for (uint32_t i = 0; i < job.numjobs; i++) {
      Planned& p = planned.emplace_back();
      p.job = job;
      p.clone = i;
      if (job.numjobs > 1) p.job.name = job.name + "." + std::to_string(i);
      if (p.job.cpus_allowed.empty() && !invocation.host) p.job.cpus_allowed = {0};
      p.result.name = p.job.name;
      p.result.job_index = j;
      if (job.ioengine == IoEngine::ringmux) p.result.loop_cpu = clone_cpu(p.job, i);
      p.result.group = groups[j];
      p.wave = wave;
      p.result.rw = job.rw;
      p.result.engine = job.ioengine;
    }
  }
  // Files first, so that a path that cannot be written fails before the run.
  std::string error;
  const std::unique_ptr<Output> output = Output::open(invocation.output_path, error);
  if (!output) {
    std::fprintf(stderr, "ringmux-loadgen: %s\n", error.c_str());
    return 1;
  }
  std::unique_ptr<PlotFile> plot_file;
  if (invocation.plot_path) {
    plot_file = PlotFile::open(*invocation.plot_path, error);
    if (!plot_file) {
      std::fprintf(stderr, "ringmux-loadgen: --plot: %s\n", error.c_str());
      return 1;
    }
  }
  for (std::size_t c = 0; c < planned.size(); c++) {
    Planned& p = planned[c];
    p.logs = JobLogs::open(invocation.jobs[p.result.job_index], p.job.name, static_cast<uint32_t>(c + 1), error);
    if (!p.logs && !error.empty()) {
      std::fprintf(stderr, "ringmux-loadgen: job '%s': %s\n", p.job.name.c_str(), error.c_str());
      return 1;
    }
    if (p.logs) p.result.latency_log = p.logs->per_operation();
  }
  // The sets that run one after another: per stonewall wave, its ringmux clones, then its
  // tcp ones.
  std::vector<std::vector<std::size_t>> sets;
  for (std::size_t c = 0; c < planned.size(); c++) {
    const std::size_t set = 2 * planned[c].wave + (planned[c].job.ioengine == IoEngine::tcp ? 1 : 0);
    if (set >= sets.size()) sets.resize(set + 1);
    sets[set].push_back(c);
  }
  // Descriptors for the largest set's connections (twice with the embedded servers, whose
  // ends are in this process too), checked before anything starts.
  uint64_t connections = 0;
  for (const auto& set : sets) {
    std::vector<const Job*> jobs;
    for (const std::size_t c : set) jobs.push_back(&planned[c].job);
    connections = std::max(connections, connections_needed(jobs));
  }
  const tools::FdLimit fds = tools::raise_fd_limit();
  const std::string shortfall = tools::fd_shortfall(connections * (invocation.host ? 1 : 2), fds);
  if (!shortfall.empty()) {
    std::fprintf(stderr, "ringmux-loadgen: this run's %s\n", shortfall.c_str());
    return 1;
  }
  // The embedded servers: one per engine.
  std::unique_ptr<LoadServer> ringmux_server, tcp_server;
  RunTarget ringmux_target{invocation.host.value_or("127.0.0.1"), invocation.port, nullptr};
  RunTarget tcp_target = ringmux_target;
  if (tools::tls_enabled(invocation.tls)) {
    ringmux_target.handshake = tools::tls_stage(invocation.tls, error);
    if (!ringmux_target.handshake) {
      std::fprintf(stderr, "ringmux-loadgen: TLS: %s\n", error.c_str());
      return 1;
    }
    std::fprintf(stderr, "ringmux-loadgen: %s\n", tools::tls_path_text(false, invocation.tls).c_str());
  }
  if (!invocation.host) {
    ServeOptions serve;
    serve.handshake = ringmux_target.handshake;  // the same identity serves and dials
    serve.connection.session.streams_concurrent_max = streams_limit_for(ringmux_streams(invocation));
    ringmux_server = LoadServer::start_ringmux("127.0.0.1:0", {1}, error, serve);
    if (!ringmux_server) {
      std::fprintf(stderr, "ringmux-loadgen: embedded server: %s\n", error.c_str());
      return 1;
    }
    tcp_server = LoadServer::start_tcp("127.0.0.1:0", 1, error);
    if (!tcp_server) {
      std::fprintf(stderr, "ringmux-loadgen: embedded tcp server: %s\n", error.c_str());
      return 1;
    }
    ringmux_target.port = ringmux_server->port();
    tcp_target.port = tcp_server->port();
  }
  // The status line's ETA: the sets one after another, the clones of a set side by side.
  // A clone bound only by size has no known length.
  uint64_t planned_ns = 0;
  for (const auto& set : sets) {
    uint64_t longest = 0;
    for (const std::size_t c : set) {
      const Job& job = planned[c].job;
      longest = job.runtime_ns == 0 || planned_ns == UINT64_MAX ? UINT64_MAX : std::max(longest, job.ramp_time_ns + job.runtime_ns);
    }
    planned_ns = longest == UINT64_MAX ? UINT64_MAX : planned_ns + longest;
  }
  Progress progress;
  std::unique_ptr<LiveResults> live;
  std::unique_ptr<StatusReports> status_reports;
  if (invocation.status_interval_ns != 0) {
    live = std::make_unique<LiveResults>(planned.size());
    control.live = live.get();
    status_reports = std::make_unique<StatusReports>(invocation, *live, *output);
  }
  StatusLine status(stderr, progress, planned_ns == UINT64_MAX ? 0 : planned_ns);
  for (const auto& set : sets) {
    if (set.empty() || control.stopped()) continue;
    std::vector<CloneRun> clones;
    for (const std::size_t c : set) {
      planned[c].attempted = true;
      clones.push_back({&planned[c].job, &planned[c].result, c, planned[c].clone,
                        planned[c].logs ? planned[c].logs->log_window_ns() : 0});
    }
    const bool tcp_set = planned[set.front()].job.ioengine == IoEngine::tcp;
    const CpuUsage set_start = CpuUsage::now();
    run_clones(clones, tcp_set ? tcp_target : ringmux_target, &progress, control);
    CpuUsage spent = CpuUsage::now().since(set_start);
    spent.sets = tcp_set ? 2 : 1;
    for (const std::size_t c : set) planned[c].result.cpu = spent;
    if (live) {
      for (const std::size_t c : set) live->publish(c, 0, 1, planned[c].result, planned[c].result.window_until_ns);
    }
  }
  status_reports.reset();
  status.stop();
  if (ringmux_server) ringmux_server->stop();
  if (tcp_server) tcp_server->stop();
  int status_code = 0;
  std::vector<JobResult> results;
  for (Planned& p : planned) {
    if (p.logs) {
      if (const std::string failed = p.logs->finish(p.result); !failed.empty()) {
        std::fprintf(stderr, "ringmux-loadgen: job '%s': %s\n", p.job.name.c_str(), failed.c_str());
        status_code = 1;
      }
    }
    p.result.latency_log = nullptr;
    if (p.attempted) results.push_back(std::move(p.result));
  }
  results = grouped(std::move(results), invocation);
  if (const std::string failed = output->write(report_all(results, invocation)); !failed.empty()) {
    std::fprintf(stderr, "ringmux-loadgen: %s\n", failed.c_str());
    status_code = 1;
  }
  if (plot_file) {
    const std::string failed = plot_file->write(plot_latency_svg(results, "ringmux-loadgen: latency by percentile"));
    if (!failed.empty()) {
      std::fprintf(stderr, "ringmux-loadgen: --plot: %s\n", failed.c_str());
      status_code = 1;
    }
  }
  for (const JobResult& r : results) {
    if (r.errors != 0) status_code = 1;
  }
  return status_code;
}

}  // namespace ringmux::loadgen
