// ringmux-serve's metrics: Prometheus text exposition of the server's statistics, and the
// tiny HTTP/1.1 responder that serves it on GET /metrics (--metrics=ADDRESS:PORT).
//
// The responder is one thread with blocking sockets that answers one connection at a
// time, one request per connection (Connection: close): a scraper asks every few seconds,
// so nothing more is needed, and a client that holds its connection open is cut off after
// metrics_receive_timeout_ms. Requests are read up to metrics_request_bytes_max; GET
// /metrics is answered 200 with the exposition, GET of any other path 404, any other
// method 405, anything unreadable 400.
//
// Threads: start() and stop() from one control thread; the render function runs on the
// responder's thread, so what it reads must be readable from any thread (atomics,
// snapshots).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "ringmux/base/histogram.h"
#include "tools/loadgen/server.h"

namespace ringmux::serve {

// Largest request the responder reads: a request line and the few headers a scraper
// sends fit in 8 KiB (the common web servers' default for a request head).
inline constexpr std::size_t metrics_request_bytes_max = 8 * 1024;
// A scraper that neither sends its request nor reads the answer within this is cut off,
// so a stuck client cannot hold the one-at-a-time responder.
inline constexpr int metrics_receive_timeout_ms = 2000;
// Connections the kernel queues while one is answered (listen backlog).
inline constexpr int metrics_backlog = 16;
// After answering, the responder reads and drops up to this much of what the client still
// sends (the rest of an oversized request) before it closes: closing with unread bytes
// would reset the connection and could destroy the answer before the client reads it.
inline constexpr std::size_t metrics_drain_bytes_max = 64 * 1024;
// How often the responder looks at its stop flag while nobody connects.
inline constexpr int metrics_poll_interval_ms = 100;

// The upper bounds (le) of the call-time histograms' buckets, in seconds: 1, 2.5 and 5 per
// decade from 1 us (a unary handler's own time) to 10 s (a long stream), 22 bounds and
// +Inf. Fixed and few, so that a scrape's size does not grow with the samples: the
// library's histogram keeps 3,776 buckets, Prometheus gets these.
inline constexpr double call_seconds_bounds[] = {1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4,
                                                 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1,
                                                 0.25, 0.5, 1.0, 2.5, 5.0, 10.0};

// Appends the exposition of one metric (HELP and TYPE lines, then its samples).
class Exposition {
 public:
  // A counter (the name ends in _total) or a gauge with no labels.
  void counter(const char* name, const char* help, uint64_t value);
  void gauge(const char* name, const char* help, double value);
  // The header of a metric with labelled samples, then each sample ("subsystem=\"link\"").
  void family(const char* name, const char* type, const char* help);
  void sample(const char* name, const std::string& labels, uint64_t value);
  // A sample of a real value (seconds, say), with nine significant digits.
  void sample_real(const char* name, const std::string& labels, double value);
  // The samples of one histogram of nanoseconds (its family declared as "histogram"):
  // NAME_bucket per bound of call_seconds_bounds and +Inf, cumulative, then NAME_sum in
  // seconds and NAME_count. A library bucket that straddles a bound counts above it (its
  // values are within 0.78 % of the bound).
  void histogram(const char* name, const std::string& labels, const Histogram& nanoseconds);
  const std::string& text() const noexcept { return text_; }

 private:
  std::string text_;
};

// The library's snapshots of a ringmux-engine server (LoadServer::snapshot): per loop, the
// engine's counters and (plain server) the sessions' link counters; per handler, the call
// times over every loop, as histograms.
void expose_loops(Exposition& out, const std::vector<loadgen::LoopSnapshot>& loops);

class MetricsServer {
 public:
  using Render = std::function<std::string()>;
  // Listens on `address` (IPv4 ADDRESS:PORT; port 0 picks one) and starts the responder.
  // Errors come back as text naming the cause.
  static std::unique_ptr<MetricsServer> start(const std::string& address, Render render, std::string& error);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  uint16_t port() const noexcept { return port_; }
  // Stops the responder (it finishes the request it is answering) and closes the socket.
  void stop();

 private:
  MetricsServer() = default;
  void run();
  void answer(int fd);

  int listen_fd_ = -1;
  uint16_t port_ = 0;
  Render render_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

// What an HTTP request head asks for: the status code and body the responder sends.
struct MetricsReply {
  int status = 400;
  std::string body;
};
// Decides the reply to the request head `request` (everything up to the blank line);
// `render` is called only for GET /metrics.
MetricsReply reply_to(std::string_view request, const MetricsServer::Render& render);

}  // namespace ringmux::serve
