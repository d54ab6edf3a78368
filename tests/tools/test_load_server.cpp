// The load server on several loops (tools/loadgen/server.h): where sessions land, where a
// resume lands, and loadgen clones spread over client loops. The tests cross threads (the
// server's loops, the listening loop's hand-over, the client loops of run_clones) and run
// under TSan too (tests/run.sh tsan: "per-core*", "cross-loop*"), the TLS hand-over (an
// OpenSSL object posted from the listening loop to the owning one) with them.
// GCC 12 at -O3 reports a false -Wrestrict inside std::string concatenation (GCC bug
// 105329), as in tools/loadgen/run.cpp.
#pragma GCC diagnostic ignored "-Wrestrict"

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "ringmux/engine/socket.h"
#include "ringmux/mux/link/connection.h"
#include "ringmux/mux/link/loop_placement.h"
#include "ringmux/mux/link/tls.h"
#include "ringmux/mux/rpc/call.h"
#include "tests/support.h"
#include "tests/support_tls.h"
#include "tools/chaos/proxy.h"
#include "tools/loadgen/job.h"
#include "tools/loadgen/protocol.h"
#include "tools/loadgen/runner.h"
#include "tools/loadgen/server.h"

namespace ringmux::loadgen {
namespace {

constexpr uint64_t second_ns = 1'000'000'000;

// Client sessions on a loop of the test's thread, each dialed with the route key asked for
// (0: none; the server then places it by its session id).
struct Clients final : engine::ConnectHandler, mux::ConnectionObserver {
  // `handshake`: every connection (the first and each redial) runs it first (TLS).
  Clients(engine::Loop& l, uint16_t port, std::shared_ptr<mux::Handshake> handshake = nullptr)
      : loop(l), connector(l, *this) {
    target = engine::Address::loopback_v4(port);
    options.resume = true;
    options.peer = target;
    options.handshake = std::move(handshake);
  }
  ~Clients() {
    for (auto& connection : connections) connection->close();
    loop.run_until([&] { return closed == connections.size(); }, 10 * second_ns);
  }
  // Dials one session and waits until it is up (bounded).
  mux::Connection& dial(uint64_t route_key) {
    options.session.route_key = route_key;
    const std::size_t before = connections.size();
    connector.connect(target, 5000);
    REQUIRE(loop.run_until([&] { return failed || (connections.size() > before && connections.back()->connected()); },
                           10 * second_ns));
    REQUIRE(!failed);
    return *connections.back();
  }
  // Starts one unary call of a `size`-byte response on `connection`; `outcome` becomes 1
  // when it succeeds with a response of that size, 2 when it fails (it must outlive the call).
  static void start_call(mux::Connection& connection, uint32_t size, int& outcome) {
    std::array<std::byte, preamble_bytes> request{};
    const uint32_t flags = 0;
    std::memcpy(request.data(), &size, 4);
    std::memcpy(request.data() + 4, &flags, 4);
    outcome = 0;  // waiting
    mux::call(connection, handler_unary, request, engine::Loop::clock_ns() + 20 * second_ns,
              [&outcome, size](const mux::CallResult& result) {
                outcome = result.error == mux::MuxError::none && result.response.size() == size ? 1 : 2;
              });
  }
  // One unary call of a 16-byte response on `connection`; true when it succeeded.
  bool call(mux::Connection& connection) {
    int outcome = 0;  // 0 waiting, 1 ok, 2 failed
    start_call(connection, 16, outcome);
    loop.run_until([&] { return outcome != 0; }, 20 * second_ns);
    return outcome == 1;
  }
  // The loop the server should place `connection`'s session on, from what its HELLO says.
  static uint32_t owner(const mux::Connection& connection, uint64_t route_key, uint32_t loops) {
    wire::Hello hello;
    hello.session_id = connection.session().session_id();
    hello.route_key = route_key;
    return mux::loop_of_hello(hello, loops);
  }
  void on_connect(Result<int, engine::IoError> fd) noexcept override {
    if (!fd) {
      failed = true;
      return;
    }
    connections.push_back(std::make_unique<mux::Connection>(loop, fd.value(), true, nullptr, *this, options));
    connections.back()->start();
    if (call_on_start) {
      // Its frames go out behind the HELLO, before the server has answered it.
      early_outcomes.emplace_back(0);
      start_call(*connections.back(), 16, early_outcomes.back());
    }
  }
  void on_connection_closed(mux::Connection&, mux::MuxError, engine::IoError) noexcept override { closed++; }

  engine::Loop& loop;
  engine::Connector connector;
  engine::Address target;
  mux::ConnectionOptions options;
  std::vector<std::unique_ptr<mux::Connection>> connections;
  std::size_t closed = 0;
  bool failed = false;
  // Each new session starts a call at once (call_on_start): their outcomes, in dial order
  // (a deque: an outcome stays where it is while its call runs).
  bool call_on_start = false;
  std::deque<int> early_outcomes;
};

std::unique_ptr<LoadServer> start_server(uint32_t loops, std::shared_ptr<mux::Handshake> handshake = nullptr) {
  ServeOptions serve;
  serve.loops = loops;
  serve.handshake = std::move(handshake);
  std::string error;
  auto server = LoadServer::start_ringmux("127.0.0.1:0", {}, error, serve);
  INFO(error);
  REQUIRE(server != nullptr);
  return server;
}

// A chaos proxy in front of the server on `port`: cut_all() breaks every connection.
std::unique_ptr<chaos::Proxy> start_proxy(uint16_t port) {
  chaos::ProxyOptions proxy_options;
  proxy_options.upstream.port = port;
  std::string error;
  auto proxy = chaos::Proxy::start(proxy_options, error);
  INFO(error);
  REQUIRE(proxy != nullptr);
  return proxy;
}

}  // namespace

// Proves that a server of 2 loops serves each session, and the calls on it, on the loop
// its HELLO names: 8 sessions with consecutive route keys (what ringmux-loadgen sends) go
// 4 and 4; 8 without a key are placed by their random session ids, each where
// loop_of_hello says. Every call counts on its session's loop, and loop 0 accepted all 16.
// LoadServer::snapshot() (what serve --metrics exports) gives each loop its own sessions.
TEST_CASE("per-core spread: a server of 2 loops serves each session and its calls on the loop its HELLO names") {
  constexpr uint32_t loops = 2;
  auto server = start_server(loops);
  auto loop = test::make_test_loop();
  if (!loop) return;
  std::array<uint64_t, loops> expected{};
  {
    Clients clients(*loop, server->port());
    for (uint64_t k = 0; k < 8; k++) {
      const uint64_t key = 1 + 2 * k;  // loop_of_route_key skips bit 0: loop k % 2
      mux::Connection& connection = clients.dial(key);
      CHECK(Clients::owner(connection, key, loops) == k % loops);
      expected[Clients::owner(connection, key, loops)]++;
      CHECK(clients.call(connection));
    }
    for (int k = 0; k < 8; k++) {
      mux::Connection& connection = clients.dial(0);
      expected[Clients::owner(connection, 0, loops)]++;
      CHECK(clients.call(connection));
    }
    CHECK(expected[0] >= 4);
    CHECK(expected[1] >= 4);
    const std::vector<ServerCounts> per_loop = server->per_loop();
    REQUIRE(per_loop.size() == loops);
    for (uint32_t i = 0; i < loops; i++) {
      INFO("loop " << i);
      CHECK(per_loop[i].sessions == expected[i]);
      CHECK(per_loop[i].sessions_open == expected[i]);
      CHECK(per_loop[i].connections == expected[i]);
      CHECK(per_loop[i].calls == expected[i]);
      CHECK(per_loop[i].resumes == 0);
    }
    const ServerCounts totals = server->totals();
    CHECK(totals.connections == 16);
    CHECK(totals.sessions == 16);
    CHECK(totals.calls == 16);
    // What ringmux-serve --metrics exports: each loop's own copy of its sessions' counters,
    // taken on that loop.
    const std::vector<LoopSnapshot> snapshots = server->snapshot();
    REQUIRE(snapshots.size() == loops);
    for (uint32_t i = 0; i < loops; i++) {
      INFO("loop " << i);
      CHECK(snapshots[i].link_counted);
      CHECK(snapshots[i].link.connections == expected[i]);
      CHECK(snapshots[i].link.connections_connected == expected[i]);
      CHECK(snapshots[i].link.streams_opened_remote == expected[i]);
      CHECK(snapshots[i].link.frames_received > 0);
      CHECK(snapshots[i].loop.iterations > 0);
    }
  }
  server->stop();
  for (const ServerCounts& each : server->per_loop()) CHECK(each.cpu_ns > 0);  // kept from the stop
}

// Proves that a resumed session lands on the loop that owns it: through a proxy that cuts
// every connection, a session living on loop 1 comes back on a new TCP connection that
// loop 0 accepts and hands over; it resumes there (not a new session), its calls go on,
// and loop 0 still serves only its own session.
TEST_CASE("cross-loop resume: a session living on loop 1 resumes there when loop 0 accepts its new connection") {
  constexpr uint32_t loops = 2;
  auto server = start_server(loops);
  auto proxy = start_proxy(server->port());
  auto loop = test::make_test_loop();
  if (!loop) return;
  {
    Clients clients(*loop, proxy->port());
    mux::Connection& on_one = clients.dial(3);   // (3 >> 1) % 2: loop 1
    mux::Connection& on_zero = clients.dial(1);  // loop 0
    REQUIRE(Clients::owner(on_one, 3, loops) == 1);
    REQUIRE(Clients::owner(on_zero, 1, loops) == 0);
    CHECK(clients.call(on_one));
    CHECK(clients.call(on_zero));
    proxy->cut_all();
    REQUIRE(loop->run_until([&] { return on_one.resume_stats().resumes >= 1 && on_zero.resume_stats().resumes >= 1; },
                            30 * second_ns));
    CHECK(clients.call(on_one));
    CHECK(clients.call(on_zero));
    const std::vector<ServerCounts> per_loop = server->per_loop();
    REQUIRE(per_loop.size() == loops);
    for (uint32_t i = 0; i < loops; i++) {
      INFO("loop " << i);
      CHECK(per_loop[i].sessions == 1);  // the resume did not start a session anywhere
      CHECK(per_loop[i].sessions_open == 1);
      CHECK(per_loop[i].resumes >= 1);
      CHECK(per_loop[i].calls == 2);
    }
    CHECK(server->totals().connections >= 4);  // every one accepted by loop 0
  }
  proxy->stop();
  server->stop();
}

// The TLS stage of the leaf `name` of `pki`, with the record layer moved into the kernel
// after the handshake when `kernel_offload` (and the kernel has kTLS).
std::shared_ptr<mux::Handshake> tls_stage(const test::TestPki& pki, const std::string& name, bool kernel_offload) {
  mux::TlsOptions options = pki.options(name, "ca");
  options.kernel_offload = kernel_offload;
  std::string error;
  std::shared_ptr<const mux::TlsContext> context = mux::TlsContext::create(options, error);
  INFO(error);
  REQUIRE(context != nullptr);
  return mux::make_tls_handshake(std::move(context));
}

// Proves that a TLS server of 2 loops hands each handshaken session (socket and OpenSSL
// state) to the loop its HELLO names, and that a resume over a new TLS connection, whose
// handshake loop 0 runs, lands there too: 4 mutual-TLS sessions with route keys for loops
// 0, 1, 0, 1 through a proxy, each starting a call at once (its frames behind the HELLO,
// read by loop 0 or left in the socket for the owning loop); calls work on each and both
// loops hold 2 sessions; then, with
// a call of a 64 KiB response in flight on each session, the proxy cuts every connection:
// each session resumes over TLS on its own loop (no new session anywhere) and every call in
// flight completes whole. With the record layer in user space (OpenSSL's state moves) and,
// where the kernel has kTLS, in the kernel (only the socket's records are the kernel's).
TEST_CASE("cross-loop resume over TLS: a 2-loop TLS server spreads sessions over both loops and resumes each on its own") {
  constexpr uint32_t loops = 2;
  constexpr uint32_t sessions_per_loop = 2;
  constexpr uint32_t in_flight_bytes = 64 * 1024;
  test::TestPki pki;
  pki.make_ca("ca");
  pki.make_leaf("server", "ca");
  pki.make_leaf("client", "ca");
  std::vector<bool> offloads{false};
  if (mux::tls_kernel_offload_available()) offloads.push_back(true);
  for (const bool offload : offloads) {
    INFO("kernel offload: " << offload);
    auto server = start_server(loops, tls_stage(pki, "server", offload));
    auto proxy = start_proxy(server->port());
    auto loop = test::make_test_loop();
    if (!loop) return;
    {
      Clients clients(*loop, proxy->port(), tls_stage(pki, "client", offload));
      clients.call_on_start = true;
      std::vector<mux::Connection*> sessions;
      for (uint64_t k = 0; k < loops * sessions_per_loop; k++) {
        const uint64_t key = 1 + 2 * k;  // loop_of_route_key skips bit 0: loop k % 2
        mux::Connection& connection = clients.dial(key);
        REQUIRE(Clients::owner(connection, key, loops) == k % loops);
        CHECK(clients.call(connection));
        sessions.push_back(&connection);
      }
      REQUIRE(clients.early_outcomes.size() == sessions.size());
      REQUIRE(loop->run_until(
          [&] { return std::ranges::none_of(clients.early_outcomes, [](int outcome) { return outcome == 0; }); },
          20 * second_ns));
      for (const int outcome : clients.early_outcomes) CHECK(outcome == 1);  // the frames behind the HELLO arrived
      std::vector<ServerCounts> per_loop = server->per_loop();
      REQUIRE(per_loop.size() == loops);
      for (uint32_t i = 0; i < loops; i++) {
        INFO("loop " << i);
        CHECK(per_loop[i].sessions == sessions_per_loop);  // both loops hold sessions
        CHECK(per_loop[i].sessions_open == sessions_per_loop);
        CHECK(per_loop[i].calls == 2 * sessions_per_loop);  // the call at start and one more
      }
      // A call in flight on each session when every connection breaks.
      std::vector<int> outcomes(sessions.size(), 0);
      for (std::size_t s = 0; s < sessions.size(); s++) Clients::start_call(*sessions[s], in_flight_bytes, outcomes[s]);
      loop->run_once(false);  // the requests leave
      proxy->cut_all();
      REQUIRE(loop->run_until(
          [&] {
            for (std::size_t s = 0; s < sessions.size(); s++) {
              if (outcomes[s] == 0 || sessions[s]->resume_stats().resumes == 0) return false;
            }
            return true;
          },
          30 * second_ns));
      for (std::size_t s = 0; s < sessions.size(); s++) {
        INFO("session " << s);
        CHECK(outcomes[s] == 1);  // the call in flight completed whole
        CHECK(clients.call(*sessions[s]));
      }
      per_loop = server->per_loop();
      for (uint32_t i = 0; i < loops; i++) {
        INFO("loop " << i);
        CHECK(per_loop[i].sessions == sessions_per_loop);  // the resumes started no session anywhere
        CHECK(per_loop[i].sessions_open == sessions_per_loop);
        CHECK(per_loop[i].resumes >= sessions_per_loop);  // each resumed on the loop it lived on
        CHECK(per_loop[i].calls == 4 * sessions_per_loop);
      }
      CHECK(server->totals().connections >= 2 * loops * sessions_per_loop);  // every one accepted by loop 0
    }
    proxy->stop();
    server->stop();
  }
}

// Proves that ringmux-loadgen's 4 clones with --cpus_allowed=0,1 --own_connection, run on
// two client loops (one per CPU, each with its clones' connections), all complete their
// calls, and that their connections land 2 and 2 on a server of 2 loops (the route keys
// the clients number their connections with, across client loops).
TEST_CASE("per-core spread: loadgen clones on cpus_allowed=0,1 with own connections fill both server loops") {
  constexpr uint32_t loops = 2;
  auto server = start_server(loops);
  auto parsed = parse_command_line({"--name=spread", "--rw=unary", "--bs=64", "--size=64k", "--iodepth=4",
                                    "--numjobs=4", "--own_connection", "--cpus_allowed=0,1"});
  INFO(parsed.error.message);
  REQUIRE(parsed.ok());
  const Invocation& invocation = *parsed.value;
  REQUIRE(invocation.jobs.size() == 1);
  std::vector<Job> jobs(4, invocation.jobs[0]);
  std::vector<JobResult> results(4);
  std::vector<CloneRun> clones;
  for (uint32_t k = 0; k < 4; k++) {
    jobs[k].name += "." + std::to_string(k);
    results[k].name = jobs[k].name;
    clones.push_back({&jobs[k], &results[k], k, k, 0});
  }
  RunControl control;
  run_clones(clones, RunTarget{"127.0.0.1", server->port()}, nullptr, control);
  for (const JobResult& result : results) {
    INFO(result.name << ": " << result.error_message);
    CHECK(result.errors == 0);
    CHECK(result.ops == 1024);  // 64 KiB of 64-byte calls
  }
  const std::vector<ServerCounts> per_loop = server->per_loop();
  REQUIRE(per_loop.size() == loops);
  for (uint32_t i = 0; i < loops; i++) {
    INFO("loop " << i);
    CHECK(per_loop[i].sessions == 2);
    CHECK(per_loop[i].calls >= 2 * 1024);
  }
  server->stop();
}

}  // namespace ringmux::loadgen
