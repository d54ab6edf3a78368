// tls_bench: W1 and W3 of shared/WORKLOADS.md over TLS 1.3 (mux/link/tls.h) against the
// same workloads in plaintext, interleaved in one process (per run: W1 plain, W1 tls, W3
// plain, W3 tls):
//   plain  one connection over the bare socket (no handshake stage);
//   tls    one connection whose both sides pass ConnectionOptions::handshake =
//          make_tls_handshake(their context): mutual authentication with certificates of a
//          CA made for this run, the server's accepted connection built from the fd with
//          the handshake set (dialer=false).
// W1: unary ping-pong, one call in flight, 64 B each way; latency = issue to full response
// on the client's loop (monotonic clock), every call of the measured window, nearest rank.
// W3: one stream, the client writes 64 KiB messages back to back, the server counts and
// discards them on its loop; payload GiB/s as received by the server in the window; at the
// end the client ends the stream and the server answers its count, which must equal what
// was written.
//
//   build/perf/tls_bench [--runs=3] [--seconds=3] [--warmup_ms=500] [--bs=65536]
//       [--client_cpu=0] [--server_cpu=1] [--loop_spin_ns=20000] [--workloads=W1,W3]
//
// --workloads=W1 runs W1 alone (to profile it). Each W1 row also prints what each loop did
// per call over the run (warm-up included): its iterations, its io_uring_enter calls (the
// blocking or submitting enter of each iteration plus the non-blocking ones of busy-polling)
// and its completions.
//
// The certificates (an EC P-256 CA, a server and a client leaf it signs, each with a DNS
// SAN the other side requires) are made with the `openssl` command in a temporary
// directory, removed once the contexts have loaded them. The client's loop is pinned to CPU 0 and the server's to
// CPU 1 (WORKLOADS.md). Not a test: perf/RESULTS.md records what it printed.
#include <openssl/opensslv.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "perf/two_loops_workloads.h"
#include "ringmux/base/log.h"
#include "ringmux/mux/link/tls.h"

using namespace ringmux;
using namespace ringmux::mux;
using engine::Loop;
using perf::client_loop;
using perf::on_loop;
using perf::server_loop;

namespace {

constexpr const char* program = "tls_bench";
constexpr uint32_t handler_echo = 1;
constexpr uint32_t handler_sink = 2;
// How long the end of a W3 run (the client's END, the server's answer) may take.
constexpr uint64_t finish_timeout_ns = 30'000'000'000;
// The certificates' validity: the run needs minutes, a day leaves room for clock skew.
constexpr int certificate_days = 1;

struct Options : perf::CommonFlags {
  uint32_t bs = 64 * 1024;
  bool w1 = true;
  bool w3 = true;
};

Options parse(int argc, char** argv) {
  Options options;
  const std::string usage = "usage: tls_bench [--runs=3] [--seconds=3] [--warmup_ms=500] [--bs=65536] [--client_cpu=0]\n"
                            "  [--server_cpu=1] [--loop_spin_ns=" +
                            std::to_string(limits::loop_spin_ns_default) + "] [--workloads=W1,W3]\n";
  perf::parse_flags(
      argc, argv,
      [&](const std::string& name, const char* value) {
        if (options.take(name, value)) return true;
        if (name == "--workloads") {
          const std::string list = value;
          options.w1 = list.find("W1") != std::string::npos;
          options.w3 = list.find("W3") != std::string::npos;
          return options.w1 || options.w3;
        }
        if (name != "--bs") return false;
        options.bs = static_cast<uint32_t>(std::strtoul(value, nullptr, 10));
        return true;
      },
      usage);
  return options;
}

// The run's PKI, made with the openssl command: ca.pem/ca.key, and for each leaf NAME
// NAME.pem/NAME.key with subjectAltName DNS:NAME, signed by the CA. Removed on destruction.
class Pki {
 public:
  Pki() {
    std::string pattern = (std::filesystem::temp_directory_path() / "ringmux-tls-bench-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) perf::die(program, "mkdtemp failed");
    dir_ = pattern;
    const std::string days = std::to_string(certificate_days);
    run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout " + path("ca.key") +
        " -out " + path("ca.pem") + " -days " + days +
        " -subj /CN=tls-bench-ca -addext basicConstraints=critical,CA:TRUE"
        " -addext keyUsage=critical,keyCertSign,cRLSign");
    for (const char* name : {"server", "client"}) make_leaf(name, days);
  }
  ~Pki() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  Pki(const Pki&) = delete;
  Pki& operator=(const Pki&) = delete;

  // Leaf `name`'s files, requiring the peer to be `peer`.
  TlsOptions options(const std::string& name, const std::string& peer) const {
    TlsOptions o;
    o.cert_file = path(name + ".pem");
    o.key_file = path(name + ".key");
    o.ca_file = path("ca.pem");
    o.peer_names = {peer};
    return o;
  }

 private:
  void make_leaf(const std::string& name, const std::string& days) {
    std::ofstream(path(name + ".ext")) << "subjectAltName=DNS:" << name << "\nbasicConstraints=critical,CA:FALSE\n";
    run("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout " + path(name + ".key") +
        " -out " + path(name + ".csr") + " -subj /CN=" + name);
    run("openssl x509 -req -in " + path(name + ".csr") + " -CA " + path("ca.pem") + " -CAkey " + path("ca.key") +
        " -CAcreateserial -days " + days + " -sha256 -extfile " + path(name + ".ext") + " -out " + path(name + ".pem"));
  }
  std::string path(const std::string& file) const { return (dir_ / file).string(); }
  void run(const std::string& command) const {
    if (std::system((command + " >/dev/null 2>&1").c_str()) != 0) {
      std::fprintf(stderr, "%s: failed: %s\n", program, command.c_str());
      std::error_code ignored;
      std::filesystem::remove_all(dir_, ignored);
      std::exit(1);
    }
  }

  std::filesystem::path dir_;
};

// The server: the W1 echo and the W3 sink.
struct ServerSide final : perf::ServerSide {
  ServerSide(Loop& loop_ref, const ConnectionOptions& options) : perf::ServerSide(loop_ref, options) {
    registry.add_unary(handler_echo, [](std::span<const std::byte> request, std::shared_ptr<Responder> responder) {
      responder->reply(request);
    });
    registry.add_stream(handler_sink, [this](const StreamStart& start) -> StreamObserver* {
      return new perf::CountingSink(start, [this](std::span<const std::byte> bytes) {
        counted.fetch_add(bytes.size(), std::memory_order_relaxed);
      });
    });
  }
  std::atomic<uint64_t> counted{0};
};

// The library's "TLS ..." log lines while it lives (the handshakes name the negotiated
// version and cipher suite); no sink is installed while anything is measured.
class TlsLines {
 public:
  TlsLines() { previous_ = set_log_sink(&sink_); }
  ~TlsLines() { set_log_sink(previous_); }
  std::vector<std::string> take() {
    std::lock_guard lock(mutex_);
    return std::move(lines_);
  }

 private:
  static void log(void* context, const LogEvent& event) noexcept {
    auto& self = *static_cast<TlsLines*>(context);
    if (event.message.rfind("TLS ", 0) != 0) return;
    std::lock_guard lock(self.mutex_);
    self.lines_.emplace_back(event.message);
  }
  std::mutex mutex_;  // the loops log, main reads
  std::vector<std::string> lines_;
  LogSink sink_{&TlsLines::log, this};
  const LogSink* previous_ = nullptr;
};

// One mode's connection pair, kept for the whole process.
struct Pair {
  std::string mode;
  std::unique_ptr<ServerSide> server;
  std::unique_ptr<perf::CallingClient> client;
  bool client_checksums = true;
  bool server_checksums = true;
};

Pair connect(engine::Engine& engine, const std::string& mode, const ConnectionOptions& server_options,
             const ConnectionOptions& client_options) {
  auto [server, client] = perf::connect_pair(
      program, engine, [&](Loop& loop) { return std::make_unique<ServerSide>(loop, server_options); },
      [&](Loop& loop) { return std::make_unique<perf::CallingClient>(loop, client_options); });
  // Both sides' handshakes (TLS, then HELLO) complete before anything is measured.
  const bool up = perf::wait_until(
      [&] {
        return on_loop(engine, client_loop, [&] { return client->connection->connected(); }) &&
               on_loop(engine, server_loop, [&] { return server->connection && server->connection->connected(); });
      },
      perf::settle_timeout_ns);
  if (!up) perf::die(program, (mode + ": the handshake did not complete").c_str());
  Pair pair{mode, std::move(server), std::move(client)};
  pair.client_checksums = on_loop(engine, client_loop, [&] { return pair.client->connection->session().payload_checksums(); });
  pair.server_checksums = on_loop(engine, server_loop, [&] { return pair.server->connection->session().payload_checksums(); });
  return pair;
}

// What one loop did per W1 call.
struct PerCall {
  double iterations = 0;
  double enters = 0;  // io_uring_enter: one per iteration plus the busy-poll ones
  double completions = 0;
};

struct Run {
  std::string workload;
  std::string mode;
  double calls_per_s = 0;
  double p50_us = 0, p99_us = 0;
  double gib_per_s = 0;
  bool ok = true;
  PerCall client, server;
};

PerCall per_call(const engine::LoopStats& before, const engine::LoopStats& after, double calls) {
  if (calls <= 0) return {};
  return {static_cast<double>(after.iterations - before.iterations) / calls,
          static_cast<double>(after.enters - before.enters + after.spin_polls - before.spin_polls) / calls,
          static_cast<double>(after.completions - before.completions) / calls};
}

void sleep_s(double seconds) { std::this_thread::sleep_for(std::chrono::nanoseconds(static_cast<uint64_t>(seconds * 1e9))); }

Run measure_w1(engine::Engine& engine, Pair& pair, const Options& options) {
  const engine::LoopStats client_before = engine.loop(client_loop).stats_snapshot();
  const engine::LoopStats server_before = engine.loop(server_loop).stats_snapshot();
  const uint64_t start_ns = Loop::clock_ns();
  const perf::CallFigures figures = perf::measure_calls(program, engine, *pair.client, handler_echo, 1, options);
  const uint64_t end_ns = Loop::clock_ns();
  const engine::LoopStats client_after = engine.loop(client_loop).stats_snapshot();
  const engine::LoopStats server_after = engine.loop(server_loop).stats_snapshot();
  Run run{"W1", pair.mode};
  // The calls of the whole measurement (warm-up and window) at the window's rate.
  const double calls = figures.calls_per_s * static_cast<double>(end_ns - start_ns) / 1e9;
  run.client = per_call(client_before, client_after, calls);
  run.server = per_call(server_before, server_after, calls);
  run.calls_per_s = figures.calls_per_s;
  run.p50_us = figures.p50_us;
  run.p99_us = figures.p99_us;
  run.ok = figures.errors == 0;
  return run;
}

Run measure_w3(engine::Engine& engine, Pair& pair, const Options& options, std::span<const std::byte> message) {
  ServerSide& server = *pair.server;
  auto writer = on_loop(engine, client_loop, [&] {
    auto w = std::make_unique<perf::BulkWriter>(*pair.client->connection, message);
    if (!w->open(handler_sink)) perf::die(program, "open failed");
    return w;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(options.warmup_ms));
  const uint64_t start_ns = Loop::clock_ns();
  const uint64_t start_bytes = server.counted.load();
  sleep_s(options.seconds);
  const uint64_t end_ns = Loop::clock_ns();
  const uint64_t end_bytes = server.counted.load();
  on_loop(engine, client_loop, [&] {
    writer->stop();
    return 0;
  });
  if (!perf::wait_until([&] { return writer->finished.load(std::memory_order_acquire); }, finish_timeout_ns)) {
    perf::die(program, (pair.mode + ": the stream did not finish").c_str());
  }
  const auto [written, answer, result] =
      on_loop(engine, client_loop, [&] { return std::tuple(writer->written, writer->answer, writer->result); });
  on_loop(engine, client_loop, [&] {
    writer.reset();
    return 0;
  });
  Run run{"W3", pair.mode};
  run.ok = result == MuxError::none && answer == written;
  if (!run.ok) {
    std::fprintf(stderr, "%s W3: result %d, written %llu, server counted %llu\n", pair.mode.c_str(),
                 static_cast<int>(result), static_cast<unsigned long long>(written),
                 static_cast<unsigned long long>(answer));
  }
  run.gib_per_s = static_cast<double>(end_bytes - start_bytes) / (static_cast<double>(end_ns - start_ns) / 1e9) /
                  (1024.0 * 1024 * 1024);
  return run;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  bool all_ok = true;
  {
    std::shared_ptr<const TlsContext> server_context, client_context;
    {
      // The contexts hold what they loaded: the files go before anything runs.
      const Pki pki;
      std::string error;
      server_context = TlsContext::create(pki.options("server", "client"), error);
      if (server_context) client_context = TlsContext::create(pki.options("client", "server"), error);
      if (!client_context) {
        std::fprintf(stderr, "%s: %s\n", program, error.c_str());
        return 1;
      }
    }
    ConnectionOptions tls_server, tls_client;
    tls_server.handshake = make_tls_handshake(server_context);
    tls_client.handshake = make_tls_handshake(client_context);

    auto engine = perf::start_two_loops(program, options.client_cpu, options.server_cpu, options.loop_spin_ns);
    std::vector<Pair> pairs;
    std::vector<std::string> handshake_lines;
    {
      TlsLines lines;
      pairs.push_back(connect(*engine, "plain", {}, {}));
      pairs.push_back(connect(*engine, "tls", tls_server, tls_client));
      handshake_lines = lines.take();
    }
    std::vector<std::byte> message(options.bs, std::byte{0x6b});

    std::printf("TLS 1.3 against plaintext: W1 (1 call in flight, 64 B each way) and W3 (one stream, %u B messages), "
                "interleaved, %d runs of %.1f s (+%llu ms warm-up), client CPU %d, server CPU %d, loop_spin_ns=%llu\n",
                options.bs, options.runs, options.seconds, static_cast<unsigned long long>(options.warmup_ms),
                options.client_cpu, options.server_cpu, static_cast<unsigned long long>(options.loop_spin_ns));
    std::printf("TLS path: record layer in user space (OpenSSL %s, through the transport's own BIO; this build has no kTLS path), "
                "tls_kernel_offload_available() = %s\n",
                OPENSSL_VERSION_STR, tls_kernel_offload_available() ? "true" : "false");
    for (const std::string& line : handshake_lines) std::printf("handshake: %s\n", line.c_str());
    for (const Pair& pair : pairs) {
      std::printf("%-5s payload_checksums(): client %s, server %s\n", pair.mode.c_str(),
                  pair.client_checksums ? "true" : "false", pair.server_checksums ? "true" : "false");
    }
    std::printf("%-4s %-5s %4s %10s %9s %9s %7s   %s\n", "load", "mode", "run", "calls/s", "p50 us", "p99 us", "GiB/s",
                "per W1 call, client | server: loop iterations, io_uring_enter, completions");
    std::vector<Run> runs;
    for (int r = 1; r <= options.runs; r++) {
      for (const char* workload : {"W1", "W3"}) {
        if (!(std::string(workload) == "W1" ? options.w1 : options.w3)) continue;
        for (Pair& pair : pairs) {
          Run run = std::string(workload) == "W1" ? measure_w1(*engine, pair, options)
                                                  : measure_w3(*engine, pair, options, message);
          all_ok = all_ok && run.ok;
          if (run.workload == "W1") {
            std::printf("%-4s %-5s %4d %10.0f %9.1f %9.1f %7s   %.2f %.2f %.2f | %.2f %.2f %.2f%s\n", workload,
                        pair.mode.c_str(), r, run.calls_per_s, run.p50_us, run.p99_us, "", run.client.iterations,
                        run.client.enters, run.client.completions, run.server.iterations, run.server.enters,
                        run.server.completions, run.ok ? "" : "  ERRORS");
          } else {
            std::printf("%-4s %-5s %4d %10s %9s %9s %7.2f%s\n", workload, pair.mode.c_str(), r, "", "", "",
                        run.gib_per_s, run.ok ? "" : "  COUNT MISMATCH");
          }
          std::fflush(stdout);
          runs.push_back(std::move(run));
        }
      }
    }
    auto medians = [&](const std::string& workload, const std::string& mode) {
      std::vector<double> rates, p50s, p99s, gibs;
      for (const Run& run : runs) {
        if (run.workload != workload || run.mode != mode) continue;
        rates.push_back(run.calls_per_s);
        p50s.push_back(run.p50_us);
        p99s.push_back(run.p99_us);
        gibs.push_back(run.gib_per_s);
      }
      return Run{workload, mode, perf::median(rates), perf::median(p50s), perf::median(p99s), perf::median(gibs)};
    };
    const Run w1_plain = medians("W1", "plain"), w1_tls = medians("W1", "tls");
    const Run w3_plain = medians("W3", "plain"), w3_tls = medians("W3", "tls");
    std::printf("\nmedians:\n");
    if (options.w1) {
      for (const Run* run : {&w1_plain, &w1_tls}) {
        std::printf("W1   %-5s %10.0f calls/s, p50 %.1f us, p99 %.1f us\n", run->mode.c_str(), run->calls_per_s,
                    run->p50_us, run->p99_us);
      }
      std::printf("tls/plain: W1 calls/s %.2fx, p50 %+.1f us, p99 %+.1f us\n",
                  w1_plain.calls_per_s > 0 ? w1_tls.calls_per_s / w1_plain.calls_per_s : 0,
                  w1_tls.p50_us - w1_plain.p50_us, w1_tls.p99_us - w1_plain.p99_us);
      std::printf("goal (issue 15): W1 p50 overhead <= 5 us: %s\n",
                  w1_tls.p50_us - w1_plain.p50_us <= 5.0 ? "met" : "NOT met");
    }
    if (options.w3) {
      for (const Run* run : {&w3_plain, &w3_tls}) std::printf("W3   %-5s %.2f GiB/s\n", run->mode.c_str(), run->gib_per_s);
      std::printf("tls/plain: W3 %.2fx\n", w3_plain.gib_per_s > 0 ? w3_tls.gib_per_s / w3_plain.gib_per_s : 0);
      std::printf("goal (issue 15): W3 over TLS >= 0.40x of plaintext: %s\n",
                  w3_tls.gib_per_s >= 0.4 * w3_plain.gib_per_s ? "met" : "NOT met");
    }

    // Each pair closes and goes on its loops; the engine stops with the last.
    perf::close_pair(*engine, pairs[0].server, pairs[0].client, [] {});
    perf::shut_down(*engine, pairs[1].server, pairs[1].client, [] {});
  }
  return all_ok ? 0 : 1;
}
