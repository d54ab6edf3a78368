// errno as a person reads it in an error message: "Address already in use (EADDRINUSE)".
// The tools' one way of naming an OS error. Any thread.
#pragma once

#include <cstring>
#include <string>

namespace ringmux::tools {

// strerror's text and the errno's name; a number the C library does not know keeps its
// number ("Unknown error 4242").
inline std::string errno_text(int error) {
  std::string text = std::strerror(error);
  if (const char* name = strerrorname_np(error)) text += std::string(" (") + name + ")";
  return text;
}

}  // namespace ringmux::tools
