#include "tools/loadgen/job.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "ringmux/base/limits.h"
#include "tools/loadgen/verify.h"
#include "tools/version.h"

namespace ringmux::loadgen {

namespace {

std::string_view trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  return text;
}

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::optional<double> parse_number(std::string_view text) {
  text = trim(text);
  if (text.empty()) return std::nullopt;
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(value)) return std::nullopt;
  return value;
}

std::optional<uint64_t> parse_count(std::string_view text, uint64_t min, uint64_t max) {
  text = trim(text);
  uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value < min || value > max) {
    return std::nullopt;
  }
  return value;
}

// Splits "digits[.digits]" from a unit suffix.
std::pair<std::string_view, std::string> split_unit(std::string_view text) {
  text = trim(text);
  std::size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) i++;
  return {text.substr(0, i), lower(trim(text.substr(i)))};
}

std::optional<bool> parse_bool(std::string_view text) {
  const std::string value = lower(trim(text));
  if (value.empty() || value == "1" || value == "true" || value == "yes" || value == "on") return true;
  if (value == "0" || value == "false" || value == "no" || value == "off") return false;
  return std::nullopt;
}

ParseError option_error(std::string_view key, std::string_view value, std::string_view expected) {
  return ParseError{"option '" + std::string(key) + "': '" + std::string(value) + "' is not " + std::string(expected)};
}

}  // namespace

namespace {

// bytes = number * scale, whole and in range.
std::optional<uint64_t> scaled_bytes(double number, double scale) {
  const double bytes = number * scale;
  if (bytes > 9.0e18 || bytes != std::floor(bytes)) return std::nullopt;
  return static_cast<uint64_t>(bytes);
}

}  // namespace

std::optional<uint64_t> parse_fio_size(std::string_view text, uint32_t kb_base) {
  if (kb_base != 1000 && kb_base != 1024) return std::nullopt;  // the only two fio knows
  const auto [digits, unit] = split_unit(text);
  const auto number = parse_number(digits);
  if (!number || *number < 0) return std::nullopt;
  static constexpr std::string_view prefixes = "kmgtp";
  if (unit.empty() || unit == "b") return scaled_bytes(*number, 1);
  const std::size_t power = prefixes.find(unit[0]) + 1;  // 0: not a prefix
  if (power == 0) return std::nullopt;
  const std::string_view rest = std::string_view(unit).substr(1);
  // "kib" and its kin take the other base (fio's inversion); "k", "kb", "ki", "kib" only.
  const bool other_base = rest == "ib";
  if (!other_base && !rest.empty() && rest != "b" && rest != "i") return std::nullopt;
  const double base = other_base ? (kb_base == 1024 ? 1000.0 : 1024.0) : static_cast<double>(kb_base);
  return scaled_bytes(*number, std::pow(base, static_cast<double>(power)));
}

std::optional<uint64_t> parse_size(std::string_view text) {
  const auto [digits, unit] = split_unit(text);
  const auto number = parse_number(digits);
  if (!number || *number < 0) return std::nullopt;
  double scale = 1;
  if (unit.empty() || unit == "b") {
    scale = 1;
  } else if (unit == "k" || unit == "kb" || unit == "kib") {
    scale = 1024.0;
  } else if (unit == "m" || unit == "mb" || unit == "mib") {
    scale = 1024.0 * 1024;
  } else if (unit == "g" || unit == "gb" || unit == "gib") {
    scale = 1024.0 * 1024 * 1024;
  } else if (unit == "t" || unit == "tb" || unit == "tib") {
    scale = 1024.0 * 1024 * 1024 * 1024;
  } else {
    return std::nullopt;
  }
  return scaled_bytes(*number, scale);
}

std::optional<uint64_t> parse_duration_ns(std::string_view text) {
  const auto [digits, unit] = split_unit(text);
  const auto number = parse_number(digits);
  if (!number || *number < 0) return std::nullopt;
  double scale = 1e9;  // fio: a bare number of seconds
  if (unit.empty() || unit == "s") {
    scale = 1e9;
  } else if (unit == "us" || unit == "usec") {
    scale = 1e3;
  } else if (unit == "ms" || unit == "msec") {
    scale = 1e6;
  } else if (unit == "m" || unit == "min") {
    scale = 60e9;
  } else if (unit == "h") {
    scale = 3600e9;
  } else if (unit == "d") {
    scale = 86400e9;
  } else {
    return std::nullopt;
  }
  const double ns = *number * scale;
  if (ns > 9.0e18) return std::nullopt;
  return static_cast<uint64_t>(ns);
}

std::optional<std::vector<int>> parse_cpu_list(std::string_view text) {
  std::vector<int> cpus;
  std::stringstream stream{std::string(text)};
  std::string part;
  while (std::getline(stream, part, ',')) {
    const auto dash = part.find('-');
    if (dash == std::string::npos) {
      auto cpu = parse_count(part, 0, 4095);
      if (!cpu) return std::nullopt;
      cpus.push_back(static_cast<int>(*cpu));
    } else {
      auto first = parse_count(std::string_view(part).substr(0, dash), 0, 4095);
      auto last = parse_count(std::string_view(part).substr(dash + 1), 0, 4095);
      if (!first || !last || *first > *last) return std::nullopt;
      for (uint64_t cpu = *first; cpu <= *last; cpu++) cpus.push_back(static_cast<int>(cpu));
    }
  }
  if (cpus.empty()) return std::nullopt;
  return cpus;
}

std::optional<std::vector<double>> parse_percentiles(std::string_view text) {
  std::vector<double> list;
  std::stringstream stream{std::string(text)};
  std::string part;
  while (std::getline(stream, part, ':')) {
    auto value = parse_number(part);
    if (!value || *value <= 0 || *value > 100) return std::nullopt;
    list.push_back(*value);
  }
  if (list.empty()) return std::nullopt;
  std::sort(list.begin(), list.end());
  return list;
}

std::optional<std::vector<BsSplitEntry>> parse_bssplit(std::string_view text, uint32_t kb_base) {
  std::vector<BsSplitEntry> split;
  std::stringstream stream{std::string(text)};
  std::string part;
  uint32_t total = 0;
  while (std::getline(stream, part, ':')) {
    const auto slash = part.find('/');
    if (slash == std::string::npos) return std::nullopt;
    auto bytes = parse_fio_size(std::string_view(part).substr(0, slash), kb_base);
    auto percent = parse_count(std::string_view(part).substr(slash + 1), 1, 100);
    if (!bytes || *bytes == 0 || *bytes > message_bytes_max || !percent) return std::nullopt;
    split.push_back({static_cast<uint32_t>(*bytes), static_cast<uint32_t>(*percent)});
    total += static_cast<uint32_t>(*percent);
  }
  if (split.empty() || total != 100) return std::nullopt;
  return split;
}

namespace {

// Options of the invocation, not of a job.
bool global_only(std::string_view key) {
  for (std::string_view name : {"host", "port", "output-format", "output_format", "output", "status-interval",
                                "status_interval", "plot", "tls-cert", "tls-key", "tls-ca", "tls-peer-name",
                                "tls-ktls"}) {
    if (key == name) return true;
  }
  return false;
}

std::optional<ParseError> apply_one(Invocation& invocation, Job& job, std::string_view raw_key, std::string_view value) {
  const std::string key = lower(trim(raw_key));
  value = trim(value);
  auto size_in = [&](uint64_t min, uint64_t max, auto& field) -> std::optional<ParseError> {
    auto bytes = parse_fio_size(value, job.kb_base);
    if (!bytes || *bytes < min || *bytes > max) {
      return option_error(key, value, "a size between " + std::to_string(min) + " and " + std::to_string(max) + " bytes");
    }
    field = static_cast<std::remove_reference_t<decltype(field)>>(*bytes);
    return std::nullopt;
  };
  auto count_in = [&](uint64_t min, uint64_t max, auto& field) -> std::optional<ParseError> {
    auto count = parse_count(value, min, max);
    if (!count) return option_error(key, value, "a whole number between " + std::to_string(min) + " and " + std::to_string(max));
    field = static_cast<std::remove_reference_t<decltype(field)>>(*count);
    return std::nullopt;
  };
  auto flag = [&](bool& field) -> std::optional<ParseError> {
    auto parsed = parse_bool(value);
    if (!parsed) return option_error(key, value, "a boolean (1/0, true/false)");
    field = *parsed;
    return std::nullopt;
  };
  auto duration = [&](uint64_t& field) -> std::optional<ParseError> {
    auto ns = parse_duration_ns(value);
    if (!ns) return option_error(key, value, "a duration (seconds, or with us/ms/s/m/h)");
    field = *ns;
    return std::nullopt;
  };

  if (key == "name") {
    if (value.empty()) return option_error(key, value, "a job name");
    job.name = std::string(value);
  } else if (key == "rw" || key == "readwrite") {
    const std::string mode = lower(value);
    if (mode == "unary") job.rw = RwMode::unary;
    else if (mode == "write") job.rw = RwMode::write;
    else if (mode == "read") job.rw = RwMode::read;
    else if (mode == "bidi") job.rw = RwMode::bidi;
    else if (mode == "quorum") job.rw = RwMode::quorum;
    else return option_error(key, value, "one of unary, write, read, bidi, quorum");
  } else if (key == "bs" || key == "blocksize") {
    return size_in(1, message_bytes_max, job.bs);
  } else if (key == "resp_bs") {
    uint32_t bytes = 0;
    if (auto error = size_in(0, message_bytes_max, bytes)) return error;
    job.resp_bs = bytes;
  } else if (key == "bssplit") {
    auto split = parse_bssplit(value, job.kb_base);
    if (!split) return option_error(key, value, "a size/percent list adding up to 100 (e.g. 4k/50:64k/50)");
    job.bssplit = *split;
  } else if (key == "iodepth") {
    return count_in(1, 65536, job.iodepth);
  } else if (key == "streams") {
    return count_in(1, limits::streams_concurrent_max_supported, job.streams);
  } else if (key == "stream_messages") {
    return count_in(0, UINT32_MAX, job.stream_messages);
  } else if (key == "numjobs") {
    return count_in(1, 1024, job.numjobs);
  } else if (key == "runtime") {
    return duration(job.runtime_ns);
  } else if (key == "time_based") {
    return flag(job.time_based);
  } else if (key == "ramp_time") {
    return duration(job.ramp_time_ns);
  } else if (key == "size") {
    return size_in(1, UINT64_MAX / 2, job.size_bytes);
  } else if (key == "rate_iops") {
    return count_in(1, 100'000'000, job.rate_iops);
  } else if (key == "verify") {
    return flag(job.verify);
  } else if (key == "percentile_list") {
    auto list = parse_percentiles(value);
    if (!list) return option_error(key, value, "a ':'-separated list of percentiles in (0, 100]");
    job.percentile_list = *list;
  } else if (key == "cpus_allowed") {
    auto cpus = parse_cpu_list(value);
    if (!cpus) return option_error(key, value, "a CPU list (e.g. 0,2-3)");
    job.cpus_allowed = *cpus;
  } else if (key == "ioengine") {
    const std::string engine = lower(value);
    if (engine == "ringmux") job.ioengine = IoEngine::ringmux;
    else if (engine == "tcp") job.ioengine = IoEngine::tcp;
    else return option_error(key, value, "one of ringmux, tcp");
  } else if (key == "group_reporting") {
    return flag(job.group_reporting);
  } else if (key == "own_connection") {
    return flag(job.own_connection);
  } else if (key == "stonewall" || key == "wait_for_previous") {
    return flag(job.stonewall);
  } else if (key == "new_group") {
    return flag(job.new_group);
  } else if (key == "kb_base") {
    uint32_t base = 0;
    if (count_in(1000, 1024, base) || (base != 1000 && base != 1024)) return option_error(key, value, "1000 or 1024");
    job.kb_base = base;
  } else if (key == "write_lat_log" || key == "write_bw_log" || key == "write_iops_log") {
    auto& prefix = key == "write_lat_log" ? job.lat_log_prefix : key == "write_bw_log" ? job.bw_log_prefix : job.iops_log_prefix;
    prefix = std::string(value);
  } else if (key == "log_avg_msec") {
    uint64_t ms = 0;
    if (auto error = count_in(0, log_avg_ms_max, ms)) return error;
    job.log_avg_ns = ms * 1'000'000;
  } else if (key == "peers") {
    std::vector<std::string> peers;
    for (std::size_t start = 0; start <= value.size();) {
      const std::size_t comma = std::min(value.find(',', start), value.size());
      const std::string peer(value.substr(start, comma - start));
      const std::size_t colon = peer.rfind(':');
      if (colon == std::string::npos || colon == 0 || colon + 1 == peer.size() ||
          peer.find_first_not_of("0123456789", colon + 1) != std::string::npos) {
        return option_error(key, value, "a list of ADDRESS:PORT separated by commas");
      }
      peers.push_back(peer);
      start = comma + 1;
    }
    job.peers = std::move(peers);
  } else if (key == "quorum") {
    const std::string quorum = lower(value);
    uint32_t count = 0;
    if (quorum != "majority" && quorum != "all" && quorum != "first" && count_in(1, 1024, count)) {
      return option_error(key, value, "majority, all, first or a count");
    }
    job.quorum = quorum;
  } else if (key == "deadline") {
    if (auto error = duration(job.deadline_ns)) return error;
    if (job.deadline_ns == 0) return option_error(key, value, "a duration above 0");
  } else if (key == "host") {
    if (value.empty()) return option_error(key, value, "a host address");
    invocation.host = std::string(value);
  } else if (key == "port") {
    uint16_t port = 0;
    if (auto error = count_in(1, 65535, port)) return error;
    invocation.port = port;
  } else if (key == "output-format" || key == "output_format") {
    OutputFormats formats = 0;
    std::stringstream list{lower(value)};
    std::string format;
    while (std::getline(list, format, ',')) {
      if (format == "normal") formats |= static_cast<OutputFormats>(OutputFormat::normal);
      else if (format == "json") formats |= static_cast<OutputFormats>(OutputFormat::json);
      else if (format == "json+") formats |= static_cast<OutputFormats>(OutputFormat::json_plus);
      else if (format == "terse") formats |= static_cast<OutputFormats>(OutputFormat::terse);
      else return option_error(key, value, "a comma-separated list of normal, json, json+, terse");
    }
    if (formats == 0) return option_error(key, value, "a comma-separated list of normal, json, json+, terse");
    invocation.output_formats = formats;
  } else if (key == "output") {
    if (value.empty()) return option_error(key, value, "a file name");
    invocation.output_path = std::string(value);
  } else if (key == "status-interval" || key == "status_interval") {
    if (auto error = duration(invocation.status_interval_ns)) return error;
    if (invocation.status_interval_ns != 0 && invocation.status_interval_ns < status_interval_ns_min) {
      return option_error(key, value, "a duration of at least 100ms (or 0: none)");
    }
  } else if (key == "plot") {
    if (value.empty()) return option_error(key, value, "a file name");
    invocation.plot_path = std::string(value);
  } else if (std::string tls_error; tools::take_tls_option(invocation.tls, key, value, tls_error)) {
    if (!tls_error.empty()) return ParseError{tls_error};
  } else {
    return ParseError{"unknown option '" + std::string(raw_key) + "' (see --help)"};
  }
  return std::nullopt;
}

}  // namespace

std::optional<ParseError> apply_option(Invocation& invocation, Job& job, std::string_view key, std::string_view value) {
  if (auto error = apply_one(invocation, job, key, value)) return error;
  // What was given, as given, for the JSON's "job options" and "global options".
  auto& given = &job == &invocation.global || global_only(lower(trim(key))) ? invocation.global_options : job.options_given;
  given.emplace_back(std::string(trim(key)), std::string(trim(value)));
  return std::nullopt;
}

namespace {

// Checks a finished job; errors name the job.
std::optional<ParseError> validate(const Job& job) {
  if (job.runtime_ns == 0 && job.size_bytes == 0) {
    return ParseError{"job '" + job.name + "': set runtime or size (or both)"};
  }
  if (job.time_based && job.runtime_ns == 0) {
    return ParseError{"job '" + job.name + "': time_based needs runtime (it runs for runtime whatever size says)"};
  }
  if (job.log_avg_ns != 0 && job.runtime_ns / job.log_avg_ns > rate_windows_max) {
    return ParseError{"job '" + job.name + "': runtime / log_avg_msec is over " + std::to_string(rate_windows_max) +
                      " windows; take a longer log_avg_msec"};
  }
  if (job.rate_iops != 0 && job.rw != RwMode::unary) {
    return ParseError{"job '" + job.name + "': rate_iops applies to rw=unary only"};
  }
  if (job.rw == RwMode::quorum) {
    if (job.peers.empty()) return ParseError{"job '" + job.name + "': rw=quorum needs --peers"};
    if (job.ioengine != IoEngine::ringmux) return ParseError{"job '" + job.name + "': rw=quorum runs on ioengine=ringmux only"};
    if (job.verify) return ParseError{"job '" + job.name + "': verify does not apply to rw=quorum"};
    if (std::isdigit(static_cast<unsigned char>(job.quorum[0])) && std::stoul(job.quorum) > job.peers.size()) {
      return ParseError{"job '" + job.name + "': quorum " + job.quorum + " is more than the " +
                        std::to_string(job.peers.size()) + " peers"};
    }
  } else if (!job.peers.empty()) {
    return ParseError{"job '" + job.name + "': peers apply to rw=quorum only"};
  }
  if (job.stream_messages != 0 && job.rw != RwMode::write) {
    return ParseError{"job '" + job.name + "': stream_messages applies to rw=write only"};
  }
  // Every message carries what the server needs (unary: the preamble) and, verified, its
  // stamp: sizes below that cannot be sent as asked.
  const bool calls = job.rw == RwMode::unary || job.rw == RwMode::quorum;  // requests with a preamble
  const uint32_t bytes_min = calls ? preamble_bytes + (job.verify ? verify_stamp_bytes : 0)
                                   : (job.verify ? verify_stamp_bytes : 1);
  uint32_t smallest = job.bs;
  for (const BsSplitEntry& entry : job.bssplit) smallest = std::min(smallest, entry.bytes);
  if (smallest < bytes_min) {
    return ParseError{"job '" + job.name + "': bs " + std::to_string(smallest) + " is below " +
                      std::to_string(bytes_min) + " bytes, the least a " +
                      (job.rw == RwMode::unary ? "unary request" : calls ? "quorum request" : "message") +
                      (job.verify ? " with verify" : "") +
                      " carries"};
  }
  if (job.ioengine == IoEngine::tcp && job.rw == RwMode::unary && job.resp_bs == 0u) {
    return ParseError{"job '" + job.name + "': ioengine=tcp cannot carry resp_bs=0: on a raw byte stream an empty "
                      "response cannot be told from none (resp_bs of 1 or more, or ioengine=ringmux)"};
  }
  if (job.verify && job.rw == RwMode::unary && job.response_bytes() < verify_stamp_bytes) {
    return ParseError{"job '" + job.name + "': resp_bs below " + std::to_string(verify_stamp_bytes) +
                      " bytes cannot carry a verify stamp"};
  }
  return std::nullopt;
}

std::optional<ParseError> finish(Invocation& invocation) {
  if (invocation.jobs.empty()) {
    invocation.jobs.push_back(invocation.global);
    if (invocation.jobs.back().name.empty()) invocation.jobs.back().name = "job1";
  }
  for (const Job& job : invocation.jobs) {
    if (auto error = validate(job)) return error;
  }
  if (std::string error = tools::tls_files_error(invocation.tls); !error.empty()) return ParseError{error};
  for (const Job& job : invocation.jobs) {
    if (tools::tls_enabled(invocation.tls) && job.ioengine == IoEngine::tcp) {
      return ParseError{"job '" + job.name +
                        "': ioengine=tcp with --tls-*: the tcp engine is the raw-socket baseline, it has no TLS "
                        "(use ioengine=ringmux)"};
    }
  }
  return std::nullopt;
}

bool read_whole_file(const std::string& path, std::string& text) {
  std::ifstream file(path);
  if (!file) return false;
  std::stringstream contents;
  contents << file.rdbuf();
  text = contents.str();
  return !file.bad();
}

// Replaces every ${NAME} of `line` by the environment's NAME; an error names a variable
// that is not set, or a "${" left open.
std::optional<std::string> expand_environment(std::string_view line, GetEnv get_env, std::string& error) {
  std::string out;
  for (std::size_t at = 0; at < line.size();) {
    const std::size_t open = line.find("${", at);
    if (open == std::string_view::npos) {
      out += line.substr(at);
      break;
    }
    const std::size_t close = line.find('}', open + 2);
    if (close == std::string_view::npos) {
      error = "'${' without its '}'";
      return std::nullopt;
    }
    const std::string name(line.substr(open + 2, close - open - 2));
    const char* found = name.empty() ? nullptr : get_env(name.c_str());
    if (found == nullptr) {
      error = "${" + name + "} is not set in the environment";
      return std::nullopt;
    }
    out += line.substr(at, open - at);
    out += found;
    at = close + 1;
  }
  return out;
}

// The folder part of a path, "" for a bare file name.
std::string folder_of(std::string_view path) {
  const std::size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? std::string() : std::string(path.substr(0, slash + 1));
}

// Parses the lines of one job file into `invocation`, following `include`s. `current` is
// the index of the job that options go to (-1: the global job); `file_jobs_from` is the
// first job of the outermost file (a [global] after one of them is refused).
std::optional<ParseError> parse_lines(std::string_view text, std::string_view file_name, Invocation& invocation,
                                      long& current, std::size_t file_jobs_from, int depth, ReadFile read_file,
                                      GetEnv get_env) {
  std::size_t line_number = 0;
  auto error_at = [&](const std::string& message) {
    return ParseError{"job file " + std::string(file_name) + " line " + std::to_string(line_number) + ": " + message};
  };
  for (std::size_t start = 0; start <= text.size();) {
    const std::size_t end = std::min(text.find('\n', start), text.size());
    std::string_view raw = trim(text.substr(start, end - start));
    start = end + 1;
    line_number++;
    if (raw.empty() || raw.front() == ';' || raw.front() == '#') continue;
    std::string expansion_error;
    const auto expanded = expand_environment(raw, get_env, expansion_error);
    if (!expanded) return error_at(expansion_error);
    const std::string_view line = trim(*expanded);
    if (line.rfind("include", 0) == 0 && line.size() > 7 && std::isspace(static_cast<unsigned char>(line[7]))) {
      const std::string name(trim(line.substr(7)));
      const std::string path = name.front() == '/' ? name : folder_of(file_name) + name;
      if (depth + 1 >= include_depth_max) {
        return error_at("include " + name + ": more than " + std::to_string(include_depth_max) + " files deep");
      }
      std::string included;
      if (!read_file(path, included)) return error_at("include " + path + ": cannot be read");
      if (auto error = parse_lines(included, path, invocation, current, file_jobs_from, depth + 1, read_file, get_env)) {
        return error;
      }
    } else if (line.front() == '[') {
      if (line.back() != ']' || line.size() < 3) return error_at("malformed section header '" + std::string(line) + "'");
      const std::string section(trim(line.substr(1, line.size() - 2)));
      if (section == "global") {
        if (invocation.jobs.size() > file_jobs_from) return error_at("[global] must come before the jobs");
        current = -1;
      } else {
        invocation.jobs.push_back(invocation.global);
        invocation.jobs.back().name = section;
        invocation.jobs.back().options_given.emplace_back("name", section);
        current = static_cast<long>(invocation.jobs.size()) - 1;
      }
    } else {
      const auto eq = line.find('=');
      const std::string_view key = trim(line.substr(0, eq));
      const std::string_view value = eq == std::string_view::npos ? std::string_view() : line.substr(eq + 1);
      if (key == "name" && current >= 0) return error_at("use a [section] header to name a job");
      Job& job = current < 0 ? invocation.global : invocation.jobs[static_cast<std::size_t>(current)];
      if (auto error = apply_option(invocation, job, key, value)) return error_at(error->message);
    }
  }
  return std::nullopt;
}

}  // namespace

Parsed<Invocation> parse_job_file(std::string_view text, std::string_view file_name, Invocation base,
                                  ReadFile read_file, GetEnv get_env) {
  Parsed<Invocation> result;
  Invocation invocation = std::move(base);
  long current = -1;
  const std::size_t file_jobs_from = invocation.jobs.size();
  if (auto error = parse_lines(text, file_name, invocation, current, file_jobs_from, 0,
                               read_file != nullptr ? read_file : &read_whole_file,
                               get_env != nullptr ? get_env : [](const char* name) -> const char* { return std::getenv(name); })) {
    result.error = *error;
    return result;
  }
  if (auto error = finish(invocation)) {
    result.error = ParseError{"job file " + std::string(file_name) + ": " + error->message};
    return result;
  }
  result.value = std::move(invocation);
  return result;
}

Parsed<Invocation> parse_command_line(const std::vector<std::string>& args) {
  Parsed<Invocation> result;
  Invocation invocation;
  Job* current = &invocation.global;
  std::vector<std::string> job_files;
  for (const std::string& arg : args) {
    if (arg == "-h" || arg == "--help") {
      invocation.help = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0) {
      job_files.push_back(arg);
      continue;
    }
    const auto eq = arg.find('=');
    const std::string key = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    const std::string value = eq == std::string::npos ? std::string() : arg.substr(eq + 1);
    if (key == "name") {
      invocation.jobs.push_back(invocation.global);
      current = &invocation.jobs.back();
    }
    if (auto error = apply_option(invocation, *current, key, value)) {
      result.error = ParseError{"command line: " + error->message};
      return result;
    }
  }
  if (invocation.help) {
    result.value = std::move(invocation);
    return result;
  }
  // fio's order: the command line's jobs, then each file's; every file starts from the
  // command line's globals (a file's [global] holds for that file only).
  const Job command_line_global = invocation.global;
  for (const std::string& path : job_files) {
    std::string text;
    if (!read_whole_file(path, text)) {
      result.error = ParseError{"job file " + path + ": cannot be read (" + std::strerror(errno) + ")"};
      return result;
    }
    invocation.global = command_line_global;
    auto parsed = parse_job_file(text, path, std::move(invocation));
    if (!parsed.ok()) return parsed;
    invocation = std::move(*parsed.value);
  }
  invocation.global = command_line_global;
  if (auto error = finish(invocation)) {
    result.error = ParseError{"command line: " + error->message};
    return result;
  }
  result.value = std::move(invocation);
  return result;
}

std::vector<uint32_t> job_groups(const Invocation& invocation) {
  std::vector<uint32_t> groups;
  uint32_t group = 0;
  for (std::size_t i = 0; i < invocation.jobs.size(); i++) {
    if (i > 0 && (invocation.jobs[i].stonewall || invocation.jobs[i].new_group)) group++;
    groups.push_back(group);
  }
  return groups;
}

uint32_t streams_limit_for(uint64_t streams) {
  return static_cast<uint32_t>(std::clamp<uint64_t>(streams, limits::streams_concurrent_max,
                                                    limits::streams_concurrent_max_supported));
}

uint64_t ringmux_streams(const Invocation& invocation) {
  uint64_t streams = 0;
  for (const Job& job : invocation.jobs) {
    const bool stream_job = job.rw == RwMode::write || job.rw == RwMode::read || job.rw == RwMode::bidi;
    if (job.ioengine == IoEngine::ringmux && stream_job) streams += uint64_t{job.numjobs} * job.streams;
  }
  return streams;
}

std::string help_text() {
  // Laid out like the man page (docs/man/ringmux-loadgen.1, which tests/check_man.py holds
  // to it): every option with its default, and the exit status. The port default below is
  // protocol.h's default_port.
  static_assert(default_port == 7300);
  return R"(NAME
    ringmux-loadgen - fio-style load for ringmux

SYNOPSIS
    ringmux-loadgen [OPTION...] [JOBFILE...]
    ringmux-loadgen --help | --version

DESCRIPTION
    Runs jobs of unary calls or streams against a ringmux server, with the ringmux engine
    or the raw blocking-socket baseline (tcp), and reports operations, bandwidth and
    latency percentiles the way fio(1) does. Without --host it starts an embedded server
    in this process, on loopback, its loop pinned to CPU 1.

    Options before the first --name apply to every job; --name=NAME starts a job, and the
    options after it are that job's. Job files use [global] and [name] sections of
    key=value lines (the same options without the dashes), ';' or '#' comments,
    "include FILE" lines (relative to the including file) and ${NAME} for the environment
    variable NAME (an unset one is an error). Jobs run and are reported in order: the
    command line's, then each job file's as given. Jobs up to a --stonewall run together.

    Sizes follow fio's rules: k, m, g, t, p (also kb, ki, mb, ...) multiply by kb_base per
    step; kib, mib, gib, tib, pib by the other base. So by default 4k = 4ki = 4kb = 4096
    and 4kib = 4000; with --kb_base=1000, 4k = 4000 and 4kib = 4096. Durations are
    seconds, or take us, ms, s, m, h or d.

    A status line with the ETA is drawn on stderr when it is a terminal. SIGINT or
    SIGTERM ends the jobs and prints the report of what ran (a second one quits at once).
    The tcp engine runs every rw mode but quorum, with one blocking connection per stream
    (rate_iops: a sender thread on schedule beside the reader; responses of another size
    than their requests, with resp_bs or bssplit: each request carries an 8-byte header
    naming both sizes). Every ringmux-engine connection is resumable: when its TCP
    connection breaks (for example under ringmux-chaos --reset-every) the session resumes
    on a new one and the report counts the resumes, the bytes replayed and the resume
    times.

OPTIONS
    Job options:
    --name=NAME
        Start a job named NAME (with --numjobs, its clones are NAME.0, NAME.1 and so on).
        Default: none (without any --name or job file, one job named job1 of the options
        given).
    --rw=MODE
        unary (calls echoed with a response of resp_bs), write (streams to a sink that
        counts and confirms the bytes), read (streams from a source), bidi (echo streams)
        or quorum (a call to every member of a cluster). Default: unary.
    --bs=SIZE
        Request or message size, in bytes (see the sizes above). Default: 4k.
    --resp_bs=SIZE
        Unary response size; the tcp engine needs at least 1. Default: the request size
        (bs).
    --bssplit=LIST
        Size mix of what the client sends, e.g. 4k/50:64k/50 (percents add up to 100;
        rw=read: bs). Default: none.
    --iodepth=N
        Unary calls in flight per job. Default: 1.
    --streams=N
        Concurrent streams per job, up to 1048576; over 16384 a ringmux-serve must allow
        them (--max_streams). Default: 1.
    --stream_messages=N
        rw=write: messages per stream; the stream then ends and a new one takes its place
        (stream churn; 0: one stream for the whole run; ioengine=tcp: a new connection).
        Default: 0.
    --numjobs=N
        Clones of the job, each with its own operations in flight. Default: 1.
    --runtime=DURATION
        Measured time. Default: none (runtime or size is required).
    --ramp_time=DURATION
        Unmeasured warm-up before the runtime. Default: 0.
    --size=SIZE
        Stop after this many bytes (shared by the job's streams); with size alone, rates
        are over the time the job took. Default: none (runtime or size is required).
    --time_based
        Run for the runtime even when the size is reached. Default: off.
    --rate_iops=N
        Open loop at N calls/s (rw=unary): at most iodepth in flight, latency from the due
        time; up to 16384 late calls wait, later ones and those left at the end are
        counted as rate_dropped. Default: none (closed loop).
    --verify=BOOL
        Stamp and hash every message end to end; counts mismatches, gaps and duplicates
        (bs >= 32). Default: 0.
    --percentile_list=L
        The latency percentiles reported, separated by colons, e.g. 50:99:99.9.
        Default: 1:5:10:20:30:40:50:60:70:80:90:95:99:99.5:99.9:99.95:99.99.
    --cpus_allowed=LIST
        CPUs for the job's client loops, e.g. 0,2-3. ringmux: one client loop per CPU,
        pinned; clone k of the job runs on the (k mod count)-th CPU of the list, so
        --numjobs clones use them all, each loop with a connection of its own for its
        clones (with --own_connection, one per clone). tcp: the first CPU. A CPU this
        process may not run on is refused. Default: 0 with the embedded server, else any.
    --ioengine=NAME
        ringmux, or tcp (the raw blocking-socket baseline). Default: ringmux.
    --own_connection
        A connection of its own, not the one the jobs share. Default: off.
    --stonewall
        Wait for every job before this one to end; starts a new reporting group (groupid
        in the reports). Default: off.
    --new_group
        Start a new reporting group (groupid in the reports) without waiting for the jobs
        before this one. Default: off.
    --group_reporting
        fio's rule: a job clone with it is reported together with the clone before it
        when both are in the same group, so a group (jobs up to a stonewall or new_group)
        whose jobs all have it is one report, under its first job's name. Default: off.
    --kb_base=N
        1024 or 1000: what k/m/g/t/p mean in the sizes given after it. Default: 1024.
    --write_lat_log[=P]
        Latency log files P_lat.N.log and P_clat.N.log (ns); N is the job clone's number
        from 1; fio's line format "time_ms, value, direction, bs, 0". Default: none (P:
        the job's name).
    --write_bw_log[=P]
        Bandwidth log P_bw.N.log (KiB/s), same format. Default: none.
    --write_iops_log[=P]
        IOPS log P_iops.N.log (operations/s), same format. Default: none.
    --log_avg_msec=N
        0: a latency line per operation, bandwidth and IOPS per 500 ms; N: each an
        average per N ms. Default: 0.
    --peers=LIST
        rw=quorum: members of a ringmux-serve --peers cluster, ADDRESS:PORT separated by
        commas; each call goes to all, the job dials every one. Default: none.
    --quorum=Q
        rw=quorum: majority, all, first or a count. Default: majority.
    --deadline=DURATION
        rw=quorum: each quorum call's deadline. Default: 1s.

    Global options:
    --host=ADDRESS
        A ringmux-serve to load (IPv4). Default: an embedded server on loopback.
    --port=N
        Its port. Default: 7300.
    --output-format=F
        normal, json, json+ (fio's document, json+ with the latency histograms' bins;
        tools/loadgen/JSON.md) or terse, several separated by commas (printed terse,
        json, normal). Default: normal.
    --output=FILE
        The reports go to FILE instead of standard output. Default: standard output.
    --status-interval=T
        A full report every T (at least 100ms) while the jobs run, in the output formats,
        to the output. Default: none.
    --plot=FILE.svg
        A latency-percentile plot, one curve per job. Default: none.
    --tls-cert=FILE
        Every ringmux connection (and the embedded server) over mutual TLS 1.3: this
        client's certificate chain, PEM; needs --tls-key and --tls-ca. The tcp engine has
        no TLS. Prints its TLS path on stderr: the record layer moves into the kernel
        (kTLS) after each handshake where the kernel has it, else stays in user space.
        Default: none (plain TCP).
    --tls-key=FILE
        The private key of --tls-cert, PEM. Default: none.
    --tls-ca=FILE
        The CA the server's certificate must chain to, PEM. Default: none.
    --tls-peer-name=NAME
        A name (DNS or IP SAN) the server's certificate must carry; may be given several
        times (one of them). Default: none (any certificate of --tls-ca).
    --tls-ktls=0|1
        1: hand each connection's record layer to the kernel (kTLS) after its handshake
        where the kernel has it; 0: keep it in user space (OpenSSL) always, to compare
        the two or to keep off a kernel's kTLS. Default: 1.
)" + std::string(tools::help_version_options) + R"(
EXIT STATUS
    0   no operation failed and verify found nothing
    1   an operation failed, verify found a difference or an output file failed
    2   a bad option or job file (the message names it and what it accepts)

SEE ALSO
    ringmux-serve(1), ringmux-chaos(1), fio(1)
)";
}

}  // namespace ringmux::loadgen
