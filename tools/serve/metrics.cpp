#include "tools/serve/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "tools/blocking_io.h"
#include "tools/errno_text.h"

namespace ringmux::serve {

void Exposition::family(const char* name, const char* type, const char* help) {
  text_ += "# HELP ";
  text_ += name;
  text_ += ' ';
  text_ += help;
  text_ += "\n# TYPE ";
  text_ += name;
  text_ += ' ';
  text_ += type;
  text_ += '\n';
}

void Exposition::sample(const char* name, const std::string& labels, uint64_t value) {
  text_ += name;
  if (!labels.empty()) text_ += "{" + labels + "}";
  text_ += ' ' + std::to_string(value) + '\n';
}

// Nine significant digits: a call time or a round trip in seconds keeps its nanoseconds,
// a day's uptime its microseconds.
void Exposition::sample_real(const char* name, const std::string& labels, double value) {
  char number[64];
  std::snprintf(number, sizeof(number), "%.9g", value);
  text_ += name;
  if (!labels.empty()) text_ += "{" + labels + "}";
  text_ += ' ';
  text_ += number;
  text_ += '\n';
}

void Exposition::histogram(const char* name, const std::string& labels, const Histogram& nanoseconds) {
  const std::string prefix = labels.empty() ? "" : labels + ",";
  const std::string bucket = std::string(name) + "_bucket";
  std::size_t index = 0;  // the library's next bucket not yet counted
  uint64_t cumulative = 0;
  for (double bound_s : call_seconds_bounds) {
    const auto bound_ns = static_cast<uint64_t>(bound_s * 1e9 + 0.5);
    while (index < Histogram::bucket_count &&
           Histogram::bucket_lowest(index) + (Histogram::bucket_width(index) - 1) <= bound_ns) {
      cumulative += nanoseconds.count_at(index++);
    }
    char le[32];
    std::snprintf(le, sizeof(le), "%g", bound_s);
    sample(bucket.c_str(), prefix + "le=\"" + le + "\"", cumulative);
  }
  sample(bucket.c_str(), prefix + "le=\"+Inf\"", nanoseconds.count());
  sample_real((std::string(name) + "_sum").c_str(), labels, nanoseconds.mean() * static_cast<double>(nanoseconds.count()) / 1e9);
  sample((std::string(name) + "_count").c_str(), labels, nanoseconds.count());
}

namespace {

// One exported series of a snapshot struct's counter or gauge.
template <typename Snapshot>
struct SnapshotField {
  const char* name;
  const char* type;  // "counter" or "gauge"
  const char* help;
  uint64_t Snapshot::*field;
};

}  // namespace

void expose_loops(Exposition& out, const std::vector<loadgen::LoopSnapshot>& loops) {
  if (loops.empty()) return;  // the tcp engine has no loops
  auto loop_label = [](std::size_t index) { return "loop=\"" + std::to_string(index) + "\""; };
  static constexpr SnapshotField<engine::LoopStats> loop_counters[] = {
      {"ringmux_loop_iterations_total", "counter", "Turns of the event loop.", &engine::LoopStats::iterations},
      {"ringmux_loop_enters_total", "counter", "io_uring_enter calls that submitted and waited.", &engine::LoopStats::enters},
      {"ringmux_loop_completions_total", "counter", "io_uring completions handled.", &engine::LoopStats::completions},
      {"ringmux_loop_cq_overflows_total", "counter", "Turns that found the completion queue overflowed.",
       &engine::LoopStats::cq_overflows},
      {"ringmux_loop_recv_no_buffers_total", "counter", "Multishot receives ended for want of provided buffers.",
       &engine::LoopStats::recv_no_buffers},
      {"ringmux_loop_tasks_run_total", "counter", "Tasks posted from other threads and run.", &engine::LoopStats::tasks_run},
      {"ringmux_loop_wakeups_total", "counter", "Wake-ups of a sleeping loop by a post.", &engine::LoopStats::wakeups},
  };
  for (const auto& counter : loop_counters) {
    out.family(counter.name, counter.type, counter.help);
    for (std::size_t i = 0; i < loops.size(); i++) out.sample(counter.name, loop_label(i), loops[i].loop.*counter.field);
  }
  static constexpr SnapshotField<mux::LinkTotals> link_counters[] = {
      {"ringmux_link_connected", "gauge", "Sessions with a transport up and its handshake done.",
       &mux::LinkTotals::connections_connected},
      {"ringmux_link_streams_open", "gauge", "Streams open.", &mux::LinkTotals::streams_open},
      {"ringmux_link_rpc_buffered_bytes", "gauge", "Bytes of requests and replies the RPC layer holds.",
       &mux::LinkTotals::rpc_bytes_buffered},
      {"ringmux_link_streams_opened_remote_total", "counter", "Streams the clients opened.",
       &mux::LinkTotals::streams_opened_remote},
      {"ringmux_link_streams_opened_local_total", "counter", "Streams this server opened.",
       &mux::LinkTotals::streams_opened_local},
      {"ringmux_link_streams_refused_total", "counter", "Stream OPENs refused (over the limit, after GOAWAY).",
       &mux::LinkTotals::streams_refused},
      {"ringmux_link_sent_bytes_total", "counter", "Bytes handed to the transport, frames and replays included.",
       &mux::LinkTotals::bytes_sent},
      {"ringmux_link_received_bytes_total", "counter", "Bytes read from the transport.", &mux::LinkTotals::bytes_received},
      {"ringmux_link_frames_sent_total", "counter", "Frames sent.", &mux::LinkTotals::frames_sent},
      {"ringmux_link_frames_received_total", "counter", "Frames received.", &mux::LinkTotals::frames_received},
      {"ringmux_link_batches_sent_total", "counter", "Sends, each one batch of frames.", &mux::LinkTotals::batches_sent},
      {"ringmux_link_floods_total", "counter", "Flood limits a client hit.", &mux::LinkTotals::floods},
      {"ringmux_link_flow_control_stalls_total", "counter", "Writes cut short by a client's flow-control credit.",
       &mux::LinkTotals::flow_control_stalls},
      {"ringmux_link_transports_lost_total", "counter", "TCP connections that broke under a resumable session.",
       &mux::LinkTotals::transports_lost},
      {"ringmux_link_resumes_total", "counter", "Sessions resumed on a new TCP connection.", &mux::LinkTotals::resumes},
      {"ringmux_link_replayed_bytes_total", "counter", "Bytes sent again after a resume.",
       &mux::LinkTotals::bytes_replayed},
  };
  bool any_link = false;
  for (const auto& loop : loops) any_link |= loop.link_counted;
  if (any_link) {
    for (const auto& counter : link_counters) {
      out.family(counter.name, counter.type, counter.help);
      for (std::size_t i = 0; i < loops.size(); i++) {
        if (loops[i].link_counted) out.sample(counter.name, loop_label(i), loops[i].link.*counter.field);
      }
    }
  }
  // A cluster member's peers (a handful: the cluster's size bounds the series), each on
  // the loop that owns it: health, and its session's link counters.
  std::vector<std::pair<std::string, const cluster::PeerSnapshot*>> peers;
  for (const auto& loop : loops) {
    for (const auto& peer : loop.peers) peers.emplace_back("peer=\"" + peer.name + "\"", &peer);
  }
  if (!peers.empty()) {
    out.family("ringmux_peer_connected", "gauge", "1 when the session with the peer is up, else 0.");
    for (const auto& [labels, peer] : peers) {
      out.sample("ringmux_peer_connected", labels, uint64_t{peer->health.state == cluster::PeerState::connected});
    }
    out.family("ringmux_peer_rtt_seconds", "gauge", "The peer's last keepalive round trip (0: none measured yet).");
    for (const auto& [labels, peer] : peers) {
      out.sample_real("ringmux_peer_rtt_seconds", labels, static_cast<double>(peer->health.rtt_ns) / 1e9);
    }
    out.family("ringmux_peer_sessions_total", "counter", "Sessions started with the peer.");
    for (const auto& [labels, peer] : peers) out.sample("ringmux_peer_sessions_total", labels, peer->health.sessions);
    static constexpr SnapshotField<mux::ConnectionSnapshot> session_counters[] = {
        {"ringmux_peer_streams_open", "gauge", "Streams open on the current session.", &mux::ConnectionSnapshot::streams_open},
        {"ringmux_peer_sent_bytes_total", "counter", "Bytes sent on the current session.", &mux::ConnectionSnapshot::bytes_sent},
        {"ringmux_peer_received_bytes_total", "counter", "Bytes received on the current session.",
         &mux::ConnectionSnapshot::bytes_received},
        {"ringmux_peer_frames_sent_total", "counter", "Frames sent on the current session.", &mux::ConnectionSnapshot::frames_sent},
        {"ringmux_peer_frames_received_total", "counter", "Frames received on the current session.",
         &mux::ConnectionSnapshot::frames_received},
        {"ringmux_peer_streams_refused_total", "counter", "Stream OPENs of the peer refused on the current session.",
         &mux::ConnectionSnapshot::streams_refused},
        {"ringmux_peer_floods_total", "counter", "Flood limits the peer hit on the current session.",
         &mux::ConnectionSnapshot::floods},
        {"ringmux_peer_flow_control_stalls_total", "counter", "Writes cut short by the peer's credit on the current session.",
         &mux::ConnectionSnapshot::flow_control_stalls},
        {"ringmux_peer_resumes_total", "counter", "Resumes of the current session.", &mux::ConnectionSnapshot::resumes},
    };
    for (const auto& counter : session_counters) {
      out.family(counter.name, counter.type, counter.help);
      for (const auto& [labels, peer] : peers) {
        out.sample(counter.name, labels, peer->has_session ? peer->session.*counter.field : 0);
      }
    }
  }
  loadgen::CallTimes calls;
  for (const auto& loop : loops) calls.merge(loop.call_times);
  out.family("ringmux_serve_call_duration_seconds", "histogram",
             "Time of each call by handler: a unary handler's own time to its reply, a stream's from OPEN to end.");
  for (std::size_t i = 0; i < loadgen::timed_handlers; i++) {
    const std::string labels =
        std::string("handler=\"") + loadgen::describe(static_cast<loadgen::TimedHandler>(i)) + "\"";
    out.histogram("ringmux_serve_call_duration_seconds", labels, calls.by_handler[i]);
  }
}

void Exposition::counter(const char* name, const char* help, uint64_t value) {
  family(name, "counter", help);
  sample(name, {}, value);
}

void Exposition::gauge(const char* name, const char* help, double value) {
  family(name, "gauge", help);
  sample_real(name, {}, value);
}

MetricsReply reply_to(std::string_view request, const MetricsServer::Render& render) {
  // The request line: METHOD SP TARGET SP HTTP/1.x
  const std::size_t line_end = request.find("\r\n");
  const std::string_view line = request.substr(0, line_end);
  const std::size_t first_space = line.find(' ');
  const std::size_t second_space = first_space == std::string_view::npos ? first_space : line.find(' ', first_space + 1);
  if (line_end == std::string_view::npos || second_space == std::string_view::npos ||
      line.substr(second_space + 1).rfind("HTTP/1.", 0) != 0) {
    return {400, "bad request\n"};
  }
  const std::string_view method = line.substr(0, first_space);
  std::string_view target = line.substr(first_space + 1, second_space - first_space - 1);
  target = target.substr(0, target.find('?'));  // a scraper's query parameters change nothing
  if (method != "GET" && method != "HEAD") return {405, "only GET is served\n"};
  if (target != "/metrics") return {404, "not found: the metrics are at /metrics\n"};
  return {200, render()};
}

std::unique_ptr<MetricsServer> MetricsServer::start(const std::string& address, Render render, std::string& error) {
  const std::size_t colon = address.rfind(':');
  sockaddr_in where{};
  where.sin_family = AF_INET;
  char* end = nullptr;
  const unsigned long port = colon == std::string::npos ? 0 : std::strtoul(address.c_str() + colon + 1, &end, 10);
  if (colon == std::string::npos || end == nullptr || *end != '\0' || port > 65535 ||
      ::inet_pton(AF_INET, address.substr(0, colon).c_str(), &where.sin_addr) != 1) {
    error = "--metrics: '" + address + "' is not an IPv4 ADDRESS:PORT";
    return nullptr;
  }
  where.sin_port = htons(static_cast<uint16_t>(port));
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = "--metrics: socket: " + tools::errno_text(errno);
    return nullptr;
  }
  const int one = 1;
  (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&where), sizeof(where)) != 0 || ::listen(fd, metrics_backlog) != 0) {
    error = "--metrics: cannot listen on " + address + ": " + tools::errno_text(errno);
    ::close(fd);
    return nullptr;
  }
  socklen_t length = sizeof(where);
  (void)::getsockname(fd, reinterpret_cast<sockaddr*>(&where), &length);
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  server->listen_fd_ = fd;
  server->port_ = ntohs(where.sin_port);
  server->render_ = std::move(render);
  server->thread_ = std::thread([raw = server.get()] { raw->run(); });
  return server;
}

MetricsServer::~MetricsServer() { stop(); }

void MetricsServer::stop() {
  if (listen_fd_ < 0) return;
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
  ::close(listen_fd_);
  listen_fd_ = -1;
}

void MetricsServer::run() {
  while (!stopping_.load()) {
    pollfd ready{listen_fd_, POLLIN, 0};
    if (::poll(&ready, 1, metrics_poll_interval_ms) <= 0) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;  // the client gave up already, or out of descriptors: next time
    answer(fd);
    ::close(fd);
  }
}

void MetricsServer::answer(int fd) {
  const timeval timeout{metrics_receive_timeout_ms / 1000, (metrics_receive_timeout_ms % 1000) * 1000};
  (void)::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  (void)::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  std::string request;
  char buffer[1024];
  MetricsReply reply;
  while (true) {
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // closed or timed out before a whole request head: nothing to answer
    request.append(buffer, static_cast<std::size_t>(n));
    if (request.find("\r\n\r\n") != std::string::npos) {
      reply = reply_to(request, render_);
      break;
    }
    if (request.size() > metrics_request_bytes_max) {
      reply = {431, "request head larger than " + std::to_string(metrics_request_bytes_max) + " bytes\n"};
      break;
    }
  }
  const char* reason = reply.status == 200   ? "OK"
                       : reply.status == 404 ? "Not Found"
                       : reply.status == 405 ? "Method Not Allowed"
                       : reply.status == 431 ? "Request Header Fields Too Large"
                                             : "Bad Request";
  const bool head = request.rfind("HEAD ", 0) == 0;
  std::string response = "HTTP/1.1 " + std::to_string(reply.status) + " " + reason + "\r\n";
  response += reply.status == 200 ? "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                                  : "Content-Type: text/plain; charset=utf-8\r\n";
  if (reply.status == 405) response += "Allow: GET, HEAD\r\n";
  response += "Content-Length: " + std::to_string(reply.body.size()) + "\r\nConnection: close\r\n\r\n";
  if (!head) response += reply.body;
  if (!tools::send_all(fd, reinterpret_cast<const std::byte*>(response.data()), response.size())) return;
  (void)::shutdown(fd, SHUT_WR);
  for (std::size_t drained = 0; drained < metrics_drain_bytes_max;) {
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the client closed (or the receive timeout ended the wait)
    drained += static_cast<std::size_t>(n);
  }
}

}  // namespace ringmux::serve
