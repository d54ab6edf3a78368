// ringmux-chaos: a TCP proxy that injects faults between a client and a server (see
// --help, tools/chaos/options.h for the command line, tools/chaos/proxy.h for the proxy).
//   ringmux-chaos --listen=127.0.0.1:7400 --upstream=127.0.0.1:7300 --reset-every=2s
//   ringmux-chaos --listen=127.0.0.1:7400 --upstream=127.0.0.1:7300 --direction=down
//       --latency=20ms --jitter=5ms --bandwidth=10m --duration=30s --stats=json  (one line)
// Prints the seed to stderr at start; runs until --duration passes or SIGINT/SIGTERM.
#include <signal.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

#include "tools/chaos/options.h"
#include "tools/chaos/proxy.h"

using namespace ringmux::chaos;

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
  while (true) {
    int signal_number = -1;
    if (line.duration_ns == 0) {
      signal_number = sigwaitinfo(&stop_signals, nullptr);
    } else {
      const auto left = deadline - std::chrono::steady_clock::now();
      if (left <= std::chrono::nanoseconds(0)) break;
      const auto left_ns = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(left).count());
      const timespec timeout{static_cast<time_t>(left_ns / 1'000'000'000), static_cast<long>(left_ns % 1'000'000'000)};
      signal_number = sigtimedwait(&stop_signals, nullptr, &timeout);
    }
    if (signal_number > 0) break;
    // EAGAIN: the timeout passed (checked at the top); EINTR: another signal.
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
