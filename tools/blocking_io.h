// Blocking-socket helpers of the raw baselines (tools only): whole sends and receives
// that retry EINTR and short transfers. Any thread; each call blocks its caller.
#pragma once

#include <sys/socket.h>

#include <cerrno>
#include <cstddef>

namespace ringmux::tools {

// Sends all `length` bytes (MSG_NOSIGNAL). False when the connection failed.
inline bool send_all(int fd, const std::byte* data, std::size_t length) {
  while (length > 0) {
    const ssize_t n = ::send(fd, data, length, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    length -= static_cast<std::size_t>(n);
  }
  return true;
}

// Receives exactly `length` bytes. False on end of stream or error.
inline bool recv_exact(int fd, std::byte* data, std::size_t length) {
  while (length > 0) {
    const ssize_t n = ::recv(fd, data, length, 0);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return false;
    }
    data += n;
    length -= static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace ringmux::tools
