// ringmux-loadgen: fio-style load for ringmux (see --help, tools/loadgen/job.h).
//   ringmux-loadgen --rw=unary --bs=64 --iodepth=64 --runtime=5
//   ringmux-loadgen --host=127.0.0.1 --port=7300 --rw=write --bs=64k --runtime=10 --output-format=json
// Without --host an embedded server runs in this process, pinned to CPU 1, on loopback.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "tools/fd_limit.h"
#include "tools/loadgen/job.h"
#include "tools/loadgen/plot.h"
#include "tools/loadgen/report.h"
#include "tools/loadgen/runner.h"
#include "tools/loadgen/server.h"
#include "tools/loadgen/status.h"
#include "tools/version.h"

using namespace ringmux::loadgen;

namespace {

// TCP connections the invocation holds at once: the ringmux jobs share one connection
// (plus one per job clone that asks for its own, and one per quorum peer); each tcp job
// clone uses one per stream (one for unary). The two engines' jobs run one after the other.
uint64_t connections_needed(const Invocation& invocation) {
  uint64_t ringmux = 0, tcp = 0;
  bool shared = false;
  std::vector<std::string> peers;
  for (const Job& job : invocation.jobs) {
    if (job.ioengine == IoEngine::tcp) {
      tcp += uint64_t{job.numjobs} * (job.rw == RwMode::unary ? 1 : job.streams);
    } else if (job.rw == RwMode::quorum) {
      for (const std::string& peer : job.peers) {
        if (std::find(peers.begin(), peers.end(), peer) == peers.end()) peers.push_back(peer);
      }
    } else if (job.own_connection) {
      ringmux += job.numjobs;
    } else {
      shared = true;
    }
  }
  ringmux += (shared ? 1 : 0) + peers.size();
  return std::max(ringmux, tcp);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (std::find(args.begin(), args.end(), "--version") != args.end()) {
    std::fputs(ringmux::tools::version_text("ringmux-loadgen").c_str(), stdout);
    return 0;
  }
  auto parsed = parse_command_line(args);
  if (!parsed.ok()) {
    std::fprintf(stderr, "ringmux-loadgen: %s\n", parsed.error.message.c_str());
    return 2;
  }
  Invocation& invocation = *parsed.value;
  if (invocation.help) {
    std::fputs(help_text().c_str(), stdout);
    return 0;
  }
  // Descriptors for every connection (twice with the embedded servers, whose ends are
  // in this process too), checked before anything starts.
  const ringmux::tools::FdLimit fds = ringmux::tools::raise_fd_limit();
  const std::string shortfall =
      ringmux::tools::fd_shortfall(connections_needed(invocation) * (invocation.host ? 1 : 2), fds);
  if (!shortfall.empty()) {
    std::fprintf(stderr, "ringmux-loadgen: this run's %s\n", shortfall.c_str());
    return 1;
  }
  // The plot's file is opened before the run: a path that cannot be written fails now.
  std::unique_ptr<PlotFile> plot_file;
  if (invocation.plot_path) {
    std::string error;
    plot_file = PlotFile::open(*invocation.plot_path, error);
    if (!plot_file) {
      std::fprintf(stderr, "ringmux-loadgen: --plot: %s\n", error.c_str());
      return 1;
    }
  }
  // The embedded servers: one per engine the jobs use.
  std::unique_ptr<LoadServer> ringmux_server, tcp_server;
  RunTarget ringmux_target{invocation.host.value_or("127.0.0.1"), invocation.port};
  RunTarget tcp_target = ringmux_target;
  if (!invocation.host) {
    std::string error;
    ServeOptions serve;
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
  // Jobs of each engine run against that engine's server.
  Invocation ringmux_jobs = invocation, tcp_jobs = invocation;
  ringmux_jobs.jobs.clear();
  tcp_jobs.jobs.clear();
  for (Job job : invocation.jobs) {
    if (job.cpus_allowed.empty() && !invocation.host) job.cpus_allowed = {0};
    (job.ioengine == IoEngine::ringmux ? ringmux_jobs : tcp_jobs).jobs.push_back(job);
  }
  // The status line's ETA: the engines' job sets run one after the other, the jobs of
  // one set side by side. A job bound only by size has no known length.
  auto planned_ns = [](const Invocation& set) {
    uint64_t longest = 0;
    for (const Job& job : set.jobs) {
      if (job.runtime_ns == 0) return UINT64_MAX;
      longest = std::max(longest, job.ramp_time_ns + job.runtime_ns);
    }
    return longest;
  };
  const uint64_t ringmux_ns = planned_ns(ringmux_jobs), tcp_ns = planned_ns(tcp_jobs);
  Progress progress;
  StatusLine status(stderr, progress, ringmux_ns == UINT64_MAX || tcp_ns == UINT64_MAX ? 0 : ringmux_ns + tcp_ns);
  std::vector<JobResult> results;
  if (!ringmux_jobs.jobs.empty()) {
    auto r = run_jobs(ringmux_jobs, ringmux_target, &progress);
    results.insert(results.end(), std::make_move_iterator(r.begin()), std::make_move_iterator(r.end()));
  }
  if (!tcp_jobs.jobs.empty()) {
    auto r = run_jobs(tcp_jobs, tcp_target, &progress);
    results.insert(results.end(), std::make_move_iterator(r.begin()), std::make_move_iterator(r.end()));
  }
  // group_reporting: the clones of a job (name.0, name.1, ...) become one report.
  for (const Job& job : invocation.jobs) {
    if (!job.group_reporting || job.numjobs < 2) continue;
    std::vector<JobResult> merged;
    JobResult* group = nullptr;
    for (JobResult& r : results) {
      if (r.name.rfind(job.name + ".", 0) != 0) {
        merged.push_back(std::move(r));
        continue;
      }
      if (group == nullptr) {
        merged.push_back(std::move(r));
        group = &merged.back();
        group->name = job.name;
        continue;
      }
      group->ops += r.ops;
      group->bytes_written += r.bytes_written;
      group->bytes_read += r.bytes_read;
      group->errors += r.errors;
      group->server_confirmed_bytes += r.server_confirmed_bytes;
      group->client_sent_bytes += r.client_sent_bytes;
      group->verified_messages += r.verified_messages;
      group->verify_mismatches += r.verify_mismatches;
      group->verify_gaps += r.verify_gaps;
      group->verify_duplicates += r.verify_duplicates;
      group->rate_dropped += r.rate_dropped;
      group->latency.merge(r.latency);
      if (job.own_connection) {  // else the clones share one connection and its counts
        group->resumes += r.resumes;
        group->bytes_replayed += r.bytes_replayed;
        group->resume_latency.merge(r.resume_latency);
      }
      group->stream_bytes.insert(group->stream_bytes.end(), r.stream_bytes.begin(), r.stream_bytes.end());
      if (group->error_message.empty()) group->error_message = r.error_message;
    }
    results = std::move(merged);
  }
  status.stop();
  if (ringmux_server) ringmux_server->stop();
  if (tcp_server) tcp_server->stop();
  std::string report;
  switch (invocation.output_format) {
    case OutputFormat::normal: report = report_normal(results, invocation); break;
    case OutputFormat::json: report = report_json(results, invocation); break;
    case OutputFormat::terse: report = report_terse(results, invocation); break;
  }
  std::fputs(report.c_str(), stdout);
  if (plot_file) {
    const std::string error = plot_file->write(plot_latency_svg(results, "ringmux-loadgen: latency by percentile"));
    if (!error.empty()) {
      std::fprintf(stderr, "ringmux-loadgen: --plot: %s\n", error.c_str());
      return 1;
    }
  }
  uint64_t errors = 0;
  for (const auto& r : results) errors += r.errors;
  return errors == 0 ? 0 : 1;
}
