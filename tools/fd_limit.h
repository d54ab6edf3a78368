// The file descriptor limit of the tools (RLIMIT_NOFILE). A tool raises its soft limit to
// the hard limit at start: the usual soft default of 1024 would stop a server at about a
// thousand connections (ringmux-serve is meant to hold 10,000 idle ones) while the hard
// limit is commonly far higher. Call from main() before other threads start.
#pragma once

#include <sys/resource.h>

#include <cstdint>
#include <string>

namespace ringmux::tools {

// Descriptors a tool keeps for itself besides its connections: io_uring rings and their
// eventfds per loop, stdio, listeners, a plot or job file, the kernel's own. 64 covers a
// node of several loops with room to spare.
inline constexpr uint64_t fds_reserved = 64;

struct FdLimit {
  uint64_t soft = 0;
  uint64_t hard = 0;
  // Connections that fit: what the reserve leaves.
  uint64_t connections() const noexcept { return soft > fds_reserved ? soft - fds_reserved : 0; }
};

// Raises the soft limit to the hard limit (where setrlimit refuses, the soft limit stays);
// returns the limits in force afterwards. RLIM_INFINITY reads as UINT64_MAX.
inline FdLimit raise_fd_limit() noexcept {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return {};
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  return {static_cast<uint64_t>(limit.rlim_cur), static_cast<uint64_t>(limit.rlim_max)};
}

// What to say when `connections` do not fit `limit`; "" when they do.
inline std::string fd_shortfall(uint64_t connections, const FdLimit& limit) {
  if (connections <= limit.connections()) return "";
  return std::to_string(connections) + " connections need about " + std::to_string(connections + fds_reserved) +
         " file descriptors, but the limit is " + std::to_string(limit.soft) + " (hard limit " +
         std::to_string(limit.hard) + "): raise it (ulimit -n; the hard limit with ulimit -Hn as root or in " +
         "/etc/security/limits.conf)";
}

}  // namespace ringmux::tools
