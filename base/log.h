// The log hook: how the library tells an application what it would otherwise lose (an
// errno that maps to IoError::other, why a connection closed, a refused accept, a flood).
//
// One process-wide sink, a function pointer with its context, installed by the
// application (set_log_sink) or not at all. Unset, a log site costs one relaxed atomic
// load and a branch: RM_LOG checks log_enabled() before it evaluates its arguments or
// formats anything (log_formats() counts the formatting, so a test can prove it stays 0).
// Sites are on rare paths only (errors, closes, refusals), never per message.
//
// Threads: any thread may log and may install or remove the sink. The sink is called on
// the thread that logs (a loop thread, mostly), so it must be quick, must not block and
// must not call back into the library; the event's strings are valid only during the call.
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>

namespace ringmux {

enum class LogSeverity : uint8_t {
  debug,    // what happened in detail (a peer's close in order)
  info,     // a normal event worth a line (a session resumed)
  warning,  // something failed that the library handles (a transport lost, a flood cut off)
  error,    // something failed that the application has to look at (an unexpected errno)
};

enum class LogSubsystem : uint8_t {
  engine,   // engine/: sockets, listeners, the ring
  link,     // mux/link/: connections, transports, resume
  session,  // mux/session/: the protocol state machine
  rpc,      // mux/rpc/
  cluster,  // cluster/
};

const char* describe(LogSeverity severity) noexcept;
const char* describe(LogSubsystem subsystem) noexcept;

// One event. `connection_id` is the connection's process-wide number (mux::Connection::id(),
// 0 where no connection is known: a listener, a socket below the link); `stream_id` 0 is
// the connection itself. `errno_value` is the raw errno behind the event, 0 when none.
struct LogEvent {
  LogSeverity severity = LogSeverity::info;
  LogSubsystem subsystem = LogSubsystem::engine;
  std::string_view message;
  int errno_value = 0;
  uint64_t connection_id = 0;
  uint64_t stream_id = 0;
};

// The application's sink. Owned by the application; it must stay valid until it has been
// replaced or removed (set_log_sink(nullptr)) and every call into it has returned.
struct LogSink {
  void (*log)(void* context, const LogEvent& event) noexcept = nullptr;
  void* context = nullptr;
};

namespace detail {
extern std::atomic<const LogSink*> log_sink;
}

// Installs `sink` (nullptr removes it). Returns the one it replaces.
const LogSink* set_log_sink(const LogSink* sink) noexcept;

// Whether a sink is installed: the one load a log site pays when none is.
inline bool log_enabled() noexcept { return detail::log_sink.load(std::memory_order_relaxed) != nullptr; }

// Formats the message (printf style, cut at limits::log_message_bytes_max) and hands the
// event to the sink, if one is installed. Call through RM_LOG, which checks first.
void log_formatted(LogSeverity severity, LogSubsystem subsystem, uint64_t connection_id, uint64_t stream_id,
                   int errno_value, const char* format, ...) noexcept __attribute__((format(printf, 6, 7)));

// Messages formatted since the process started (a test's proof that no sink means no work).
uint64_t log_formats() noexcept;

}  // namespace ringmux

// Logs an event when a sink is installed; evaluates nothing else otherwise.
//   RM_LOG(LogSeverity::warning, LogSubsystem::link, id, 0, 0, "transport lost: %s", text);
#define RM_LOG(severity, subsystem, connection_id, stream_id, errno_value, ...)                          \
  do {                                                                                                  \
    if (::ringmux::log_enabled()) {                                                                     \
      ::ringmux::log_formatted(severity, subsystem, connection_id, stream_id, errno_value, __VA_ARGS__); \
    }                                                                                                   \
  } while (false)
