// A program outside the tree, built only from the installed headers and library through
// `pkg-config --cflags --libs ringmux`: proves the installed package is usable.
#include <ringmux/engine/loop.h>
#include <ringmux/wire/codec.h>

#include <cstdio>

int main() {
  // The frame format, from the installed headers and library.
  std::byte frame[64];
  const auto size = ringmux::wire::encode_ping(frame, 0x5eed);
  ringmux::wire::Decoder decoder;
  auto step = decoder.next(std::span<const std::byte>(frame, size));
  if (!step || !step->has_frame || ringmux::wire::parse_ping(step->frame).value() != 0x5eed) {
    std::printf("consumer: ping did not round-trip\n");
    return 1;
  }
  auto created = ringmux::engine::Loop::create();
  if (!created) {
    std::printf("consumer: skipped: %s\n", ringmux::engine::describe(created.error()));
    return 77;
  }
  auto loop = std::move(created).value();
  bool fired = false;
  ringmux::engine::Timer timer([](ringmux::engine::Timer& t) noexcept { *static_cast<bool*>(t.context()) = true; },
                               &fired);
  const uint64_t start = ringmux::engine::Loop::clock_ns();
  loop->timer_start(timer, 1'000'000);
  if (!loop->run_until([&] { return fired; }, 1'000'000'000)) {
    std::printf("consumer: timer did not fire\n");
    return 1;
  }
  std::printf("consumer: ok, a 1 ms timer fired after %llu us\n",
              static_cast<unsigned long long>((ringmux::engine::Loop::clock_ns() - start) / 1000));
  return 0;
}
