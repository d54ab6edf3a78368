// A fixture for check_no_sleep.sh (never built): a wait in sleep slices, the pattern the
// check must reject.
#include <atomic>
#include <chrono>
#include <thread>

void wait_for_data(const std::atomic<bool>& ready) {
  while (!ready.load()) std::this_thread::sleep_for(std::chrono::microseconds(20));
}
