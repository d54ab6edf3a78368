#include "tools/version.h"

#include <dlfcn.h>
#include <ringmux/version.h>

#include <climits>
#include <cstdio>
#include <cstdlib>

#include "ringmux/base/limits.h"
#include "tools/uring_probe.h"

#if RINGMUX_TOOLS_MIMALLOC
#include <mimalloc.h>
#endif

#ifndef RINGMUX_LIBURING_VERSION
#error "RINGMUX_LIBURING_VERSION must name the liburing version the tools are built against"
#endif

namespace ringmux::tools {

namespace {

// The file that the running process took `symbol` from, as a real path
// ("/usr/lib/x86_64-linux-gnu/liburing.so.2.3"): what was loaded, not what was meant.
std::string file_of(const char* symbol) {
  void* address = dlsym(RTLD_DEFAULT, symbol);
  Dl_info info{};
  if (address == nullptr || dladdr(address, &info) == 0 || info.dli_fname == nullptr) return "unknown";
  char resolved[PATH_MAX];
  if (realpath(info.dli_fname, resolved) != nullptr) return resolved;
  return info.dli_fname;
}

std::string allocator_text() {
  const std::string malloc_file = file_of("malloc");
#if RINGMUX_TOOLS_MIMALLOC
  // mi_version() is MAJOR * 100 + MINOR * 10 + PATCH: 209 for 2.0.9.
  const int version = mi_version();
  return "mimalloc " + std::to_string(version / 100) + "." + std::to_string(version / 10 % 10) + "." +
         std::to_string(version % 10) + " linked; malloc is served from " + malloc_file;
#else
  return "the C library's (built with -Dmimalloc=disabled); malloc is served from " + malloc_file;
#endif
}

std::string wire_text() {
  static_assert(limits::protocol_version_min <= limits::protocol_version_max);
  if (limits::protocol_version_min == limits::protocol_version_max) {
    return "version " + std::to_string(limits::protocol_version_max);
  }
  return "versions " + std::to_string(limits::protocol_version_min) + " to " +
         std::to_string(limits::protocol_version_max);
}

}  // namespace

std::string version_text(std::string_view program) {
  std::string text = std::string(program) + " (ringmux) " RINGMUX_VERSION "\n";
  text += "wire protocol: " + wire_text() + "\n";
  text += "liburing: " RINGMUX_LIBURING_VERSION " at build time; loaded from " + file_of("io_uring_queue_init") + "\n";
  text += "allocator: " + allocator_text() + "\n";
  const UringProbe probe = probe_uring();
  text += "kernel: " + probe.kernel + "\n";
  text += "io_uring features of this kernel, probed now:\n";
  for (const UringFeature& feature : probe.features) {
    char line[160];
    std::snprintf(line, sizeof(line), "  %-22.*s %-8.*s %.*s", static_cast<int>(feature.name.size()),
                  feature.name.data(), static_cast<int>(presence_name(feature.presence).size()),
                  presence_name(feature.presence).data(), static_cast<int>(engine_use_name(feature.use).size()),
                  engine_use_name(feature.use).data());
    text += line;
    if (!feature.detail.empty()) text += "; " + feature.detail;
    text += "\n";
  }
  return text;
}

}  // namespace ringmux::tools
