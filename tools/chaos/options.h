// The command line of ringmux-chaos: parsing into ProxyOptions plus the program's own
// settings, and the --help text. Errors are values that name the option, so that tests
// check each one. Pure functions: any thread.
//
// Direction scheme: --direction=both|up|down sets the direction of the per-direction
// faults that follow it on the command line (default both). --reset-every and
// --cut-every act on whole pairs and ignore it. A fault given again for a direction
// replaces its earlier value.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tools/chaos/proxy.h"

namespace ringmux::chaos {

enum class StatsFormat : uint8_t { none, text, json };

struct CommandLine {
  ProxyOptions proxy;
  std::optional<uint64_t> seed;  // none: the program takes one from the clock
  uint64_t duration_ns = 0;      // 0: until SIGINT or SIGTERM
  StatsFormat stats = StatsFormat::none;
  bool help = false;
  bool version = false;  // --version: print tools/version.h's text and exit
};

struct ParsedCommandLine {
  std::optional<CommandLine> value;
  std::string error;  // "option '--latency': '5parsecs' is not a duration (e.g. 100ms, 50us, 2s)"
  bool ok() const noexcept { return value.has_value(); }
};

// "A.B.C.D:PORT" with an IPv4 address; port 0 only when `port_zero_allowed`.
std::optional<Endpoint> parse_endpoint(std::string_view text, bool port_zero_allowed);

// "MIN-MAX" byte counts (k/m suffixes allowed), 1 <= MIN <= MAX <= slice_bytes_max.
std::optional<std::pair<uint32_t, uint32_t>> parse_slice(std::string_view text);

// A probability in [0, 1]: "0.01", "1e-6".
std::optional<double> parse_probability(std::string_view text);

// Bytes per second: a size with k/m/g suffixes (1024-based), an optional "/s"; > 0.
std::optional<uint64_t> parse_rate(std::string_view text);

// The arguments after the program name. --listen and --upstream are required unless
// --help or --version is given. The fault set is checked with check_faults.
ParsedCommandLine parse_command_line(const std::vector<std::string>& args);

// The --help text, laid out like the man page (docs/man/ringmux-chaos.1, which
// tests/check_man.py holds to it): every option with its default, and the exit status.
std::string help_text();

}  // namespace ringmux::chaos
