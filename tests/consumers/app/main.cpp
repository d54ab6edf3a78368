// An application of ringmux, built three ways by the tests against the package as users
// get it: with pkg-config from an install (check_install.sh), as a meson subproject
// (check_subproject.sh) and with CMake's find_package from an install (check_install.sh).
// It proves that:
//   - <ringmux/...> reaches every header, and the headers reach each other without
//     the application's own engine/errors.h (this directory's), which is on the include
//     path first;
//   - <ringmux/version.h> gives the version the package says (EXPECTED_VERSION);
//   - linking ringmux leaves the application's malloc alone, and the ringmux-mimalloc
//     opt-in (EXPECT_MIMALLOC=1) makes it mimalloc's;
//   - the library works: a frame round-trips, and a loop fires a timer (exit 77 where
//     this kernel has no io_uring).
#include <ringmux/cluster/node.h>
#include <ringmux/engine/loop.h>
#include <ringmux/mux/link/connection.h>
#include <ringmux/version.h>
#include <ringmux/wire/codec.h>

#ifdef CONSUMER_OWN_ENGINE_ERRORS_H
#error "a ringmux header included the application's engine/errors.h"
#endif
#include "engine/errors.h"  // the application's, from its own include path

#include <dlfcn.h>

#include <cstdio>
#include <cstring>

#ifndef EXPECTED_VERSION
#error "EXPECTED_VERSION must name the version of the package built against"
#endif
#ifndef EXPECT_MIMALLOC
#define EXPECT_MIMALLOC 0
#endif

static_assert(RINGMUX_VERSION_NUMBER ==
              RINGMUX_VERSION_MAJOR * 10000 + RINGMUX_VERSION_MINOR * 100 + RINGMUX_VERSION_PATCH);

int main() {
  static_assert(consumer::engine::Error::none != consumer::engine::Error::disk_full);
  if (std::strcmp(RINGMUX_VERSION, EXPECTED_VERSION) != 0) {
    std::printf("consumer: RINGMUX_VERSION is %s, the package says %s\n", RINGMUX_VERSION, EXPECTED_VERSION);
    return 1;
  }
  // Which library the process's malloc comes from.
  Dl_info info{};
  if (dladdr(dlsym(RTLD_DEFAULT, "malloc"), &info) == 0 || info.dli_fname == nullptr) {
    std::printf("consumer: cannot tell where malloc comes from\n");
    return 1;
  }
  const bool mimalloc = std::strstr(info.dli_fname, "mimalloc") != nullptr;
  if (mimalloc != (EXPECT_MIMALLOC != 0)) {
    std::printf("consumer: malloc comes from %s, expected %s\n", info.dli_fname,
                EXPECT_MIMALLOC ? "mimalloc (ringmux-mimalloc)" : "the C library (plain ringmux)");
    return 1;
  }

  std::byte frame[64];
  const auto size = ringmux::wire::encode_ping(frame, 0x5eed);
  ringmux::wire::Decoder decoder;
  auto step = decoder.next(std::span<const std::byte>(frame, size));
  if (!step || !step->has_frame || ringmux::wire::parse_ping(step->frame).value() != 0x5eed) {
    std::printf("consumer: a ping did not round-trip\n");
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
  loop->timer_start(timer, 1'000'000);
  if (!loop->run_until([&] { return fired; }, 1'000'000'000)) {
    std::printf("consumer: a 1 ms timer did not fire\n");
    return 1;
  }
  std::printf("consumer: ok: ringmux %s, its own engine/errors.h kept apart, malloc from %s, a timer fired\n",
              RINGMUX_VERSION, info.dli_fname);
  return 0;
}
