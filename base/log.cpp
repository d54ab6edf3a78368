#include "ringmux/base/log.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>

#include "ringmux/base/limits.h"

namespace ringmux {

namespace detail {
std::atomic<const LogSink*> log_sink{nullptr};
}

namespace {
std::atomic<uint64_t> formats{0};
}

const char* describe(LogSeverity severity) noexcept {
  switch (severity) {
    case LogSeverity::debug: return "debug";
    case LogSeverity::info: return "info";
    case LogSeverity::warning: return "warning";
    case LogSeverity::error: return "error";
  }
  return "unknown";
}

const char* describe(LogSubsystem subsystem) noexcept {
  switch (subsystem) {
    case LogSubsystem::engine: return "engine";
    case LogSubsystem::link: return "link";
    case LogSubsystem::session: return "session";
    case LogSubsystem::rpc: return "rpc";
    case LogSubsystem::cluster: return "cluster";
  }
  return "unknown";
}

const LogSink* set_log_sink(const LogSink* sink) noexcept {
  return detail::log_sink.exchange(sink, std::memory_order_acq_rel);
}

void log_formatted(LogSeverity severity, LogSubsystem subsystem, uint64_t connection_id, uint64_t stream_id,
                   int errno_value, const char* format, ...) noexcept {
  // Acquire: the sink's fields were written before it was published.
  const LogSink* sink = detail::log_sink.load(std::memory_order_acquire);
  if (sink == nullptr || sink->log == nullptr) return;
  formats.fetch_add(1, std::memory_order_relaxed);
  char text[limits::log_message_bytes_max];
  va_list args;
  va_start(args, format);
  const int length = std::vsnprintf(text, sizeof(text), format, args);
  va_end(args);
  const std::size_t size = length < 0 ? 0 : std::min<std::size_t>(static_cast<std::size_t>(length), sizeof(text) - 1);
  const LogEvent event{severity, subsystem, std::string_view(text, size), errno_value, connection_id, stream_id};
  sink->log(sink->context, event);
}

uint64_t log_formats() noexcept { return formats.load(std::memory_order_relaxed); }

}  // namespace ringmux
