// Application threads against a connection that lives on an engine loop: blocking and
// asynchronous unary calls from several threads (worker streams: test_worker_stream.cpp).
// Run under ThreadSanitizer (tests/run.sh tsan).
#include "ringmux/mux/workers/threaded.h"

#include <doctest/doctest.h>

#include <atomic>
#include <cstring>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "tests/mux/workers/harness.h"

using namespace ringmux;
using namespace ringmux::mux;
using engine::Loop;

using namespace ringmux::mux::threaded_test;

// Proves blocking calls from 4 threads at once each get their own response, and async
// calls complete too; the connection is only ever touched on its loop.
TEST_CASE("threaded: blocking and async unary calls from 4 threads") {
  Harness h;
  RemoteCaller caller(*h.side->client);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; i++) {
        const int tag = t * 100000 + i;
        std::byte request[sizeof(tag)];
        std::memcpy(request, &tag, sizeof(tag));
        CallOutcome outcome = caller.call(echo_unary, request, Loop::clock_ns() + 10'000'000'000ull);
        int echoed = -1;
        if (outcome.error == MuxError::none && outcome.response.size() == sizeof(tag)) {
          std::memcpy(&echoed, outcome.response.data(), sizeof(echoed));
        }
        if (echoed != tag) wrong.fetch_add(1);
      }
    });
  }
  std::atomic<int> async_done{0};
  for (int i = 0; i < 1000; i++) {
    caller.call_async(echo_unary, std::vector<std::byte>(16, std::byte{1}), 0, [&](const CallResult& r) {
      if (r.error == MuxError::none && r.response.size() == 16) async_done.fetch_add(1);
    });
  }
  for (auto& thread : threads) thread.join();
  for (int i = 0; i < 10000 && async_done.load() < 1000; i++) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  CHECK(wrong.load() == 0);
  CHECK(async_done.load() == 1000);
}
