// ringmux-serve: the server side of every ringmux-loadgen mode.
//   ringmux-serve --listen=127.0.0.1:7300 [--cpus=1] [--ioengine=ringmux|tcp] [--duration=30s]
//                 [--max_streams=N] [--keepalive=DURATION] [--peers=ADDRESS,... [--loops=N]]
// Stream and connection windows are not options: both ends assume the same initial
// windows until the handshake carries them (wire/SPEC.md HELLO has no field for them yet).
// Prints its statistics on SIGINT / SIGTERM and on exit.
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "tools/loadgen/job.h"
#include "tools/loadgen/protocol.h"
#include "tools/loadgen/server.h"

using namespace ringmux::loadgen;

namespace {

// More loops than this on one node would only contend for the cores.
constexpr uint32_t loops_max = 64;

volatile std::sig_atomic_t stop_signal = 0;
void on_signal(int signal) { stop_signal = signal; }

void print_help() {
  std::printf(
      "usage: ringmux-serve [options]\n"
      "Serves every ringmux-loadgen mode: unary echo, sink, source and echo streams.\n"
      "Prints its statistics on SIGINT, SIGTERM and at the end of --duration.\n\n"
      "  --listen=ADDRESS:PORT    where to listen                  (127.0.0.1:%u)\n"
      "  --cpus=LIST              cores for the server's loops, in  (none: not pinned)\n"
      "                           order (a plain server runs one)\n"
      "  --ioengine=NAME          ringmux | tcp                     (ringmux)\n"
      "  --duration=DURATION      exit after this long              (run until a signal)\n"
      "  --peers=ADDRESS:PORT,... join a cluster: one session with  (none: a plain server)\n"
      "                           each peer, the same handlers on\n"
      "                           all; clients such as loadgen\n"
      "                           --rw=quorum dial every member\n"
      "  --loops=N                with --peers: event loops sharing (1)\n"
      "                           the peer sessions (1 to %u)\n"
      "limits of each ringmux connection:\n"
      "  --max_streams=N          streams a client may have open;   (%u)\n"
      "                           more are refused (retryable)\n"
      "  --keepalive=DURATION     ping after this much silence;     (%llu ms)\n"
      "                           the peer is dead after 3x\n"
      "  -h, --help               this text\n",
      static_cast<unsigned>(default_port), loops_max, ringmux::limits::streams_concurrent_max,
      static_cast<unsigned long long>(ringmux::limits::keepalive_interval_ns_default / 1'000'000));
}

// Parses a positive size option into `out` (at most `max`); prints the error and returns false.
bool size_option(const std::string& key, const std::string& value, uint64_t max, uint32_t& out) {
  auto bytes = parse_size(value);
  if (!bytes || *bytes == 0 || *bytes > max) {
    std::fprintf(stderr, "ringmux-serve: option '%s': '%s' is not a size between 1 and %llu\n", key.c_str(),
                 value.c_str(), static_cast<unsigned long long>(max));
    return false;
  }
  out = static_cast<uint32_t>(*bytes);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:" + std::to_string(default_port);
  std::string engine = "ringmux";
  std::vector<int> cpus;
  uint32_t loops = 1;
  uint64_t duration_ns = 0;
  ringmux::mux::ConnectionOptions options;
  std::vector<std::string> peers;
  for (int i = 1; i < argc; i++) {
    const std::string arg = argv[i];
    const auto eq = arg.find('=');
    const std::string key = arg.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : arg.substr(eq + 1);
    if (arg == "-h" || arg == "--help") {
      print_help();
      return 0;
    } else if (key == "--listen" && !value.empty()) {
      listen = value;
    } else if (key == "--ioengine" && (value == "ringmux" || value == "tcp")) {
      engine = value;
    } else if (key == "--cpus") {
      auto cpus_parsed = parse_cpu_list(value);
      if (!cpus_parsed) {
        std::fprintf(stderr, "ringmux-serve: option '--cpus': '%s' is not a CPU list (e.g. 1 or 0,2-3)\n", value.c_str());
        return 2;
      }
      cpus = *cpus_parsed;
    } else if (key == "--duration") {
      auto ns = parse_duration_ns(value);
      if (!ns || *ns == 0) {
        std::fprintf(stderr, "ringmux-serve: option '--duration': '%s' is not a duration\n", value.c_str());
        return 2;
      }
      duration_ns = *ns;
    } else if (key == "--peers" && !value.empty()) {
      for (std::size_t start = 0; start <= value.size();) {
        const std::size_t comma = std::min(value.find(',', start), value.size());
        peers.push_back(value.substr(start, comma - start));
        start = comma + 1;
      }
    } else if (key == "--loops") {
      if (!size_option(key, value, loops_max, loops)) return 2;
    } else if (key == "--max_streams") {
      if (!size_option(key, value, ringmux::limits::streams_concurrent_max, options.session.streams_concurrent_max)) return 2;
    } else if (key == "--keepalive") {
      auto ns = parse_duration_ns(value);
      if (!ns || *ns < 1'000'000) {
        std::fprintf(stderr, "ringmux-serve: option '--keepalive': '%s' is not a duration of at least 1ms\n", value.c_str());
        return 2;
      }
      options.keepalive_interval_ns = *ns;
      options.dead_peer_timeout_ns = 3 * *ns;
    } else {
      std::fprintf(stderr, "ringmux-serve: bad argument '%s' (see --help)\n", arg.c_str());
      return 2;
    }
  }
  std::string error;
  if (!peers.empty() && engine != "ringmux") {
    std::fprintf(stderr, "ringmux-serve: --peers needs --ioengine=ringmux\n");
    return 2;
  }
  if (loops > 1 && peers.empty()) {
    std::fprintf(stderr, "ringmux-serve: --loops needs --peers (a plain server runs one loop)\n");
    return 2;
  }
  auto server = engine == "ringmux" ? LoadServer::start_ringmux(listen, cpus, error, options, peers, loops)
                                    : LoadServer::start_tcp(listen, cpus.empty() ? -1 : cpus.front(), error);
  if (!server) {
    std::fprintf(stderr, "ringmux-serve: %s\n", error.c_str());
    return 1;
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::printf("ringmux-serve: %s engine listening on port %u\n", engine.c_str(), static_cast<unsigned>(server->port()));
  std::fflush(stdout);
  const auto started = std::chrono::steady_clock::now();
  while (stop_signal == 0) {
    if (duration_ns != 0 && std::chrono::steady_clock::now() - started >= std::chrono::nanoseconds(duration_ns)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  server->stop();
  const ServerStats& stats = server->stats();
  std::printf("ringmux-serve: %s; connections=%llu sessions=%llu resumes=%llu calls=%llu bytes_received=%llu "
              "bytes_sent=%llu verify_errors=%llu\n",
              stop_signal != 0 ? strsignal(stop_signal) : "duration reached",
              static_cast<unsigned long long>(stats.connections.load()),
              static_cast<unsigned long long>(stats.sessions.load()), static_cast<unsigned long long>(stats.resumes.load()),
              static_cast<unsigned long long>(stats.calls.load()),
              static_cast<unsigned long long>(stats.bytes_received.load()),
              static_cast<unsigned long long>(stats.bytes_sent.load()),
              static_cast<unsigned long long>(stats.verify_errors.load()));
  return 0;
}
