// The shapes of the tools' command lines that every tool words the same way: which
// options take a value, and the errors that name an option and what it accepts. Pure
// functions: any thread.
#pragma once

#include <span>
#include <string>
#include <string_view>

namespace ringmux::tools {

// An option written --key=VALUE, with the syntax its "needs a value" error shows.
struct ValueOption {
  std::string_view key;     // "--listen"
  std::string_view syntax;  // "ADDRESS:PORT"
};

// "" when `key` is one of `options`, written with a value; otherwise the error that says
// which it is: "unknown option '--frobnicate' (see --help)", or "option '--listen' needs
// a value (--listen=ADDRESS:PORT)".
inline std::string option_shape_error(std::span<const ValueOption> options, std::string_view key, bool has_value) {
  for (const ValueOption& option : options) {
    if (option.key != key) continue;
    if (has_value) return "";
    return "option '" + std::string(key) + "' needs a value (" + std::string(key) + "=" + std::string(option.syntax) +
           ")";
  }
  return "unknown option '" + std::string(key) + "' (see --help)";
}

// "option '--latency': '5parsecs' is not a duration (e.g. 100ms, 50us, 2s)".
inline std::string option_error(std::string_view key, std::string_view value, std::string_view expected) {
  return "option '" + std::string(key) + "': '" + std::string(value) + "' is not " + std::string(expected);
}

}  // namespace ringmux::tools
