// ringmux-chaos: a TCP proxy that injects faults between a client and a server (see
// --help, tools/chaos/options.h for the command line, tools/chaos/proxy.h for the proxy).
//   ringmux-chaos --listen=127.0.0.1:7400 --upstream=127.0.0.1:7300 --reset-every=2s
//   ringmux-chaos --listen=127.0.0.1:7400 --upstream=127.0.0.1:7300 --direction=down
//       --latency=20ms --jitter=5ms --bandwidth=10m --duration=30s --stats=json  (one line)
// Prints the seed to stderr at start; runs until --duration passes or SIGINT/SIGTERM.
#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

#include "tools/chaos/options.h"
#include "tools/chaos/proxy.h"
#include "tools/errno_text.h"
#include "tools/version.h"

using namespace ringmux::chaos;

namespace {

// What stops the proxy serving is said on stderr at most this often, so that a client
// retrying against a dead upstream does not flood the terminal.
constexpr uint64_t error_report_interval_ns = 1'000'000'000;

// errno as text; for running out of descriptors, with the limits that were hit.
std::string cause_text(int error) {
  if (error == 0) return "cause not recorded";
  std::string text = ringmux::tools::errno_text(error);
  rlimit limit{};
  if (error == EMFILE && getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    text += "; descriptor limit " + std::to_string(limit.rlim_cur) + ", hard limit " + std::to_string(limit.rlim_max) +
            " (ulimit -n)";
  }
  return text;
}

// Says on stderr what stopped the proxy serving since it last spoke: upstream connections
// that failed (their clients were reset), accepts that failed (accepting then pauses), and
// reaching pairs_max (later clients wait in the backlog).
struct ErrorReport {
  uint64_t connect_failures = 0;
  uint64_t accept_failures = 0;
  bool at_pairs_max = false;

  void print_news(const ProxyStats& stats, const Endpoint& upstream) {
    if (stats.connect_failures != connect_failures) {
      std::fprintf(stderr, "ringmux-chaos: upstream %s:%u: %llu connections failed so far, their clients reset (the last: %s)\n",
                   upstream.host.c_str(), static_cast<unsigned>(upstream.port),
                   static_cast<unsigned long long>(stats.connect_failures), cause_text(stats.connect_errno_last).c_str());
      connect_failures = stats.connect_failures;
    }
    if (stats.accept_failures != accept_failures) {
      std::fprintf(stderr, "ringmux-chaos: accept failed %llu times so far, pausing accepts each time (the last: %s)\n",
                   static_cast<unsigned long long>(stats.accept_failures), cause_text(stats.accept_errno_last).c_str());
      accept_failures = stats.accept_failures;
    }
    const bool full = stats.connections_active >= pairs_max;
    if (full && !at_pairs_max) {
      std::fprintf(stderr,
                   "ringmux-chaos: %u pairs open, the most it holds (pairs_max, which bounds its buffers to 128 MiB): "
                   "later clients wait in the listen backlog\n",
                   pairs_max);
    }
    at_pairs_max = full;
  }
};

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = parse_command_line(args);
  if (!parsed.ok()) {
    std::fprintf(stderr, "ringmux-chaos: %s\n", parsed.error.c_str());
    return 2;
  }
  CommandLine& line = *parsed.value;
  if (line.help) {
    std::fputs(help_text().c_str(), stdout);
    return 0;
  }
  if (line.version) {
    std::fputs(ringmux::tools::version_text("ringmux-chaos").c_str(), stdout);
    return 0;
  }
  line.proxy.seed = line.seed.value_or(
      static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()));

  // SIGINT and SIGTERM are blocked in every thread (the proxy's thread inherits the mask)
  // and taken by sigtimedwait below, so that no handler runs in the middle of the loop.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  std::string error;
  auto proxy = Proxy::start(line.proxy, error);
  if (!proxy) {
    std::fprintf(stderr, "ringmux-chaos: %s\n", error.c_str());
    return 1;
  }
  std::fprintf(stderr, "ringmux-chaos: seed=%llu (replay with --seed=%llu); listening on %s:%u, upstream %s:%u\n",
               static_cast<unsigned long long>(line.proxy.seed), static_cast<unsigned long long>(line.proxy.seed),
               line.proxy.listen.host.c_str(), static_cast<unsigned>(proxy->port()), line.proxy.upstream.host.c_str(),
               static_cast<unsigned>(line.proxy.upstream.port));

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::nanoseconds(line.duration_ns);
  ErrorReport report;
  while (true) {
    // Woken at least every error_report_interval_ns to say what stops the proxy serving.
    uint64_t wait_ns = error_report_interval_ns;
    if (line.duration_ns != 0) {
      const auto left = deadline - std::chrono::steady_clock::now();
      if (left <= std::chrono::nanoseconds(0)) break;
      wait_ns = std::min(wait_ns, static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(left).count()));
    }
    const timespec timeout{static_cast<time_t>(wait_ns / 1'000'000'000), static_cast<long>(wait_ns % 1'000'000'000)};
    const int signal_number = sigtimedwait(&stop_signals, nullptr, &timeout);
    report.print_news(proxy->stats(), line.proxy.upstream);
    if (signal_number > 0) break;
    // EAGAIN: the wait timed out (the deadline is checked at the top); EINTR: another signal.
  }
  proxy->stop();
  switch (line.stats) {
    case StatsFormat::none:
      break;
    case StatsFormat::text:
      std::fputs(stats_text(proxy->stats()).c_str(), stdout);
      break;
    case StatsFormat::json:
      std::fputs(stats_json(proxy->stats()).c_str(), stdout);
      break;
  }
  return 0;
}
