// Ordered handlers (Registry::add_unary_ordered): arrival order, release(), unordered
// handlers never held back, and the nested-call self-deadlock reported instead of hung.
#include <doctest/doctest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "ringmux/mux/link/connection.h"
#include "ringmux/mux/rpc/order_gate.h"
#include "tests/mux/support.h"
#include "tests/support.h"

using namespace ringmux;
using namespace ringmux::mux;
using namespace ringmux::mux::loopback;

namespace {

constexpr uint32_t ordered_handler = 10;
constexpr uint32_t unordered_handler = 11;

std::vector<std::byte> index_request(uint32_t index) {
  std::vector<std::byte> request(sizeof(index));
  std::memcpy(request.data(), &index, sizeof(index));
  return request;
}

uint32_t index_of(std::span<const std::byte> request) {
  uint32_t index = UINT32_MAX;
  if (request.size() == sizeof(index)) std::memcpy(&index, request.data(), sizeof(index));
  return index;
}

}  // namespace

// Proves ordered requests start in arrival order, one at a time: 10,000 calls pipelined 64
// deep, every 100th held (answered 1 ms later by a timer; the first once an unordered call
// made meanwhile has been answered) so that later ones arrive while it runs; they start
// only after it replied. An unordered call made while an ordered one is held completes.
TEST_CASE("ordered: 10,000 requests start in arrival order, one at a time") {
  auto loop = ringmux::test::make_test_loop();
  if (!loop) return;
  ConnectionOptions options;
  Server server(*loop, options);
  std::vector<uint32_t> started;
  // The held request and the count of handlers running (started, not yet replied).
  struct Held {
    std::shared_ptr<Responder> responder;
    int running = 0;
    int running_max = 0;
  } state;
  engine::Timer answer_later([](engine::Timer& timer) noexcept {
    auto& held = *static_cast<Held*>(timer.context());
    held.running--;
    held.responder->reply({});
    held.responder.reset();
  }, &state);
  std::shared_ptr<Responder>& held = state.responder;
  server.registry.add_unary_ordered(ordered_handler, [&](std::span<const std::byte> request,
                                                         std::shared_ptr<Responder> responder) {
    started.push_back(index_of(request));
    state.running++;
    state.running_max = std::max(state.running_max, state.running);
    if (started.size() % 100 == 1) {  // held: the next ones must wait for it
      held = std::move(responder);
      // The first is released when the unordered call below has been answered (an event:
      // on a loaded machine that round trip may take longer than any fixed hold).
      if (started.size() > 1) loop->timer_start(answer_later, 1 * ms_ns);
      return;
    }
    state.running--;
    responder->reply({});
  });
  int unordered_done_while_held = 0;
  server.registry.add_unary(unordered_handler, [&](std::span<const std::byte>, std::shared_ptr<Responder> responder) {
    responder->reply({});
  });
  Client client(*loop, server.port(), options);
  constexpr uint32_t total = 10'000;
  uint32_t issued = 0, done = 0, errors = 0;
  std::function<void()> pump = [&] {
    while (issued < total && issued - done < 64) {
      call(*client.connection, ordered_handler, index_request(issued++), 0, [&](const CallResult& result) {
        done++;
        if (result.error != MuxError::none) errors++;
        pump();
      });
    }
  };
  pump();
  // While the first request is held, an unordered call is not held back.
  REQUIRE(loop->run_until([&] { return held != nullptr; }, 5 * second_ns));
  call(*client.connection, unordered_handler, {}, 0, [&](const CallResult& result) {
    if (result.error == MuxError::none && held != nullptr) unordered_done_while_held++;
    loop->timer_start(answer_later, 0);
  });
  REQUIRE(loop->run_until([&] { return done == total; }, 60 * second_ns));
  CHECK(errors == 0);
  CHECK(unordered_done_while_held == 1);
  REQUIRE(started.size() == total);
  bool in_order = true;
  for (uint32_t i = 0; i < total; i++) in_order &= started[i] == i;
  CHECK(in_order);
  CHECK(state.running_max == 1);
  CHECK(ordered_waiting(*server.connections[0]) == 0);
  loop->timer_cancel(answer_later);
  client.connection->close();
  loop->run_until([&] { return client.closed; }, 5 * second_ns);
  server.shut_down();
}

// Proves release() lets the next ordered request start while the first is still running
// (it has not replied), and that without it the next waits for the reply. Handlers keep
// their responders and reply only when the test says so.
TEST_CASE("ordered: release() lets the next start while the first still runs; without it the next waits") {
  for (const bool release : {true, false}) {
    CAPTURE(release);
    auto loop = ringmux::test::make_test_loop();
    if (!loop) return;
    ConnectionOptions options;
    Server server(*loop, options);
    std::vector<uint32_t> started;
    std::vector<std::shared_ptr<Responder>> running;
    server.registry.add_unary_ordered(ordered_handler, [&](std::span<const std::byte> request,
                                                           std::shared_ptr<Responder> responder) {
      started.push_back(index_of(request));
      if (release) {
        responder->release();
        responder->release();  // idempotent: a second call changes nothing
      }
      running.push_back(std::move(responder));
    });
    Client client(*loop, server.port(), options);
    int done = 0;
    for (uint32_t i = 0; i < 3; i++) {
      call(*client.connection, ordered_handler, index_request(i), 0, [&](const CallResult& r) {
        if (r.error == MuxError::none) done++;
      });
    }
    if (release) {
      // Each handler released at once without replying: all three start, none replied.
      REQUIRE(loop->run_until([&] { return started.size() == 3; }, 5 * second_ns));
      CHECK(started == std::vector<uint32_t>{0, 1, 2});
      CHECK(done == 0);
      for (auto& responder : running) responder->reply({});
    } else {
      REQUIRE(loop->run_until([&] { return !started.empty(); }, 5 * second_ns));
      loop->run_until([] { return false; }, 20 * ms_ns);  // time for the others to arrive
      CHECK(started.size() == 1);
      CHECK(ordered_waiting(*server.connections[0]) == 2);
      for (uint32_t next = 1; next <= 3; next++) {
        running[next - 1]->reply({});
        if (next < 3) CHECK(loop->run_until([&] { return started.size() == next + 1; }, 5 * second_ns));
      }
      CHECK(started == std::vector<uint32_t>{0, 1, 2});
    }
    CHECK(loop->run_until([&] { return done == 3; }, 5 * second_ns));
    client.connection->close();
    loop->run_until([&] { return client.closed; }, 5 * second_ns);
    server.shut_down();
  }
}

// Proves the nested-call self-deadlock is reported, not hung: the server's ordered handler
// calls the client over the same session while holding the order; the client's handler
// calls the server's ordered handler back; that request fails at once with the
// re-entry error, the client's handler passes the error on, and the first call completes.
TEST_CASE("ordered: a nested call that comes back to the held order fails instead of hanging") {
  auto loop = ringmux::test::make_test_loop();
  if (!loop) return;
  ConnectionOptions options;
  Server server(*loop, options);
  constexpr uint32_t client_handler = 20;
  Registry client_registry;
  Connection* client_connection = nullptr;
  // The client's handler: calls the server's ordered handler back and answers with what
  // that call said.
  client_registry.add_unary(client_handler, [&](std::span<const std::byte>, std::shared_ptr<Responder> responder) {
    call(*client_connection, ordered_handler, index_request(99), Loop::clock_ns() + 10 * second_ns,
                            [responder](const CallResult& result) {
                              const std::string said = result.error == MuxError::none ? "ok" : result.message;
                              responder->reply(bytes_of(said));
                            });
  });
  // The server's ordered handler: a nested call to the client while holding the order.
  server.registry.add_unary_ordered(ordered_handler, [&](std::span<const std::byte> request,
                                                         std::shared_ptr<Responder> responder) {
    if (index_of(request) == 99) {
      responder->reply(bytes_of("re-entered and served"));  // reached only without detection
      return;
    }
    call(*server.connections[0], client_handler, {}, Loop::clock_ns() + 10 * second_ns,
                                [responder](const CallResult& result) { responder->reply(result.response); });
  });
  Client client(*loop, server.port(), options, &client_registry);
  client_connection = client.connection.get();
  std::string answer;
  bool done = false;
  const uint64_t started = Loop::clock_ns();
  call(*client.connection, ordered_handler, index_request(1), Loop::clock_ns() + 10 * second_ns,
                          [&](const CallResult& result) {
                            done = true;
                            answer.assign(reinterpret_cast<const char*>(result.response.data()), result.response.size());
                          });
  REQUIRE(loop->run_until([&] { return done; }, 15 * second_ns));
  MESSAGE("the first call completed after " << (Loop::clock_ns() - started) / 1000 << " us: \"" << answer << "\"");
  CHECK(answer.find("ordered handler re-entered") != std::string::npos);
  CHECK(Loop::clock_ns() - started < second_ns);  // reported at once, not at a deadline
  client.connection->close();
  loop->run_until([&] { return client.closed; }, 5 * second_ns);
  server.shut_down();
}
