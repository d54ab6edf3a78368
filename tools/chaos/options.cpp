#include "tools/chaos/options.h"

#include <arpa/inet.h>

#include <charconv>
#include <cmath>

#include "tools/loadgen/job.h"
#include "tools/options.h"
#include "tools/version.h"

namespace ringmux::chaos {

namespace {

using tools::option_error;

// Every option but --help and --version takes a value.
constexpr tools::ValueOption value_options[] = {
    {"--listen", "ADDRESS:PORT"},   {"--upstream", "ADDRESS:PORT"}, {"--direction", "both|up|down"},
    {"--reset-every", "DURATION"},  {"--cut-every", "DURATION"},    {"--cut-after-bytes", "SIZE"},
    {"--latency", "DURATION"},      {"--jitter", "DURATION"},       {"--bandwidth", "RATE"},
    {"--slice", "MIN-MAX"},         {"--blackhole-after", "DURATION"}, {"--corrupt", "PROBABILITY"},
    {"--seed", "N"},                {"--duration", "DURATION"},     {"--stats", "none|text|json"},
};

// The lanes a per-direction fault applies to under `direction`.
template <typename Apply>
void for_lanes(Faults& faults, Direction direction, Apply apply) {
  switch (direction) {
    case Direction::both:
      apply(faults.up);
      apply(faults.down);
      break;
    case Direction::up:
      apply(faults.up);
      break;
    case Direction::down:
      apply(faults.down);
      break;
  }
}

}  // namespace

std::optional<Endpoint> parse_endpoint(std::string_view text, bool port_zero_allowed) {
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  const std::string host(text.substr(0, colon));
  const std::string_view port_text = text.substr(colon + 1);
  in_addr address{};
  if (inet_pton(AF_INET, host.c_str(), &address) != 1) return std::nullopt;
  unsigned port = 0;
  const auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() || port > 65535) {
    return std::nullopt;
  }
  if (port == 0 && !port_zero_allowed) return std::nullopt;
  return Endpoint{host, static_cast<uint16_t>(port)};
}

std::optional<std::pair<uint32_t, uint32_t>> parse_slice(std::string_view text) {
  const auto dash = text.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  const auto min = loadgen::parse_size(text.substr(0, dash));
  const auto max = loadgen::parse_size(text.substr(dash + 1));
  if (!min || !max || *min < 1 || *min > *max || *max > slice_bytes_max) return std::nullopt;
  return std::pair{static_cast<uint32_t>(*min), static_cast<uint32_t>(*max)};
}

std::optional<double> parse_probability(std::string_view text) {
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  if (!(value >= 0 && value <= 1)) return std::nullopt;  // also rejects NaN
  return value;
}

std::optional<uint64_t> parse_rate(std::string_view text) {
  if (text.size() > 2 && text.substr(text.size() - 2) == "/s") text.remove_suffix(2);
  const auto rate = loadgen::parse_size(text);
  if (!rate || *rate == 0) return std::nullopt;
  return rate;
}

ParsedCommandLine parse_command_line(const std::vector<std::string>& args) {
  ParsedCommandLine result;
  CommandLine line;
  Direction direction = Direction::both;
  bool have_listen = false;
  bool have_upstream = false;
  auto fail = [&](std::string message) {
    result.error = std::move(message);
    return result;
  };
  for (const std::string& arg : args) {
    if (arg == "-h" || arg == "--help") {
      line.help = true;
      continue;
    }
    if (arg == "--version") {
      line.version = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0) return fail("unexpected argument '" + arg + "' (see --help)");
    const auto eq = arg.find('=');
    const std::string key = arg.substr(0, eq);
    const std::string value = eq == std::string::npos ? std::string() : arg.substr(eq + 1);
    if (std::string error = tools::option_shape_error(value_options, key, eq != std::string::npos); !error.empty()) {
      return fail(std::move(error));
    }
    auto duration = [&](uint64_t& field, bool zero_allowed) -> bool {
      const auto ns = loadgen::parse_duration_ns(value);
      if (!ns || (*ns == 0 && !zero_allowed)) return false;
      field = *ns;
      return true;
    };
    constexpr std::string_view duration_text = "a duration (e.g. 100ms, 50us, 2s; bare numbers are seconds)";
    constexpr std::string_view positive_duration_text = "a positive duration (e.g. 100ms, 50us, 2s)";

    if (key == "--listen" || key == "--upstream") {
      const bool listen = key == "--listen";
      auto endpoint = parse_endpoint(value, listen);
      if (!endpoint) {
        return fail(option_error(key, value, listen ? "an IPv4 ADDRESS:PORT (port 0: any)" : "an IPv4 ADDRESS:PORT"));
      }
      (listen ? line.proxy.listen : line.proxy.upstream) = *endpoint;
      (listen ? have_listen : have_upstream) = true;
    } else if (key == "--direction") {
      if (value == "both") direction = Direction::both;
      else if (value == "up") direction = Direction::up;
      else if (value == "down") direction = Direction::down;
      else return fail(option_error(key, value, "one of both, up, down"));
    } else if (key == "--reset-every") {
      if (!duration(line.proxy.faults.reset_every_ns, false)) return fail(option_error(key, value, positive_duration_text));
    } else if (key == "--cut-every") {
      if (!duration(line.proxy.faults.cut_every_ns, false)) return fail(option_error(key, value, positive_duration_text));
    } else if (key == "--cut-after-bytes") {
      const auto bytes = loadgen::parse_size(value);
      if (!bytes || *bytes == 0) return fail(option_error(key, value, "a positive byte count (k/m/g suffixes allowed)"));
      for_lanes(line.proxy.faults, direction, [&](LaneFaults& lane) { lane.cut_after_bytes = *bytes; });
    } else if (key == "--latency" || key == "--jitter") {
      uint64_t ns = 0;
      if (!duration(ns, true)) return fail(option_error(key, value, duration_text));
      const bool latency = key == "--latency";
      static_assert(latency_ns_max == 10'000'000'000 && jitter_ns_max == 10'000'000'000, "the message says 10s");
      if (ns > (latency ? latency_ns_max : jitter_ns_max)) return fail(option_error(key, value, "at most 10s"));
      for_lanes(line.proxy.faults, direction, [&](LaneFaults& lane) { (latency ? lane.latency_ns : lane.jitter_ns) = ns; });
    } else if (key == "--bandwidth") {
      const auto rate = parse_rate(value);
      if (!rate || *rate > bandwidth_bytes_per_s_max) {
        return fail(option_error(key, value, "a rate in bytes/s between 1 and 64g (k/m/g suffixes, 1024-based)"));
      }
      for_lanes(line.proxy.faults, direction, [&](LaneFaults& lane) { lane.bandwidth_bytes_per_s = *rate; });
    } else if (key == "--slice") {
      const auto slice = parse_slice(value);
      if (!slice) {
        return fail(option_error(key, value, "MIN-MAX bytes with 1 <= MIN <= MAX <= " + std::to_string(slice_bytes_max)));
      }
      for_lanes(line.proxy.faults, direction, [&](LaneFaults& lane) {
        lane.slice_bytes_min = slice->first;
        lane.slice_bytes_max = slice->second;
      });
    } else if (key == "--blackhole-after") {
      uint64_t ns = 0;
      if (!duration(ns, true)) return fail(option_error(key, value, duration_text));
      for_lanes(line.proxy.faults, direction, [&](LaneFaults& lane) { lane.blackhole_after_ns = ns; });
    } else if (key == "--corrupt") {
      const auto probability = parse_probability(value);
      if (!probability) return fail(option_error(key, value, "a probability in [0, 1] (e.g. 0.01, 1e-6)"));
      for_lanes(line.proxy.faults, direction, [&](LaneFaults& lane) { lane.corrupt_probability = *probability; });
    } else if (key == "--seed") {
      uint64_t seed = 0;
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), seed);
      if (value.empty() || ec != std::errc() || end != value.data() + value.size()) {
        return fail(option_error(key, value, "an unsigned 64-bit number"));
      }
      line.seed = seed;
    } else if (key == "--duration") {
      if (!duration(line.duration_ns, false)) return fail(option_error(key, value, positive_duration_text));
    } else if (key == "--stats") {
      if (value == "none") line.stats = StatsFormat::none;
      else if (value == "text") line.stats = StatsFormat::text;
      else if (value == "json") line.stats = StatsFormat::json;
      else return fail(option_error(key, value, "one of none, text, json"));
    } else {
      // value_options lists an option this chain does not handle: a programmer error.
      return fail("option '" + key + "' is listed but not handled");
    }
  }
  if (!line.help && !line.version) {
    if (!have_listen) return fail("option '--listen' is required (e.g. --listen=127.0.0.1:7400)");
    if (!have_upstream) return fail("option '--upstream' is required (e.g. --upstream=127.0.0.1:7300)");
    if (auto error = check_faults(line.proxy.faults)) return fail(*error);
  }
  result.value = std::move(line);
  return result;
}

std::string help_text() {
  static_assert(slice_bytes_max == 262144, "the help text below states the slice limit");
  static_assert(latency_ns_max == 10'000'000'000 && jitter_ns_max == 10'000'000'000, "and the delays' limits");
  static_assert(bandwidth_bytes_per_s_max == 64ull << 30, "and the bandwidth's");
  static_assert(pairs_max == 256, "and the pairs'");
  return R"(NAME
    ringmux-chaos - a TCP proxy that injects faults

SYNOPSIS
    ringmux-chaos --listen=ADDRESS:PORT --upstream=ADDRESS:PORT [FAULT...]
                  [--seed=N] [--duration=DURATION] [--stats=none|text|json]
    ringmux-chaos --help | --version

DESCRIPTION
    Each accepted connection gets its own connection to the upstream; the two form a
    pair. "up" is client to upstream, "down" upstream to client. Deadlines count from
    the moment a pair is accepted. At most 256 pairs are open at once; later clients
    wait in the listen backlog. Prints the seed to stderr at start, and on stderr what
    stops it from serving (an upstream that refuses, accept failing, the pair limit),
    at most once a second. Durations: 50us, 100ms, 2s, 1m (a bare number is seconds).

OPTIONS
    --listen=ADDRESS:PORT
        Where to accept; IPv4, port 0 picks one. Required.
    --upstream=ADDRESS:PORT
        Where to forward each connection; IPv4. Required.

  Pair faults (whole pairs; --direction does not apply):
    --reset-every=DURATION
        Abort each pair with RST on both sides (SO_LINGER 0) this long after accept.
        Default: off.
    --cut-every=DURATION
        Close each pair in order (FIN on both sides) this long after accept.
        Default: off.

  Direction faults (the direction set by the last --direction before them; a fault
  given again for a direction replaces its earlier value):
    --direction=D
        both, up or down. Default: both.
    --cut-after-bytes=N
        Close the pair in order once N bytes were forwarded in the direction; those N
        arrive. Default: off.
    --latency=DURATION
        Hold each chunk this long before forwarding; at most 10s. Default: 0.
    --jitter=DURATION
        Add a uniform 0..DURATION to each chunk's delay, at most 10s; order within a
        direction is kept. Default: 0.
    --bandwidth=RATE
        Bytes/s per pair, k/m/g = 1024-based, "/s" optional, at most 64g; a token
        bucket with 10 ms bursts. Default: unlimited.
    --slice=MIN-MAX
        Each send carries MIN..MAX bytes (random), MAX at most 262144; fewer when fewer
        are ready. Default: off.
    --blackhole-after=DURATION
        From then on read and discard: the sender's writes keep succeeding, nothing
        arrives (not even a FIN), the sockets stay open; 0 = from the start.
        Default: off.
    --corrupt=PROBABILITY
        Flip one random bit of a forwarded byte with this probability per byte, e.g.
        1e-6. Default: 0.

  Run:
    --seed=N
        Seed of every random choice, printed to stderr at start. Default: from the
        clock.
    --duration=DURATION
        Exit after this long. Default: none (until SIGINT or SIGTERM).
    --stats=FORMAT
        none, text or json, to stdout on exit: pairs accepted, bytes per direction,
        resets, cuts, bits flipped, bytes delayed and discarded. Default: none.
)" + std::string(tools::help_version_options) + R"(
EXIT STATUS
    0   stopped by SIGINT, SIGTERM or the end of --duration
    1   the proxy could not start (the message names the cause and the errno)
    2   a bad option (the message names the option and what it accepts)

EXAMPLE
    ringmux-chaos --listen=127.0.0.1:7400 --upstream=127.0.0.1:7300 --slice=1-512 \
        --direction=down --latency=5ms --jitter=2ms --corrupt=1e-6 --stats=json

SEE ALSO
    ringmux-serve(1), ringmux-loadgen(1)
)";
}

}  // namespace ringmux::chaos
