// ringmux-echo: the engine echo demo and benchmark.
//
// Runs two echo workloads over 127.0.0.1 with the ringmux engine (io_uring loops, one
// pinned per side) and, interleaved in the same invocation, with plain blocking sockets
// (one thread per side; "tcp"), and, when the engine busy-polls, with blocking sockets
// that busy-poll the same way ("tcp-spin": recv MSG_DONTWAIT for --spin-us, then block),
// and prints rate and latency percentiles side by side:
//   pingpong: one connection, one request in flight, --size bytes each way;
//   pipeline: one connection, --depth requests in flight.
// Examples:
//   ringmux-echo                         # both workloads, 3 A/B pairs of 2 s each
//   ringmux-echo --workload=pingpong --runs=5 --seconds=3 --json
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "ringmux/engine/engine.h"
#include "ringmux/engine/loop.h"
#include "ringmux/engine/socket.h"
#include "tools/blocking_io.h"
#include "tools/echo_server.h"
#include "tools/latency.h"
#include "tools/version.h"

namespace {

using namespace ringmux;
using engine::Loop;

struct Options {
  std::string workload = "both";  // pingpong | pipeline | both
  uint32_t size = 64;
  uint32_t depth = 64;
  double seconds = 2.0;
  double warmup_seconds = 0.5;
  uint32_t runs = 3;
  int client_cpu = 0;
  int server_cpu = 1;
  double spin_us = static_cast<double>(limits::loop_spin_ns_default) / 1e3;
  bool json = false;
};

// The --help text, laid out like the man page (docs/man/ringmux-echo.1, which
// tests/check_man.py holds to it): every option with its default, and the exit status.
void print_help() {
  std::printf(
      "NAME\n"
      "    ringmux-echo - the engine echo demo and benchmark\n"
      "\n"
      "SYNOPSIS\n"
      "    ringmux-echo [--workload=pingpong|pipeline|both] [--size=BYTES] [--depth=N]\n"
      "                 [--seconds=S] [--warmup=S] [--runs=N] [--client-cpu=N]\n"
      "                 [--server-cpu=N] [--spin-us=US] [--json]\n"
      "    ringmux-echo --help | --version\n"
      "\n"
      "DESCRIPTION\n"
      "    Echo over 127.0.0.1 with the ringmux engine (one io_uring loop per side) against\n"
      "    blocking sockets (tcp) and, when the engine busy-polls, blocking sockets that\n"
      "    busy-poll as long (tcp-spin); interleaved A B C A B C. Prints requests per second\n"
      "    and latency percentiles side by side: pingpong is one request in flight on one\n"
      "    connection, pipeline --depth of them.\n"
      "\n"
      "OPTIONS\n"
      "    --workload=NAME\n"
      "        pingpong, pipeline or both. Default: both.\n"
      "    --size=BYTES\n"
      "        Request and response size, 1 to 1048576. Default: 64.\n"
      "    --depth=N\n"
      "        Requests in flight for pipeline, 1 to 4096. Default: 64.\n"
      "    --seconds=S\n"
      "        Measured window per run. Default: 2.\n"
      "    --warmup=S\n"
      "        Unmeasured warm-up per run. Default: 0.5.\n"
      "    --runs=N\n"
      "        A/B pairs per workload. Default: 3.\n"
      "    --client-cpu=N\n"
      "        Core of the client side, -1 for none. Default: 0.\n"
      "    --server-cpu=N\n"
      "        Core of the server side, -1 for none. Default: 1.\n"
      "    --spin-us=US\n"
      "        The ringmux loops busy-poll this long before sleeping, 0 for never (the\n"
      "        engine's loop_spin_ns_default in base/limits.h). Default: %g.\n"
      "    --json\n"
      "        Print JSON instead of a table. Default: off.\n"
      "%s"
      "\n"
      "EXIT STATUS\n"
      "    0   every run completed\n"
      "    1   a run failed (the message says which and why)\n"
      "    2   a bad option (the message names the option and what it accepts)\n"
      "\n"
      "SEE ALSO\n"
      "    ringmux-loadgen(1), ringmux-serve(1)\n",
      static_cast<double>(ringmux::limits::loop_spin_ns_default) / 1e3, tools::help_version_options);
}

double parse_number(const std::string& option, const std::string& value, double min, double max) {
  char* end = nullptr;
  errno = 0;
  const double number = std::strtod(value.c_str(), &end);
  if (value.empty() || *end != '\0' || errno != 0 || number < min || number > max) {
    char range[64];
    std::snprintf(range, sizeof(range), "[%.15g, %.15g]", min, max);
    throw std::invalid_argument("option " + option + ": '" + value + "' is not a number in " + range);
  }
  return number;
}

Options parse_options(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; i++) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      print_help();
      std::exit(0);
    }
    if (arg == "--version") {
      std::fputs(tools::version_text("ringmux-echo").c_str(), stdout);
      std::exit(0);
    }
    if (arg == "--json") {
      options.json = true;
      continue;
    }
    const auto eq = arg.find('=');
    if (arg.rfind("--", 0) != 0 || eq == std::string::npos) {
      throw std::invalid_argument("unknown argument '" + arg + "' (see --help)");
    }
    const std::string key = arg.substr(0, eq);
    const std::string value = arg.substr(eq + 1);
    if (key == "--workload") {
      if (value != "pingpong" && value != "pipeline" && value != "both") {
        throw std::invalid_argument("option --workload: '" + value + "' is not pingpong, pipeline or both");
      }
      options.workload = value;
    } else if (key == "--size") {
      options.size = static_cast<uint32_t>(parse_number(key, value, 1, 1 << 20));
    } else if (key == "--depth") {
      options.depth = static_cast<uint32_t>(parse_number(key, value, 1, 4096));
    } else if (key == "--seconds") {
      options.seconds = parse_number(key, value, 0.01, 3600);
    } else if (key == "--warmup") {
      options.warmup_seconds = parse_number(key, value, 0, 3600);
    } else if (key == "--runs") {
      options.runs = static_cast<uint32_t>(parse_number(key, value, 1, 1000));
    } else if (key == "--spin-us") {
      options.spin_us = parse_number(key, value, 0, 1e6);
    } else if (key == "--client-cpu") {
      options.client_cpu = static_cast<int>(parse_number(key, value, -1, 4095));
    } else if (key == "--server-cpu") {
      options.server_cpu = static_cast<int>(parse_number(key, value, -1, 4095));
    } else {
      throw std::invalid_argument("unknown option '" + key + "' (see --help)");
    }
  }
  return options;
}

struct RunResult {
  std::string workload;
  std::string engine;
  double rps = 0;
  double p50_us = 0;
  double p99_us = 0;
  double p999_us = 0;
  uint64_t samples = 0;
  // ringmux only: io_uring_enter calls of the client loop per completed request, whole run.
  double enters_per_request = 0;
};

// Bookkeeping shared by both clients: a FIFO of issue times (responses come back in
// order on one connection) and the measured window.
class EchoWindow {
 public:
  EchoWindow(const Options& options, uint32_t depth)
      : size_(options.size), issued_ns_(depth) {
    const uint64_t start = Loop::clock_ns();
    measure_from_ns_ = start + static_cast<uint64_t>(options.warmup_seconds * 1e9);
    measure_until_ns_ = measure_from_ns_ + static_cast<uint64_t>(options.seconds * 1e9);
    samples_.reserve(static_cast<std::size_t>(options.seconds * 4e6) + 1024);
  }
  void issued(uint64_t now_ns) { issued_ns_[(head_ + in_flight_++) % issued_ns_.size()] = now_ns; }
  // Accounts `bytes` of responses; returns how many requests completed.
  uint32_t received(std::size_t bytes, uint64_t now_ns) {
    partial_bytes_ += bytes;
    uint32_t completed = 0;
    while (partial_bytes_ >= size_) {
      partial_bytes_ -= size_;
      const uint64_t issued = issued_ns_[head_];
      head_ = (head_ + 1) % issued_ns_.size();
      in_flight_--;
      completed++;
      if (now_ns >= measure_from_ns_ && now_ns < measure_until_ns_) samples_.add(now_ns - issued);
    }
    return completed;
  }
  bool finished(uint64_t now_ns) const { return now_ns >= measure_until_ns_; }
  RunResult result(const std::string& workload, const std::string& engine_name, double seconds) {
    RunResult r;
    r.workload = workload;
    r.engine = engine_name;
    r.samples = samples_.count();
    r.rps = static_cast<double>(samples_.count()) / seconds;
    r.p50_us = static_cast<double>(samples_.percentile_ns(50)) / 1e3;
    r.p99_us = static_cast<double>(samples_.percentile_ns(99)) / 1e3;
    r.p999_us = static_cast<double>(samples_.percentile_ns(99.9)) / 1e3;
    return r;
  }
  uint32_t in_flight() const { return in_flight_; }

 private:
  std::size_t size_;
  std::vector<uint64_t> issued_ns_;
  std::size_t head_ = 0;
  uint32_t in_flight_ = 0;
  std::size_t partial_bytes_ = 0;
  uint64_t measure_from_ns_ = 0;
  uint64_t measure_until_ns_ = 0;
  tools::LatencySamples samples_;
};

// ---- ringmux engine side -----------------------------------------------------------------

class EngineClient final : public engine::ConnectHandler, public engine::SocketHandler {
 public:
  EngineClient(Loop& loop, const Options& options, uint32_t depth)
      : loop_(loop), connector_(loop, *this), window_(options, depth), depth_(depth),
        request_(std::size_t{depth} * options.size, std::byte{0x5a}), size_(options.size) {}

  void start(const engine::Address& address) { connector_.connect(address); }
  bool done() const { return done_; }
  bool failed() const { return failed_; }
  uint64_t completed() const { return completed_; }
  EchoWindow& window() { return window_; }

  void on_connect(Result<int, engine::IoError> result) noexcept override {
    if (!result) {
      std::fprintf(stderr, "connect failed: %s\n", engine::describe(result.error()));
      failed_ = done_ = true;
      return;
    }
    socket_ = std::make_unique<engine::Socket>(loop_, result.value(), *this);
    socket_->start();
    issue(depth_);
  }
  void on_recv(std::span<const std::byte> bytes) noexcept override {
    const uint64_t now = Loop::clock_ns();
    const uint32_t completed = window_.received(bytes.size(), now);
    completed_ += completed;
    if (window_.finished(now)) {
      // The window is over: close now; requests still in flight are not measured.
      stopping_ = true;
      socket_->close();
      return;
    }
    if (completed > 0) issue(completed);
  }
  void on_send_complete() noexcept override {
    if (pending_ > 0) flush();
  }
  void on_error(engine::IoError error) noexcept override {
    if (!stopping_) {
      std::fprintf(stderr, "engine client: %s\n", engine::describe(error));
      failed_ = true;
    }
    socket_->close();
  }
  void on_closed() noexcept override { done_ = true; }

 private:
  void issue(uint32_t count) {
    const uint64_t now = Loop::clock_ns();
    for (uint32_t i = 0; i < count; i++) window_.issued(now);
    pending_ += count;
    if (!socket_->send_in_flight()) flush();
  }
  void flush() {
    const uint32_t count = std::min(pending_, depth_);
    pending_ -= count;
    socket_->send(std::span<const std::byte>(request_.data(), std::size_t{count} * size_));
  }

  Loop& loop_;
  engine::Connector connector_;
  std::unique_ptr<engine::Socket> socket_;
  EchoWindow window_;
  uint32_t depth_;
  std::vector<std::byte> request_;
  std::size_t size_;
  uint32_t pending_ = 0;
  uint64_t completed_ = 0;
  bool stopping_ = false;
  bool done_ = false;
  bool failed_ = false;
};

RunResult run_engine(const Options& options, const std::string& workload, uint32_t depth) {
  engine::EngineOptions engine_options;
  if (options.server_cpu >= 0) engine_options.cpus = {options.server_cpu};
  engine_options.loop.spin_ns = static_cast<uint64_t>(options.spin_us * 1e3);
  auto started = engine::Engine::start(engine_options);
  if (!started) throw std::runtime_error(std::string("engine start: ") + engine::describe(started.error()));
  auto server_engine = std::move(started).value();

  // The server lives on the engine's loop; it is created and destroyed there.
  std::unique_ptr<tools::EchoServer> server;
  std::promise<uint16_t> port_promise;
  server_engine->post(0, [&]() {
    server = std::make_unique<tools::EchoServer>(server_engine->loop(0));
    auto listening = server->listen(engine::Address::loopback_v4(0));
    port_promise.set_value(listening ? server->address().port() : 0);
  });
  const uint16_t port = port_promise.get_future().get();
  if (port == 0) throw std::runtime_error("echo server: listen failed");

  RunResult result;
  std::thread client([&]() {
    if (options.client_cpu >= 0) (void)engine::pin_current_thread(options.client_cpu);
    engine::LoopOptions loop_options;
    loop_options.spin_ns = static_cast<uint64_t>(options.spin_us * 1e3);
    auto created = Loop::create(loop_options);
    if (!created) throw std::runtime_error("client loop failed");
    auto loop = std::move(created).value();
    EngineClient echo(*loop, options, depth);
    echo.start(engine::Address::loopback_v4(port));
    const auto budget_ns = static_cast<uint64_t>((options.seconds + options.warmup_seconds + 30) * 1e9);
    if (!loop->run_until([&] { return echo.done(); }, budget_ns)) {
      std::fprintf(stderr, "engine client did not finish in time\n");
      std::abort();
    }
    if (echo.failed()) std::fprintf(stderr, "engine client failed\n");
    result = echo.window().result(workload, "ringmux", options.seconds);
    const auto& stats = loop->stats();
    const uint64_t enters = stats.enters + stats.spin_polls + stats.extra_submits;
    result.enters_per_request = static_cast<double>(enters) / static_cast<double>(std::max<uint64_t>(echo.completed(), 1));
  });
  client.join();

  std::promise<void> closed;
  server_engine->post(0, [&]() { server->close(); });
  // Closing is asynchronous on the loop: poll for it from here (bounded).
  for (int i = 0; i < 5000; i++) {
    std::promise<bool> probe;
    server_engine->post(0, [&]() { probe.set_value(server->closed()); });
    if (probe.get_future().get()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  server_engine->post(0, [&]() {
    server.reset();
    closed.set_value();
  });
  closed.get_future().get();
  server_engine->stop();
  return result;
}

// ---- blocking-socket baseline ------------------------------------------------------------

void write_all(int fd, const std::byte* data, std::size_t length) {
  if (!tools::send_all(fd, data, length)) throw std::runtime_error(std::string("send: ") + std::strerror(errno));
}

int tcp_socket() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

// recv(2), optionally busy-polling with MSG_DONTWAIT for `spin_ns` before blocking: the
// baseline with the same idle strategy as the engine's loops.
ssize_t recv_maybe_spinning(int fd, std::byte* data, std::size_t length, uint64_t spin_ns) {
  if (spin_ns > 0) {
    const uint64_t until_ns = Loop::clock_ns() + spin_ns;
    do {
      const ssize_t n = ::recv(fd, data, length, MSG_DONTWAIT);
      if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) return n;
    } while (Loop::clock_ns() < until_ns);
  }
  return ::recv(fd, data, length, 0);
}

RunResult run_blocking(const Options& options, const std::string& workload, uint32_t depth, bool spin) {
  const uint64_t spin_ns = spin ? static_cast<uint64_t>(options.spin_us * 1e3) : 0;
  const int listen_fd = tcp_socket();
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  if (::bind(listen_fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 || ::listen(listen_fd, 16) != 0 ||
      getsockname(listen_fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    throw std::runtime_error(std::string("baseline listen: ") + std::strerror(errno));
  }
  // Server: one thread, read whatever arrived, write it all back.
  std::thread server([&]() {
    if (options.server_cpu >= 0) (void)engine::pin_current_thread(options.server_cpu);
    const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    std::vector<std::byte> buffer(256 * 1024);
    for (;;) {
      const ssize_t n = recv_maybe_spinning(fd, buffer.data(), buffer.size(), spin_ns);
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        break;
      }
      write_all(fd, buffer.data(), static_cast<std::size_t>(n));
    }
    ::close(fd);
  });

  RunResult result;
  std::thread client([&]() {
    if (options.client_cpu >= 0) (void)engine::pin_current_thread(options.client_cpu);
    const int fd = tcp_socket();
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      throw std::runtime_error(std::string("baseline connect: ") + std::strerror(errno));
    }
    EchoWindow window(options, depth);
    const std::vector<std::byte> request(std::size_t{depth} * options.size, std::byte{0x5a});
    std::vector<std::byte> buffer(256 * 1024);
    uint64_t now = Loop::clock_ns();
    for (uint32_t i = 0; i < depth; i++) window.issued(now);
    write_all(fd, request.data(), request.size());
    while (!window.finished(now)) {
      const ssize_t n = recv_maybe_spinning(fd, buffer.data(), buffer.size(), spin_ns);
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        throw std::runtime_error("baseline: server closed early");
      }
      now = Loop::clock_ns();
      const uint32_t completed = window.received(static_cast<std::size_t>(n), now);
      if (completed > 0 && !window.finished(now)) {
        for (uint32_t i = 0; i < completed; i++) window.issued(now);
        write_all(fd, request.data(), std::size_t{completed} * options.size);
      }
    }
    ::shutdown(fd, SHUT_WR);
    while (::recv(fd, buffer.data(), buffer.size(), 0) > 0) {
    }
    ::close(fd);
    result = window.result(workload, spin ? "tcp-spin" : "tcp", options.seconds);
  });
  client.join();
  server.join();
  ::close(listen_fd);
  return result;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values.empty() ? 0 : values[values.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  try {
    options = parse_options(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ringmux-echo: %s\n", e.what());
    return 2;
  }
  std::vector<std::pair<std::string, uint32_t>> workloads;
  if (options.workload != "pipeline") workloads.emplace_back("pingpong", 1);
  if (options.workload != "pingpong") workloads.emplace_back("pipeline", options.depth);

  std::vector<RunResult> results;
  try {
    for (const auto& [name, depth] : workloads) {
      for (uint32_t run = 0; run < options.runs; run++) {
        const std::size_t first = results.size();
        results.push_back(run_engine(options, name, depth));
        results.push_back(run_blocking(options, name, depth, false));
        if (options.spin_us > 0) results.push_back(run_blocking(options, name, depth, true));
        if (!options.json) {
          std::fprintf(stderr, "run %u %-8s", run + 1, name.c_str());
          for (std::size_t i = first; i < results.size(); i++) {
            const auto& r = results[i];
            std::fprintf(stderr, " | %s %.0f rps p50 %.1f p99 %.1f us", r.engine.c_str(), r.rps, r.p50_us, r.p99_us);
            if (r.enters_per_request > 0) std::fprintf(stderr, " (%.2f enters/req)", r.enters_per_request);
          }
          std::fprintf(stderr, "\n");
        }
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ringmux-echo: %s\n", e.what());
    return 1;
  }

  if (options.json) {
    std::printf("{\"size\": %u, \"depth\": %u, \"seconds\": %g, \"runs\": [\n", options.size, options.depth, options.seconds);
    for (std::size_t i = 0; i < results.size(); i++) {
      const auto& r = results[i];
      std::printf("  {\"workload\": \"%s\", \"engine\": \"%s\", \"rps\": %.0f, \"p50_us\": %.2f, \"p99_us\": %.2f, "
                  "\"p999_us\": %.2f, \"samples\": %llu, \"client_enters_per_request\": %.3f}%s\n",
                  r.workload.c_str(), r.engine.c_str(), r.rps, r.p50_us, r.p99_us, r.p999_us,
                  static_cast<unsigned long long>(r.samples), r.enters_per_request, i + 1 < results.size() ? "," : "");
    }
    std::printf("]}\n");
    return 0;
  }
  const bool with_spin_baseline = options.spin_us > 0;
  std::printf("\n| workload | ringmux rps | tcp rps | ratio |%s ringmux p50/p99 us | tcp p50/p99 us | p99 ratio |%s\n",
              with_spin_baseline ? " tcp-spin rps | ratio |" : "", with_spin_baseline ? " tcp-spin p50/p99 us |" : "");
  std::printf("|---|---|---|---|%s---|---|---|%s\n", with_spin_baseline ? "---|---|" : "", with_spin_baseline ? "---|" : "");
  const char* engines[3] = {"ringmux", "tcp", "tcp-spin"};
  for (const auto& [name, depth] : workloads) {
    std::vector<double> rps[3], p50[3], p99[3];
    for (const auto& r : results) {
      if (r.workload != name) continue;
      for (int side = 0; side < 3; side++) {
        if (r.engine != engines[side]) continue;
        rps[side].push_back(r.rps);
        p50[side].push_back(r.p50_us);
        p99[side].push_back(r.p99_us);
      }
    }
    std::printf("| %s (depth %u, %u B) | %.0f | %.0f | %.2fx |", name.c_str(), depth, options.size, median(rps[0]),
                median(rps[1]), median(rps[0]) / median(rps[1]));
    if (with_spin_baseline) std::printf(" %.0f | %.2fx |", median(rps[2]), median(rps[0]) / median(rps[2]));
    std::printf(" %.1f / %.1f | %.1f / %.1f | %.2fx |", median(p50[0]), median(p99[0]), median(p50[1]), median(p99[1]),
                median(p99[0]) / median(p99[1]));
    if (with_spin_baseline) std::printf(" %.1f / %.1f |", median(p50[2]), median(p99[2]));
    std::printf("\n");
  }
  std::printf("\nmedians of %u interleaved runs of %.1f s each (after %.1f s warm-up); client on CPU %d, server on CPU %d;"
              " ringmux loops spin %.0f us before sleeping\n",
              options.runs, options.seconds, options.warmup_seconds, options.client_cpu, options.server_cpu, options.spin_us);
  return 0;
}
