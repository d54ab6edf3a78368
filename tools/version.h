// What every tool prints for --version: its version and the project's, the wire protocol
// versions it speaks, the liburing it was built with and the one it loaded, the allocator
// that serves its malloc, the kernel, and this kernel's io_uring features as probed now
// (tools/uring_probe.h). One implementation for all the tools. Any thread; the probe takes
// a few milliseconds (at most about a second on a stalled machine).
#pragma once

#include <string>
#include <string_view>

namespace ringmux::tools {

// The text, ending in a newline. `program` is the tool's name ("ringmux-serve").
std::string version_text(std::string_view program);

// The -h/--help and --version entries of every tool's --help, in the OPTIONS layout that
// the man pages share (tests/check_man.py).
inline constexpr const char* help_version_options =
    "    -h, --help\n"
    "        Print this text and exit.\n"
    "    --version\n"
    "        Print the versions (ringmux, wire protocol, liburing), the allocator and this\n"
    "        kernel's io_uring features as probed now, and exit.\n";

}  // namespace ringmux::tools
