// ringmux-serve: the server side of every ringmux-loadgen mode.
//   ringmux-serve --listen=127.0.0.1:7300 [--cpus=0-1 | --loops=N] [--ioengine=ringmux|tcp] [--duration=30s]
//                 [--max_streams=N] [--keepalive=DURATION] [--resume_timeout=DURATION] [--max_message=SIZE]
//                 [--peers=ADDRESS,...] [--metrics=ADDRESS:PORT] [--spin=DURATION] [--stats-interval=DURATION]
//                 [--tls-cert=FILE --tls-key=FILE --tls-ca=FILE [--tls-peer-name=NAME] [--tls-ktls=0|1]]
// Stream and connection windows are the library's defaults: each side announces its own
// in the handshake (wire/SPEC.md §4.1), so clients configured otherwise interoperate.
// Prints its statistics on SIGINT / SIGTERM and on exit; serves them to Prometheus with
// --metrics (tools/serve/metrics.h) and summarises them on stderr every --stats-interval.
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "tools/cpus.h"
#include "tools/fd_limit.h"
#include "tools/loadgen/job.h"
#include "tools/loadgen/protocol.h"
#include "tools/loadgen/server.h"
#include "tools/options.h"
#include "tools/serve/metrics.h"
#include "tools/tls_stage.h"
#include "tools/version.h"
#include "ringmux/base/log.h"

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

// The shortest --stats-interval: a line per 100 ms is already more than anyone reads.
constexpr uint64_t stats_interval_ns_min = 100'000'000;

// The longest --spin: past a millisecond a poll costs more than any wake-up it saves.
constexpr uint64_t spin_ns_max = 1'000'000;

// How long the main thread sleeps between looks at the signal flag and the clocks.
constexpr uint64_t main_tick_ns = 20'000'000;

// Refused connections printed per second at most: a flood of them is counted (the log
// events of --metrics), not written to stderr line by line.
constexpr uint64_t refusals_printed_per_second_max = 20;

// Whether a log event is a connection this server refused, or a peer that refused it: an
// acceptor's warning (a TLS handshake that failed, with its cause; a TLS client at a plain
// server; a connect flood) or a failed TLS handshake of a dialed peer session.
bool is_refusal(const ringmux::LogEvent& event) {
  if (event.subsystem != ringmux::LogSubsystem::link || event.severity < ringmux::LogSeverity::warning) return false;
  return event.message.starts_with("acceptor: ") || event.message.starts_with("TLS client: ");
}

// The library's log events, counted by subsystem and severity (the log hook's sink): what
// --metrics exports as ringmux_log_events_total; refusals also go to stderr, one line each
// (is_refusal). Any thread.
constexpr std::size_t log_subsystems = 5;  // LogSubsystem's values
constexpr std::size_t log_severities = 4;  // LogSeverity's values
struct LogCounts {
  std::array<std::atomic<uint64_t>, log_subsystems * log_severities> events{};
  std::atomic<uint64_t> printed_second{0};  // the second refusals_printed counts for
  std::atomic<uint64_t> printed{0};
  void print_refusal(const ringmux::LogEvent& event) noexcept {
    const uint64_t second = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
    if (printed_second.exchange(second, std::memory_order_relaxed) != second) printed.store(0, std::memory_order_relaxed);
    if (printed.fetch_add(1, std::memory_order_relaxed) >= refusals_printed_per_second_max) return;
    std::fprintf(stderr, "ringmux-serve: %.*s\n", static_cast<int>(event.message.size()), event.message.data());
  }
  ringmux::LogSink sink{[](void* context, const ringmux::LogEvent& event) noexcept {
                          auto& self = *static_cast<LogCounts*>(context);
                          const std::size_t index = static_cast<std::size_t>(event.subsystem) * log_severities +
                                                    static_cast<std::size_t>(event.severity);
                          if (index < self.events.size()) self.events[index].fetch_add(1, std::memory_order_relaxed);
                          if (is_refusal(event)) self.print_refusal(event);
                        },
                        this};
};

// One line per loop: its share of the sessions and calls, the CPU its thread used, and its
// io_uring_enter calls (how many calls share one: what a loop's fixed costs are spread on).
std::string loops_text(const std::vector<ServerCounts>& loops) {
  std::string out;
  for (std::size_t i = 0; i < loops.size(); i++) {
    char line[256];
    std::snprintf(line, sizeof(line),
                  "ringmux-serve: loop %zu: connections=%llu sessions_open=%llu calls=%llu cpu=%.3fs enters=%llu\n", i,
                  static_cast<unsigned long long>(loops[i].connections),
                  static_cast<unsigned long long>(loops[i].sessions_open),
                  static_cast<unsigned long long>(loops[i].calls), static_cast<double>(loops[i].cpu_ns) / 1e9,
                  static_cast<unsigned long long>(loops[i].loop_enters));
    out += line;
  }
  return out;
}

// The Prometheus exposition of the server's statistics (the metrics thread: atomics, the
// loops' CPU clocks, and the loops' snapshots that LoadServer::snapshot copies on each loop).
std::string render_metrics(LoadServer& server, const LogCounts& log, std::chrono::steady_clock::time_point started) {
  ringmux::serve::Exposition out;
  auto load = [](const std::atomic<uint64_t>& value) { return value.load(std::memory_order_relaxed); };
  const ServerCounts stats = server.totals();
  out.counter("ringmux_serve_connections_total", "TCP connections accepted.", stats.connections);
  out.counter("ringmux_serve_sessions_total", "ringmux sessions started (a resume is not a new one).", stats.sessions);
  out.counter("ringmux_serve_resumes_total", "Sessions resumed on a new TCP connection.", stats.resumes);
  out.counter("ringmux_serve_calls_total", "Unary calls and streams served.", stats.calls);
  out.counter("ringmux_serve_received_bytes_total", "Payload bytes received from clients.", stats.bytes_received);
  out.counter("ringmux_serve_sent_bytes_total", "Payload bytes sent to clients.", stats.bytes_sent);
  out.counter("ringmux_serve_verify_errors_total", "Damaged, missing or repeated messages seen (verify=1).",
              stats.verify_errors);
  out.counter("ringmux_serve_accepts_failed_no_fds_total", "Accepts that failed for want of file descriptors.",
              stats.accepts_failed_no_fds);
  // Each loop's share (ringmux engine): what --cpus spreads, and what it costs.
  const std::vector<ServerCounts> loops = server.per_loop();
  auto per_loop = [&](const char* name, const char* type, const char* help, auto value) {
    out.family(name, type, help);
    for (std::size_t i = 0; i < loops.size(); i++) {
      const std::string labels = "loop=\"" + std::to_string(i) + "\"";
      if constexpr (std::is_same_v<decltype(value(loops[i])), double>) {
        out.sample_real(name, labels, value(loops[i]));
      } else {
        out.sample(name, labels, value(loops[i]));
      }
    }
  };
  if (!loops.empty()) {
    per_loop("ringmux_serve_loop_connections_total", "counter",
             "Connections a loop took over: the sessions it started and the resumes that reached it.",
             [](const ServerCounts& c) { return c.connections; });
    per_loop("ringmux_serve_loop_sessions_open", "gauge", "Sessions alive on a loop.",
             [](const ServerCounts& c) { return c.sessions_open; });
    per_loop("ringmux_serve_loop_calls_total", "counter", "Unary calls and streams a loop served.",
             [](const ServerCounts& c) { return c.calls; });
    per_loop("ringmux_serve_loop_cpu_seconds_total", "counter", "CPU time (user and system) of a loop's thread.",
             [](const ServerCounts& c) { return static_cast<double>(c.cpu_ns) / 1e9; });
  }
  out.family("ringmux_log_events_total", "counter", "Events the library reported through its log hook.");
  for (std::size_t subsystem = 0; subsystem < log_subsystems; subsystem++) {
    for (std::size_t severity = 0; severity < log_severities; severity++) {
      const std::string labels =
          std::string("subsystem=\"") + ringmux::describe(static_cast<ringmux::LogSubsystem>(subsystem)) +
          "\",severity=\"" + ringmux::describe(static_cast<ringmux::LogSeverity>(severity)) + "\"";
      out.sample("ringmux_log_events_total", labels, load(log.events[subsystem * log_severities + severity]));
    }
  }
  ringmux::serve::expose_loops(out, server.snapshot());
  const std::chrono::duration<double> up = std::chrono::steady_clock::now() - started;
  out.gauge("ringmux_serve_uptime_seconds", "Seconds since the server started.", up.count());
  return out.text();
}

volatile std::sig_atomic_t stop_signal = 0;
void on_signal(int signal) { stop_signal = signal; }

// The --help text, laid out like the man page (docs/man/ringmux-serve.1, which
// tests/check_man.py holds to it): every option with its default, and the exit status.
void print_help() {
  std::printf(
      "NAME\n"
      "    ringmux-serve - the server side of every ringmux-loadgen mode\n"
      "\n"
      "SYNOPSIS\n"
      "    ringmux-serve [--listen=ADDRESS:PORT] [--cpus=LIST | --loops=N] [--ioengine=ringmux|tcp]\n"
      "                  [--duration=DURATION] [--peers=ADDRESS:PORT,...]\n"
      "                  [--max_streams=N] [--keepalive=DURATION] [--resume_timeout=DURATION]\n"
      "                  [--max_message=SIZE] [--metrics=ADDRESS:PORT] [--spin=DURATION]\n"
      "                  [--stats-interval=DURATION]\n"
      "                  [--tls-cert=FILE --tls-key=FILE --tls-ca=FILE [--tls-peer-name=NAME]\n"
      "                   [--tls-ktls=0|1]]\n"
      "    ringmux-serve --help | --version\n"
      "\n"
      "DESCRIPTION\n"
      "    Serves unary echo, sink, source and echo streams to ringmux-loadgen, with the\n"
      "    ringmux engine or the raw blocking-socket baseline (tcp). Prints its statistics on\n"
      "    SIGINT, SIGTERM and at the end of --duration (ringmux: then a line per loop).\n"
      "    Raises its file descriptor limit to the hard limit at start, and says so when that\n"
      "    holds fewer than %llu connections.\n"
      "    Durations: 50us, 100ms, 2s, 1m (a bare number is seconds); sizes: k/m/g, 1024-based.\n"
      "\n"
      "OPTIONS\n"
      "    --listen=ADDRESS:PORT\n"
      "        Where to listen (IPv4). Default: 127.0.0.1:%u.\n"
      "    --cpus=LIST\n"
      "        Run one event loop per listed core, pinned to it, e.g. 1 or 0,2-3; each must be\n"
      "        one this process may run on. Loop 0 accepts and reads each connection's HELLO,\n"
      "        then hands the session to the loop its session id (or route key) names, where\n"
      "        it lives and where a resume of it lands. tcp: the threads run on the first\n"
      "        core. Default: none (one loop, not pinned).\n"
      "    --ioengine=NAME\n"
      "        ringmux or tcp. Default: ringmux.\n"
      "    --duration=DURATION\n"
      "        Exit after this long. Default: none (run until SIGINT or SIGTERM).\n"
      "    --peers=ADDRESS:PORT,...\n"
      "        Join a cluster: one session with each peer, the same handlers on all; clients\n"
      "        such as ringmux-loadgen --rw=quorum dial every member. Needs --ioengine=ringmux.\n"
      "        Default: none (a plain server).\n"
      "    --loops=N\n"
      "        Event loops, not pinned, 1 to %u (with --cpus, the list's length; the two must\n"
      "        agree); with --peers they share the peer sessions. Needs --ioengine=ringmux.\n"
      "        Default: one per --cpus core, else 1.\n"
      "    --metrics=ADDRESS:PORT\n"
      "        Serve the statistics to Prometheus: GET /metrics on ADDRESS:PORT answers in the\n"
      "        text exposition format: counters of connections, sessions, resumes, calls and\n"
      "        bytes; per loop its connections, open sessions, calls and CPU seconds, the\n"
      "        engine's counters and the sessions' streams, bytes, frames, refusals, floods,\n"
      "        flow-control stalls and resumes (with --peers: per peer, its health and its\n"
      "        session's counters); the library's log events by subsystem and severity; and\n"
      "        histograms of the call times per handler (timed only with this option: two\n"
      "        clock reads a call). Default: none.\n"
      "        text exposition format (counters of connections, sessions, resumes, calls and\n"
      "        bytes; per loop its connections, open sessions, calls and CPU seconds; and the\n"
      "        library's log events by subsystem and severity). Default: none.\n"
      "    --spin=DURATION\n"
      "        How long each ringmux loop busy-polls for completions before it sleeps: a\n"
      "        wake-up costs tens of microseconds, a poll up to this much CPU; 0 never polls\n"
      "        (for loops that share their cores with other busy threads). Default: %lluus.\n"
      "    --stats-interval=DURATION\n"
      "        Print a one-line summary of the statistics to stderr this often, at least\n"
      "        100ms, and (ringmux) a line per loop: connections, open sessions, calls, CPU\n"
      "        time. Default: none.\n"
      "    --tls-cert=FILE\n"
      "        Mutual TLS 1.3 on every connection, accepted and (--peers) dialed: this\n"
      "        server's certificate chain, PEM; needs --tls-key and --tls-ca. A client without\n"
      "        a certificate of --tls-ca, or not speaking TLS, is refused; each refusal is a\n"
      "        line on stderr naming its cause. Needs --ioengine=ringmux. With several loops\n"
      "        loop 0 runs each handshake and hands the TLS session to the loop that owns it\n"
      "        (a resume reaches the same loop). Prints its TLS path: the record layer moves\n"
      "        into the kernel (kTLS) after each handshake where the kernel has it, else stays\n"
      "        in user space. Default: none (plain TCP).\n"
      "    --tls-key=FILE\n"
      "        The private key of --tls-cert, PEM. Default: none.\n"
      "    --tls-ca=FILE\n"
      "        The CA every client's (and peer's) certificate must chain to, PEM: client\n"
      "        certificates are required. Default: none.\n"
      "    --tls-peer-name=NAME\n"
      "        A name (DNS or IP SAN) a client's or peer's certificate must carry; may be given\n"
      "        several times (one of them). Default: none (any certificate of --tls-ca).\n"
      "    --tls-ktls=0|1\n"
      "        1: hand each connection's record layer to the kernel (kTLS) after its handshake\n"
      "        where the kernel has it; 0: keep it in user space (OpenSSL) always, to compare\n"
      "        the two or to keep off a kernel's kTLS. Default: 1.\n"
      "\n"
      "    Limits of each ringmux connection:\n"
      "    --max_streams=N\n"
      "        Streams a client may have open, up to %u (each open stream holds about 200\n"
      "        bytes); more are refused, retryably. Default: %u.\n"
      "    --keepalive=DURATION\n"
      "        Ping after this much silence; the peer is dead after three times as long. At\n"
      "        least 1ms. Default: %llums.\n"
      "    --resume_timeout=DURATION\n"
      "        How long a broken session waits for its client to come back. At least 1ms.\n"
      "        Default: %llus.\n"
      "    --max_message=SIZE\n"
      "        Largest message a client may ask for: a unary response, a source stream's\n"
      "        messages, a verified sink's; at most %u MiB. A larger ask fails that stream\n"
      "        with resource_exhausted (tcp: the connection is closed). Default: %u KiB.\n"
      "\n"
      "%s"
      "\n"
      "EXIT STATUS\n"
      "    0   stopped by SIGINT, SIGTERM or the end of --duration\n"
      "    1   the server could not start (the message names the cause)\n"
      "    2   a bad option (the message names the option and what it accepts)\n"
      "\n"
      "SEE ALSO\n"
      "    ringmux-loadgen(1), ringmux-chaos(1)\n",
      static_cast<unsigned long long>(connections_expected), static_cast<unsigned>(default_port), loops_max,
      static_cast<unsigned long long>(ringmux::limits::loop_spin_ns_default / 1000),
      ringmux::limits::streams_concurrent_max_supported, ringmux::limits::streams_concurrent_max,
      static_cast<unsigned long long>(ringmux::limits::keepalive_interval_ns_default / 1'000'000),
      static_cast<unsigned long long>(ringmux::limits::resume_timeout_ns_default / 1'000'000'000),
      message_bytes_max >> 20, max_message_bytes_default / 1024, ringmux::tools::help_version_options);
}

// Every option takes a value (--key=VALUE); the syntax is what "needs a value" shows.
constexpr ringmux::tools::ValueOption value_options[] = {
    {"--listen", "ADDRESS:PORT"},    {"--cpus", "LIST"},          {"--ioengine", "ringmux|tcp"},
    {"--duration", "DURATION"},      {"--peers", "ADDRESS:PORT,..."}, {"--loops", "N"},
    {"--max_streams", "N"},          {"--keepalive", "DURATION"}, {"--resume_timeout", "DURATION"},
    {"--max_message", "SIZE"},       {"--metrics", "ADDRESS:PORT"}, {"--stats-interval", "DURATION"},
    {"--spin", "DURATION"},          {"--tls-cert", "FILE"},      {"--tls-key", "FILE"},
    {"--tls-ca", "FILE"},            {"--tls-peer-name", "NAME"}, {"--tls-ktls", "0|1"},
};

// Prints a command-line error; returns the exit status for one.
int usage_error(const std::string& message) {
  std::fprintf(stderr, "ringmux-serve: %s\n", message.c_str());
  return 2;
}

// Parses a count or size option into `out` (1 to `max`; k/m/g suffixes allowed); prints
// the error, naming the limit, and returns false.
bool count_option(const std::string& key, const std::string& value, uint64_t max, uint32_t& out) {
  auto number = parse_size(value);
  if (!number || *number == 0 || *number > max) {
    usage_error(ringmux::tools::option_error(key, value, "a number from 1 to " + std::to_string(max)));
    return false;
  }
  out = static_cast<uint32_t>(*number);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:" + std::to_string(default_port);
  std::string engine = "ringmux";
  std::vector<int> cpus;
  bool loops_given = false;
  uint64_t duration_ns = 0;
  std::string metrics_address;
  uint64_t stats_interval_ns = 0;
  ServeOptions serve;
  ringmux::mux::TlsOptions tls;
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
    }
    if (arg == "--version") {
      std::fputs(ringmux::tools::version_text("ringmux-serve").c_str(), stdout);
      return 0;
    }
    if (arg.rfind("--", 0) != 0) return usage_error("unexpected argument '" + arg + "' (see --help)");
    if (auto error = ringmux::tools::option_shape_error(value_options, key, eq != std::string::npos);
        !error.empty()) {
      return usage_error(error);
    }
    if (std::string tls_error; ringmux::tools::take_tls_option(tls, key.substr(2), value, tls_error)) {
      if (!tls_error.empty()) return usage_error(tls_error);
    } else if (key == "--listen") {
      if (value.empty()) return usage_error(ringmux::tools::option_error(key, value, "an IPv4 ADDRESS:PORT"));
      listen = value;
    } else if (key == "--ioengine") {
      if (value != "ringmux" && value != "tcp") {
        return usage_error(ringmux::tools::option_error(key, value, "one of ringmux, tcp"));
      }
      engine = value;
    } else if (key == "--cpus") {
      auto cpus_parsed = parse_cpu_list(value);
      if (!cpus_parsed) return usage_error(ringmux::tools::option_error(key, value, "a CPU list (e.g. 1 or 0,2-3)"));
      if (auto error = ringmux::tools::cpus_not_allowed(*cpus_parsed); !error.empty()) {
        return usage_error("option '--cpus': " + error);
      }
      cpus = *cpus_parsed;
    } else if (key == "--duration") {
      auto ns = parse_duration_ns(value);
      if (!ns || *ns == 0) return usage_error(ringmux::tools::option_error(key, value, "a positive duration"));
      duration_ns = *ns;
    } else if (key == "--metrics") {
      if (value.empty()) return usage_error(ringmux::tools::option_error(key, value, "an IPv4 ADDRESS:PORT"));
      metrics_address = value;
    } else if (key == "--stats-interval") {
      auto ns = parse_duration_ns(value);
      if (!ns || *ns < stats_interval_ns_min) {
        return usage_error(ringmux::tools::option_error(key, value, "a duration of at least 100ms"));
      }
      stats_interval_ns = *ns;
    } else if (key == "--spin") {
      auto ns = parse_duration_ns(value);
      if (!ns || *ns > spin_ns_max) {
        return usage_error(ringmux::tools::option_error(key, value, "a duration from 0 to 1ms"));
      }
      serve.loop_spin_ns = *ns;
    } else if (key == "--peers") {
      if (value.empty()) return usage_error(ringmux::tools::option_error(key, value, "a list of ADDRESS:PORT"));
      for (std::size_t start = 0; start <= value.size();) {
        const std::size_t comma = std::min(value.find(',', start), value.size());
        serve.peers.push_back(value.substr(start, comma - start));
        start = comma + 1;
      }
    } else if (key == "--loops") {
      if (!count_option(key, value, loops_max, serve.loops)) return 2;
      loops_given = true;
    } else if (key == "--max_message") {
      if (!count_option(key, value, message_bytes_max, serve.message_bytes_allowed)) return 2;
    } else if (key == "--max_streams") {
      if (!count_option(key, value, ringmux::limits::streams_concurrent_max_supported,
                        options.session.streams_concurrent_max)) {
        return 2;
      }
    } else if (key == "--keepalive" || key == "--resume_timeout") {
      auto ns = parse_duration_ns(value);
      if (!ns || *ns < 1'000'000) {
        return usage_error(ringmux::tools::option_error(key, value, "a duration of at least 1ms"));
      }
      if (key == "--keepalive") {
        options.keepalive_interval_ns = *ns;
        options.dead_peer_timeout_ns = 3 * *ns;
      } else {
        options.resume_timeout_ns = *ns;
      }
    } else {
      // value_options lists an option this chain does not handle: a programmer error.
      return usage_error("option '" + key + "' is listed but not handled");
    }
  }
  std::string error;
  const std::vector<std::string>& peers = serve.peers;
  if (!peers.empty() && engine != "ringmux") return usage_error("--peers needs --ioengine=ringmux");
  if (loops_given && engine != "ringmux") return usage_error("--loops needs --ioengine=ringmux");
  if (cpus.size() > loops_max) {
    return usage_error("option '--cpus': " + std::to_string(cpus.size()) + " CPUs, at most " + std::to_string(loops_max) +
                       " loops");
  }
  if (loops_given && !cpus.empty() && cpus.size() != serve.loops) {
    return usage_error("option '--loops': " + std::to_string(serve.loops) + " loops but --cpus lists " +
                       std::to_string(cpus.size()) + " CPUs (one loop per CPU; give one of them)");
  }
  if (!loops_given && !cpus.empty() && engine == "ringmux") serve.loops = static_cast<uint32_t>(cpus.size());
  if (std::string tls_error = ringmux::tools::tls_files_error(tls); !tls_error.empty()) return usage_error(tls_error);
  const bool tls_on = ringmux::tools::tls_enabled(tls);
  if (tls_on && engine != "ringmux") {
    return usage_error("--tls-* needs --ioengine=ringmux (the tcp engine is the raw-socket baseline, without TLS)");
  }
  if (tls_on) {
    serve.handshake = ringmux::tools::tls_stage(tls, error);
    if (!serve.handshake) {
      std::fprintf(stderr, "ringmux-serve: TLS: %s\n", error.c_str());
      return 1;
    }
  }
  serve.time_calls = !metrics_address.empty();  // call times are for --metrics
  static LogCounts log_counts;  // static: the sink must outlive every loop that may log
  ringmux::set_log_sink(&log_counts.sink);
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
  if (tls_on) std::printf("ringmux-serve: %s\n", ringmux::tools::tls_path_text(true, tls).c_str());
  std::fflush(stdout);
  const std::string shortfall = ringmux::tools::fd_shortfall(connections_expected, fds);
  if (!shortfall.empty()) {
    std::fprintf(stderr, "ringmux-serve: holds at most about %llu connections: %s\n",
                 static_cast<unsigned long long>(fds.connections()), shortfall.c_str());
  }
  const auto started = std::chrono::steady_clock::now();
  std::unique_ptr<ringmux::serve::MetricsServer> metrics;
  if (!metrics_address.empty()) {
    LoadServer& served = *server;
    metrics = ringmux::serve::MetricsServer::start(
        metrics_address, [&served, started] { return render_metrics(served, log_counts, started); }, error);
    if (!metrics) {
      std::fprintf(stderr, "ringmux-serve: %s\n", error.c_str());
      server->stop();
      return 1;
    }
    std::printf("ringmux-serve: metrics on port %u\n", static_cast<unsigned>(metrics->port()));
    std::fflush(stdout);
  }
  auto stats_printed = started;
  uint64_t calls_printed = 0;
  auto fd_reported = started - std::chrono::nanoseconds(fd_report_interval_ns);
  uint64_t fd_failures_reported = 0;
  while (stop_signal == 0) {
    const auto now = std::chrono::steady_clock::now();
    if (duration_ns != 0 && now - started >= std::chrono::nanoseconds(duration_ns)) break;
    // Out of descriptors: said once a second at most, with what to do about it.
    const uint64_t fd_failures = server->totals().accepts_failed_no_fds;
    if (fd_failures != fd_failures_reported && now - fd_reported >= std::chrono::nanoseconds(fd_report_interval_ns)) {
      std::fprintf(stderr,
                   "ringmux-serve: out of file descriptors (limit %llu, hard limit %llu): %llu accepts failed so far; "
                   "new connections wait until others close. Raise the limit (ulimit -n; ulimit -Hn as root)\n",
                   static_cast<unsigned long long>(fds.soft), static_cast<unsigned long long>(fds.hard),
                   static_cast<unsigned long long>(fd_failures));
      fd_failures_reported = fd_failures;
      fd_reported = now;
    }
    if (stats_interval_ns != 0 && now - stats_printed >= std::chrono::nanoseconds(stats_interval_ns)) {
      const ServerCounts live = server->totals();
      const uint64_t calls = live.calls;
      const double seconds = std::chrono::duration<double>(now - stats_printed).count();
      std::fprintf(stderr,
                   "ringmux-serve: stats: connections=%llu sessions=%llu resumes=%llu calls=%llu (%.0f/s) "
                   "bytes_received=%llu bytes_sent=%llu\n",
                   static_cast<unsigned long long>(live.connections), static_cast<unsigned long long>(live.sessions),
                   static_cast<unsigned long long>(live.resumes), static_cast<unsigned long long>(calls),
                   static_cast<double>(calls - calls_printed) / seconds,
                   static_cast<unsigned long long>(live.bytes_received),
                   static_cast<unsigned long long>(live.bytes_sent));
      std::fputs(loops_text(server->per_loop()).c_str(), stderr);
      calls_printed = calls;
      stats_printed = now;
    }
    std::this_thread::sleep_for(std::chrono::nanoseconds(main_tick_ns));
  }
  if (metrics) metrics->stop();
  server->stop();
  const ServerCounts stats = server->totals();
  std::printf("ringmux-serve: %s; connections=%llu sessions=%llu resumes=%llu calls=%llu bytes_received=%llu "
              "bytes_sent=%llu verify_errors=%llu accepts_failed_no_fds=%llu\n",
              stop_signal != 0 ? strsignal(stop_signal) : "duration reached",
              static_cast<unsigned long long>(stats.connections), static_cast<unsigned long long>(stats.sessions),
              static_cast<unsigned long long>(stats.resumes), static_cast<unsigned long long>(stats.calls),
              static_cast<unsigned long long>(stats.bytes_received), static_cast<unsigned long long>(stats.bytes_sent),
              static_cast<unsigned long long>(stats.verify_errors),
              static_cast<unsigned long long>(stats.accepts_failed_no_fds));
  std::fputs(loops_text(server->per_loop()).c_str(), stdout);  // none for the tcp engine
  return 0;
}
