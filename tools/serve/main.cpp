// ringmux-serve: the server side of every ringmux-loadgen mode.
//   ringmux-serve --listen=127.0.0.1:7300 [--cpus=1] [--ioengine=ringmux|tcp] [--duration=30s]
//                 [--max_streams=N] [--keepalive=DURATION] [--resume_timeout=DURATION] [--max_message=SIZE]
//                 [--peers=ADDRESS,... [--loops=N]]
// Stream and connection windows are the library's defaults: each side announces its own
// in the handshake (wire/SPEC.md §4.1), so clients configured otherwise interoperate.
// Prints its statistics on SIGINT / SIGTERM and on exit.
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "tools/fd_limit.h"
#include "tools/loadgen/job.h"
#include "tools/loadgen/protocol.h"
#include "tools/loadgen/server.h"

using namespace ringmux::loadgen;

namespace {

// More loops than this on one node would only contend for the cores.
constexpr uint32_t loops_max = 64;

// Largest message a client may ask for by default (--max_message): a unary response, a
// source stream's messages, a verified sink's. 1 MiB is the largest block of the standard
// workloads; each loop holds one buffer of this size, never one per client or stream.
constexpr uint32_t max_message_bytes_default = 1024 * 1024;

// Idle connections a server is expected to hold (issue 11's target): with fewer file
// descriptors than they need, it says at start how many it can hold.
constexpr uint64_t connections_expected = 10000;

// How often running out of file descriptors is reported on stderr, at most.
constexpr uint64_t fd_report_interval_ns = 1'000'000'000;

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
      "                           more are refused (retryable);\n"
      "                           up to %u (each open stream\n"
      "                           holds ~200 bytes of state)\n"
      "  --keepalive=DURATION     ping after this much silence;     (%llu ms)\n"
      "                           the peer is dead after 3x\n"
      "  --resume_timeout=DURATION how long a broken session waits  (%llu s)\n"
      "                           for its client to come back\n"
      "  --max_message=SIZE       largest message a client may ask  (%u KiB)\n"
      "                           for: a unary response, a source\n"
      "                           stream's messages, a verified\n"
      "                           sink's (at most %u MiB); a larger\n"
      "                           ask fails that stream with\n"
      "                           resource_exhausted (tcp: closed)\n"
      "The file descriptor limit is raised to the hard limit at start.\n"
      "  -h, --help               this text\n",
      static_cast<unsigned>(default_port), loops_max, ringmux::limits::streams_concurrent_max,
      ringmux::limits::streams_concurrent_max_supported,
      static_cast<unsigned long long>(ringmux::limits::keepalive_interval_ns_default / 1'000'000),
      static_cast<unsigned long long>(ringmux::limits::resume_timeout_ns_default / 1'000'000'000),
      max_message_bytes_default / 1024, message_bytes_max >> 20);
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
  uint64_t duration_ns = 0;
  ServeOptions serve;
  serve.message_bytes_allowed = max_message_bytes_default;
  ringmux::mux::ConnectionOptions& options = serve.connection;
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
        serve.peers.push_back(value.substr(start, comma - start));
        start = comma + 1;
      }
    } else if (key == "--loops") {
      if (!size_option(key, value, loops_max, serve.loops)) return 2;
    } else if (key == "--max_message") {
      if (!size_option(key, value, message_bytes_max, serve.message_bytes_allowed)) return 2;
    } else if (key == "--max_streams") {
      if (!size_option(key, value, ringmux::limits::streams_concurrent_max_supported,
                       options.session.streams_concurrent_max)) {
        return 2;
      }
    } else if (key == "--keepalive") {
      auto ns = parse_duration_ns(value);
      if (!ns || *ns < 1'000'000) {
        std::fprintf(stderr, "ringmux-serve: option '--keepalive': '%s' is not a duration of at least 1ms\n", value.c_str());
        return 2;
      }
      options.keepalive_interval_ns = *ns;
      options.dead_peer_timeout_ns = 3 * *ns;
    } else if (key == "--resume_timeout") {
      auto ns = parse_duration_ns(value);
      if (!ns || *ns < 1'000'000) {
        std::fprintf(stderr, "ringmux-serve: option '--resume_timeout': '%s' is not a duration of at least 1ms\n",
                     value.c_str());
        return 2;
      }
      options.resume_timeout_ns = *ns;
    } else {
      std::fprintf(stderr, "ringmux-serve: bad argument '%s' (see --help)\n", arg.c_str());
      return 2;
    }
  }
  std::string error;
  const std::vector<std::string>& peers = serve.peers;
  if (!peers.empty() && engine != "ringmux") {
    std::fprintf(stderr, "ringmux-serve: --peers needs --ioengine=ringmux\n");
    return 2;
  }
  if (serve.loops > 1 && peers.empty()) {
    std::fprintf(stderr, "ringmux-serve: --loops needs --peers (a plain server runs one loop)\n");
    return 2;
  }
  const ringmux::tools::FdLimit fds = ringmux::tools::raise_fd_limit();
  auto server = engine == "ringmux" ? LoadServer::start_ringmux(listen, cpus, error, serve)
                                    : LoadServer::start_tcp(listen, cpus.empty() ? -1 : cpus.front(), error,
                                                            serve.message_bytes_allowed);
  if (!server) {
    std::fprintf(stderr, "ringmux-serve: %s\n", error.c_str());
    return 1;
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::printf("ringmux-serve: %s engine listening on port %u\n", engine.c_str(), static_cast<unsigned>(server->port()));
  std::fflush(stdout);
  const std::string shortfall = ringmux::tools::fd_shortfall(connections_expected, fds);
  if (!shortfall.empty()) {
    std::fprintf(stderr, "ringmux-serve: holds at most about %llu connections: %s\n",
                 static_cast<unsigned long long>(fds.connections()), shortfall.c_str());
  }
  const auto started = std::chrono::steady_clock::now();
  auto fd_reported = started - std::chrono::nanoseconds(fd_report_interval_ns);
  uint64_t fd_failures_reported = 0;
  while (stop_signal == 0) {
    const auto now = std::chrono::steady_clock::now();
    if (duration_ns != 0 && now - started >= std::chrono::nanoseconds(duration_ns)) break;
    // Out of descriptors: said once a second at most, with what to do about it.
    const uint64_t fd_failures = server->stats().accepts_failed_no_fds.load(std::memory_order_relaxed);
    if (fd_failures != fd_failures_reported && now - fd_reported >= std::chrono::nanoseconds(fd_report_interval_ns)) {
      std::fprintf(stderr,
                   "ringmux-serve: out of file descriptors (limit %llu, hard limit %llu): %llu accepts failed so far; "
                   "new connections wait until others close. Raise the limit (ulimit -n; ulimit -Hn as root)\n",
                   static_cast<unsigned long long>(fds.soft), static_cast<unsigned long long>(fds.hard),
                   static_cast<unsigned long long>(fd_failures));
      fd_failures_reported = fd_failures;
      fd_reported = now;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  server->stop();
  const ServerStats& stats = server->stats();
  std::printf("ringmux-serve: %s; connections=%llu sessions=%llu resumes=%llu calls=%llu bytes_received=%llu "
              "bytes_sent=%llu verify_errors=%llu accepts_failed_no_fds=%llu\n",
              stop_signal != 0 ? strsignal(stop_signal) : "duration reached",
              static_cast<unsigned long long>(stats.connections.load()),
              static_cast<unsigned long long>(stats.sessions.load()), static_cast<unsigned long long>(stats.resumes.load()),
              static_cast<unsigned long long>(stats.calls.load()),
              static_cast<unsigned long long>(stats.bytes_received.load()),
              static_cast<unsigned long long>(stats.bytes_sent.load()),
              static_cast<unsigned long long>(stats.verify_errors.load()),
              static_cast<unsigned long long>(stats.accepts_failed_no_fds.load()));
  return 0;
}
