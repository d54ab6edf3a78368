// Nodes spread over an Engine's loops: each pair's session lives on the loop both nodes
// compute, calls and quorum calls from any thread reach it, cut connections resume on the
// same loop, and a session that lands on the wrong loop is refused. The tests that cross
// threads are named "threaded:" so that the ThreadSanitizer run takes them.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "ringmux/engine/engine.h"
#include "ringmux/cluster/node.h"
#include "ringmux/cluster/quorum.h"
#include "ringmux/cluster/caller.h"
#include "ringmux/mux/link/tls.h"
#include "ringmux/mux/workers/threaded.h"
#include "ringmux/wire/codec.h"
#include "tests/mux/support.h"
#include "tests/support.h"
#include "tests/support_tls.h"

using namespace ringmux;
using namespace ringmux::mux;
using namespace ringmux::cluster;
using namespace ringmux::mux::loopback;

namespace {

constexpr uint32_t whoami_handler = 50;  // answers {member index, loop index}
constexpr uint32_t echo_handler = 51;    // answers with the request
constexpr uint32_t loops_per_node = 2;

struct Whoami {
  uint32_t member = UINT32_MAX;
  uint32_t loop = UINT32_MAX;
};

Whoami whoami_of(std::span<const std::byte> response) {
  Whoami who;
  if (response.size() == sizeof(who)) std::memcpy(&who, response.data(), sizeof(who));
  return who;
}

// A cluster member (or client) on its own Engine of two loops.
struct Member {
  std::unique_ptr<engine::Engine> engine;
  std::unique_ptr<Node> node;  // destroyed before its engine
  uint32_t index = 0;

  const engine::Address& self() const { return node->self(); }
};

// Nullptr (and "skipped") without io_uring.
// `handshake`: every session of the node (accepted and dialed) runs it first (TLS).
std::unique_ptr<Member> start_member(uint32_t index, bool client_only = false,
                                     std::shared_ptr<Handshake> handshake = nullptr) {
  engine::EngineOptions engine_options;
  engine_options.loop_count = loops_per_node;
  auto started = engine::Engine::start(engine_options);
  if (!started && started.error() == engine::IoError::not_supported) {
    MESSAGE("skipped: this kernel has no usable io_uring");
    return nullptr;
  }
  REQUIRE(started.ok());
  auto member = std::make_unique<Member>();
  member->engine = std::move(started).value();
  member->index = index;
  ManagerOptions options;
  options.client_only = client_only;
  options.handshake = std::move(handshake);
  auto node = Node::start(*member->engine, engine::Address::loopback_v4(0), options,
                          [index](Registry& registry, uint32_t loop) {
                            registry.add_unary(whoami_handler, [index, loop](std::span<const std::byte>,
                                                                             std::shared_ptr<Responder> responder) {
                              const Whoami who{index, loop};
                              std::byte answer[sizeof(who)];
                              std::memcpy(answer, &who, sizeof(who));
                              responder->reply(answer);
                            });
                            registry.add_unary(echo_handler, [](std::span<const std::byte> request,
                                                                std::shared_ptr<Responder> responder) {
                              responder->reply(request);
                            });
                          });
  REQUIRE(node.ok());
  member->node = std::move(node).value();
  return member;
}

// Three members by `start` (index 0, 1, 2); member 2 is started again until member 0 keeps
// its two peers on different loops (each try succeeds with probability 1/2). Empty (and
// "skipped") without io_uring.
std::vector<std::unique_ptr<Member>> start_spread_trio(const std::function<std::unique_ptr<Member>(uint32_t)>& start) {
  std::vector<std::unique_ptr<Member>> owned;
  for (uint32_t i = 0; i < 2; i++) {
    owned.push_back(start(i));
    if (!owned.back()) return {};
  }
  for (int attempt = 0; attempt < 32; attempt++) {
    owned.push_back(start(2));
    if (owned[0]->node->loop_of(owned[1]->self()) != owned[0]->node->loop_of(owned[2]->self())) break;
    owned.pop_back();
  }
  REQUIRE(owned.size() == 3);
  return owned;
}

// Polls `done` (from this thread) every millisecond for up to `limit`.
bool wait_for(const std::function<bool()>& done, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// Each of `callers` adds every member (but itself) as a peer; waits until every session is
// up (a pair's session comes once both ends know each other).
void join(const std::vector<Member*>& callers, const std::vector<Member*>& members) {
  for (Member* caller : callers) {
    for (Member* member : members) {
      if (member != caller) caller->node->add_peer(member->self());
    }
  }
  REQUIRE(wait_for([&] {
    for (Member* caller : callers) {
      for (Member* member : members) {
        if (member != caller && caller->node->health(member->self()).state != PeerState::connected) return false;
      }
    }
    return true;
  }));
}

void mesh(const std::vector<Member*>& members) { join(members, members); }

// Cuts every TCP connection of this process that has `port` at either end (shutdown: both
// sides see the connection end). Returns how many sockets it cut.
int cut_connections(uint16_t port) {
  int cut = 0;
  DIR* dir = ::opendir("/proc/self/fd");
  REQUIRE(dir != nullptr);
  while (dirent* entry = ::readdir(dir)) {
    const int fd = std::atoi(entry->d_name);
    if (fd <= 2 || fd == ::dirfd(dir)) continue;
    sockaddr_in local{}, remote{};
    socklen_t local_size = sizeof(local), remote_size = sizeof(remote);
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_size) != 0 || local.sin_family != AF_INET) continue;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&remote), &remote_size) != 0) continue;  // listeners
    if (ntohs(local.sin_port) != port && ntohs(remote.sin_port) != port) continue;
    if (::shutdown(fd, SHUT_RDWR) == 0) cut++;
  }
  ::closedir(dir);
  return cut;
}

}  // namespace

// Proves the placement rule is one both nodes compute and that it spreads: over 64
// addresses, loop_of agrees from both ends of every pair and uses both loops.
TEST_CASE("node: the loop of a pair is the same from both nodes and spreads") {
  auto member = start_member(0);
  if (!member) return;
  std::set<uint32_t> used;
  int on_loop_zero = 0;
  for (uint16_t port = 7000; port < 7064; port++) {
    const engine::Address other = engine::Address::loopback_v4(port);
    const uint32_t loop = member->node->loop_of(other);
    CHECK(loop == Manager::loop_of_key(Manager::pair_key(other, member->self()), loops_per_node));
    used.insert(loop);
    on_loop_zero += loop == 0 ? 1 : 0;
  }
  CHECK(used.size() == loops_per_node);
  CHECK(on_loop_zero >= 16);
  CHECK(on_loop_zero <= 48);
}

// Proves sessions spread over the loops: 3 members of 2 loops each, every pair's session on
// the loop loop_of() names at both ends (the handler answering a call says which loop it
// ran on, the caller's callback runs on the caller's owning loop), member 0's two peers on
// different loops; then 4 application threads make calls and quorum calls through member
// 0 (ThreadSanitizer run), every answer from the member it was sent to.
TEST_CASE("threaded: node: each pair's session lives on the loop both nodes compute") {
  // A quorum call over member 0's two peers spans both loops.
  std::vector<std::unique_ptr<Member>> owned = start_spread_trio([](uint32_t index) { return start_member(index); });
  if (owned.empty()) return;
  std::vector<Member*> members;
  for (auto& m : owned) members.push_back(m.get());
  mesh(members);

  for (Member* a : members) {
    std::vector<std::size_t> expected(loops_per_node);
    for (Member* b : members) {
      if (b != a) expected[a->node->loop_of(b->self())]++;
    }
    CHECK(a->node->sessions_per_loop() == expected);
    CHECK(a->node->stats().sessions == 2);
    // Each pair's first session was the one: none was refused for landing on a wrong loop.
    for (Member* b : members) {
      if (b != a) CHECK(a->node->health(b->self()).sessions == 1);
    }
  }

  ClusterCaller caller(*members[0]->node);
  for (Member* a : members) {
    ClusterCaller from(*a->node);
    for (Member* b : members) {
      if (a == b) continue;
      const CallOutcome outcome = from.call(b->self(), whoami_handler, {}, Loop::clock_ns() + 5 * second_ns);
      REQUIRE(outcome.error == MuxError::none);
      const Whoami who = whoami_of(outcome.response);
      CHECK(who.member == b->index);
      CHECK(who.loop == b->node->loop_of(a->self()));  // served on the loop b keeps a on
      // An asynchronous call's callback runs on the caller's loop for b.
      std::atomic<int> on_owner{-1};
      a->node->call(b->self(), whoami_handler, {}, Loop::clock_ns() + 5 * second_ns, [&, a, b](const CallResult& r) {
        const bool owner = a->node->engine().loop(a->node->loop_of(b->self())).on_loop_thread();
        on_owner.store(r.error == MuxError::none && owner ? 1 : 0);
      });
      REQUIRE(wait_for([&] { return on_owner.load() >= 0; }));
      CHECK(on_owner.load() == 1);
    }
  }

  const Configuration configuration{members[1]->self(), members[2]->self()};
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; i++) {
        const bool to_one = (i + t) % 2 == 0;
        const CallOutcome outcome =
            caller.call(to_one ? members[1]->self() : members[2]->self(), whoami_handler, {}, Loop::clock_ns() + 10 * second_ns);
        if (outcome.error != MuxError::none || whoami_of(outcome.response).member != (to_one ? 1u : 2u)) wrong.fetch_add(1);
        if (i % 4 != 0) continue;
        const QuorumResult quorum =
            caller.quorum_call(configuration, whoami_handler, {}, quorum::all(), Loop::clock_ns() + 10 * second_ns);
        if (quorum.error != MuxError::none || quorum.replies.size() != 2) {
          wrong.fetch_add(1);
          continue;
        }
        for (const QuorumReply& reply : quorum.replies) {
          if (whoami_of(reply.response).member != reply.peer + 1) wrong.fetch_add(1);
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  CHECK(wrong.load() == 0);

  // Per-peer requests over the two loops: each peer answers its own request.
  auto request_of = [](std::size_t i) {
    const std::string text = "request for peer " + std::to_string(i);
    const auto* data = reinterpret_cast<const std::byte*>(text.data());
    return std::vector<std::byte>(data, data + text.size());
  };
  std::atomic<bool> finished{false};
  QuorumResult per_peer;
  quorum_call(*members[0]->node, configuration, echo_handler, PerPeerRequest(request_of), quorum::all(),
              Loop::clock_ns() + 5 * second_ns, [&](const QuorumResult& r) {
                per_peer = r;
                finished.store(true);
              });
  REQUIRE(wait_for([&] { return finished.load(); }));
  CHECK(per_peer.error == MuxError::none);
  REQUIRE(per_peer.replies.size() == 2);
  for (const QuorumReply& reply : per_peer.replies) CHECK(reply.response == request_of(reply.peer));
}

// Proves a cut TCP connection resumes on the loop that owns the session: two members and a
// client of the cluster (no route key: its sessions are placed by session id), calls from
// two application threads all the while; each of 5 rounds cuts every connection of both
// members. Every call is answered, the sessions are the same ones (resumed, not new), and
// each stays on its loop.
TEST_CASE("threaded: node: cut connections resume on the loop that owns the session") {
  auto first = start_member(0);
  if (!first) return;
  auto second = start_member(1);
  auto client = start_member(9, true);
  REQUIRE(second);
  REQUIRE(client);
  mesh({first.get(), second.get()});
  join({client.get()}, {first.get(), second.get()});
  const std::vector<std::size_t> first_loops = first->node->sessions_per_loop();
  const std::vector<std::size_t> second_loops = second->node->sessions_per_loop();

  std::atomic<bool> stop{false};
  std::atomic<int> failed{0};
  std::atomic<int> answered{0};
  auto calls = [&](Member& from, std::vector<Member*> to) {
    ClusterCaller caller(*from.node);
    for (int i = 0; i < 100'000 && !stop.load(); i++) {
      Member& target = *to[static_cast<std::size_t>(i) % to.size()];
      const CallOutcome outcome = caller.call(target.self(), whoami_handler, {}, Loop::clock_ns() + 10 * second_ns);
      if (outcome.error != MuxError::none || whoami_of(outcome.response).member != target.index) {
        failed.fetch_add(1);
        MESSAGE("call failed: " << describe(outcome.error) << " " << outcome.message);
      }
      answered.fetch_add(1);
    }
  };
  std::thread member_calls(calls, std::ref(*first), std::vector<Member*>{second.get()});
  std::thread client_calls(calls, std::ref(*client), std::vector<Member*>{first.get(), second.get()});

  constexpr int rounds = 5;
  for (int round = 0; round < rounds; round++) {
    const uint64_t resumes_before = first->node->stats().resumes + second->node->stats().resumes;
    const int before = answered.load();
    REQUIRE(wait_for([&] { return answered.load() >= before + 50; }));  // calls in flight
    // Three connections: the members' own and the client's to each. At least one end of
    // each is cut (the other end may be closed by its loop, having seen the cut, before the
    // scan reaches it).
    CHECK(cut_connections(first->self().port()) + cut_connections(second->self().port()) >= 3);
    // Each member counts the resumes of its sessions: the pair's at both, the client's at one.
    CHECK(wait_for([&] { return first->node->stats().resumes + second->node->stats().resumes >= resumes_before + 4; }));
  }
  const int before = answered.load();
  CHECK(wait_for([&] { return answered.load() >= before + 100; }));  // still going after the last cut
  stop.store(true);
  member_calls.join();
  client_calls.join();
  CHECK(failed.load() == 0);
  CHECK(first->node->health(second->self()).sessions == 1);  // the same session throughout
  CHECK(first->node->health(second->self()).resumes >= rounds);
  CHECK(client->node->health(first->self()).sessions == 1);
  CHECK(first->node->sessions_per_loop() == first_loops);
  CHECK(second->node->sessions_per_loop() == second_loops);
  MESSAGE(answered.load() << " calls answered through " << rounds << " cuts; resumes: "
                          << first->node->stats().resumes << " + " << second->node->stats().resumes);
}

// Proves that a node with a handshake stage (mutual TLS) spreads its peer sessions over its
// loops as a plain one does: the accepting node's loop 0 runs each handshake and hands the
// transport to the loop the pair's key names. Three members over TLS: each pair's session
// lives on the loop both nodes compute, the first session of each pair was the one, calls
// are served on that loop; a cut connection resumes over TLS there (the same session).
TEST_CASE("threaded: node: over mutual TLS each pair's session lives on the loop both nodes compute") {
  test::TestPki pki;
  pki.make_ca("ca");
  auto tls_member = [&](uint32_t index) {
    std::string error;
    auto context = TlsContext::create(pki.make_leaf("node-" + std::to_string(index), "ca"), error);
    REQUIRE_MESSAGE(context != nullptr, error);
    return start_member(index, false, make_tls_handshake(std::move(context)));
  };
  std::vector<std::unique_ptr<Member>> owned = start_spread_trio(tls_member);
  if (owned.empty()) return;
  std::vector<Member*> members;
  for (auto& m : owned) members.push_back(m.get());
  mesh(members);
  auto check_placement = [&] {
    for (Member* a : members) {
      std::vector<std::size_t> expected(loops_per_node);
      for (Member* b : members) {
        if (b != a) expected[a->node->loop_of(b->self())]++;
      }
      CHECK(a->node->sessions_per_loop() == expected);
      ClusterCaller from(*a->node);
      for (Member* b : members) {
        if (a == b) continue;
        CHECK(a->node->health(b->self()).sessions == 1);  // none refused for a wrong loop, none new
        const CallOutcome outcome = from.call(b->self(), whoami_handler, {}, Loop::clock_ns() + 10 * second_ns);
        REQUIRE(outcome.error == MuxError::none);
        CHECK(whoami_of(outcome.response).member == b->index);
        CHECK(whoami_of(outcome.response).loop == b->node->loop_of(a->self()));  // served on its loop
      }
    }
  };
  check_placement();
  CHECK(members[0]->node->sessions_per_loop() == std::vector<std::size_t>{1, 1});  // both loops used
  // Every pair's connection is cut (each runs to one member's listening port); both ends of
  // each pair count its resume.
  auto resumes = [&] {
    uint64_t total = 0;
    for (Member* m : members) total += m->node->stats().resumes;
    return total;
  };
  const uint64_t resumes_before = resumes();
  int cut = 0;
  for (Member* m : members) cut += cut_connections(m->self().port());
  CHECK(cut >= 3);
  CHECK(wait_for([&] { return resumes() >= resumes_before + 6; }, std::chrono::seconds(20)));
  check_placement();
}

namespace {

// A bare dialer for the misplacement test.
struct Observer final : ConnectionObserver {
  void on_connection_closed(Connection&, MuxError error_ref, engine::IoError) noexcept override {
    closed = true;
    error = error_ref;
  }
  bool closed = false;
  MuxError error = MuxError::none;
};

}  // namespace

// Proves a session that lands on a loop not owning its peer is refused: a dialer sends a
// route key for one loop and identifies as a node another loop owns; the member closes the
// session instead of filing it where the node's calls would never look.
TEST_CASE("node: a session that identifies as another loop's peer is refused") {
  auto member = start_member(0);
  if (!member) return;
  auto loop = ringmux::test::make_test_loop();
  if (!loop) return;
  const engine::Address claimed = engine::Address::loopback_v4(7001);
  const uint32_t owner = member->node->loop_of(claimed);
  // Connect (blocking is fine: the member's loops accept on their own threads).
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(member->self().port());
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)) == 0);
  Observer observer;
  ConnectionOptions options;
  options.resume = true;
  options.peer = member->self();
  options.session.route_key = (uint64_t{1 - owner} << 1) | 1;  // a key of the other loop
  REQUIRE(Manager::loop_of_key(options.session.route_key, loops_per_node) != owner);
  Connection connection(*loop, fd, true, nullptr, observer, options);
  connection.start();
  const std::string name = claimed.to_string();
  std::optional<MuxError> identified;
  mux::call(connection, manager_identify_handler,
                  std::span<const std::byte>(reinterpret_cast<const std::byte*>(name.data()), name.size()), 0,
                  [&](const CallResult& r) { identified = r.error; });
  CHECK(loop->run_until([&] { return observer.closed; }, 5 * second_ns));
  // The member's close reached us (its ERROR, or the refusal of our resume once it was gone).
  INFO("closed with " << describe(observer.error));
  CHECK((observer.error == MuxError::peer_error || observer.error == MuxError::session_lost));
  CHECK(identified.has_value());
  CHECK(identified != MuxError::none);  // not answered "ok": refused
  const std::vector<std::size_t> none(loops_per_node, 0);
  CHECK(member->node->sessions_per_loop() == none);
  if (!connection.closed()) {
    connection.close();
    loop->run_until([&] { return connection.closed(); }, 5 * second_ns);
  }
}

// Proves what a dialer puts in its HELLO: a member the pair's key (so the accepting node's
// listening loop can hand the socket to the loop that owns the pair), a client of the
// cluster no key (its sessions are placed by session id). The "peer" is a plain socket
// here, listening where the member is the dialing side of the pair, reading the HELLO.
TEST_CASE("node: a member's HELLO carries the pair's route key, a client's none") {
  for (const bool client_only : {false, true}) {
    CAPTURE(client_only);
    auto member = start_member(0, client_only);
    if (!member) return;
    int listener = -1;
    engine::Address where;
    for (int attempt = 0; attempt < 32 && listener < 0; attempt++) {
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      REQUIRE(fd >= 0);
      sockaddr_in address{};
      address.sin_family = AF_INET;
      address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      socklen_t size = sizeof(address);
      REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
      REQUIRE(::listen(fd, 4) == 0);
      REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) == 0);
      where = engine::Address::loopback_v4(ntohs(address.sin_port));
      if (client_only || Manager::dials(member->self(), where)) {
        listener = fd;  // the member dials this one
      } else {
        ::close(fd);
      }
    }
    REQUIRE(listener >= 0);
    member->node->add_peer(where);
    timeval timeout{5, 0};
    const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    REQUIRE(fd >= 0);
    REQUIRE(::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) == 0);
    // Every HELLO now announces the dialer's windows (SPEC §4.1), so it carries the route
    // key field whether it has a key (a member) or not (0: a client).
    std::vector<std::byte> frame(wire::frame_bytes(wire::hello_window_payload_bytes));
    const std::size_t expected = frame.size();
    std::size_t have = 0;
    while (have < expected) {
      const ssize_t got = ::recv(fd, frame.data() + have, expected - have, 0);
      REQUIRE(got > 0);
      have += static_cast<std::size_t>(got);
    }
    wire::Decoder decoder(limits::hello_payload_bytes_max);
    auto step = decoder.next(std::span<const std::byte>(frame.data(), have));
    REQUIRE(step.ok());
    REQUIRE(step->has_frame);
    auto hello = wire::parse_hello(step->frame);
    REQUIRE(hello.ok());
    CHECK(hello->route_key == (client_only ? 0 : Manager::pair_key(member->self(), where)));
    member->node->remove_peer(where);
    ::close(fd);
    ::close(listener);
  }
}
