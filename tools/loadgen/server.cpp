#include "tools/loadgen/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <algorithm>
#include <optional>

#include "tools/blocking_io.h"
#include "tools/loadgen/protocol.h"
#include "tools/loadgen/verify.h"

namespace ringmux::loadgen {

namespace {

uint32_t load_u32(std::span<const std::byte> bytes) {
  uint32_t value = 0;
  if (bytes.size() >= sizeof(value)) std::memcpy(&value, bytes.data(), sizeof(value));
  return value;
}

// The preamble of a unary request or a stream's OPEN (protocol.h).
struct Preamble {
  uint32_t size = 0;
  uint32_t flags = 0;
  uint64_t stream_key = 0;
  bool verify() const noexcept { return (flags & flag_verify) != 0; }
};
Preamble load_preamble(std::span<const std::byte> bytes) {
  Preamble preamble;
  preamble.size = load_u32(bytes);
  if (bytes.size() >= preamble_bytes) preamble.flags = load_u32(bytes.subspan(4));
  if (bytes.size() >= open_verify_bytes) std::memcpy(&preamble.stream_key, bytes.data() + preamble_bytes, 8);
  return preamble;
}

// A sink's answer: its count and, verified, what its verifier found.
std::size_t encode_sink_answer(std::byte (&out)[sink_answer_verify_bytes], uint64_t count, const StreamVerifier* verifier) {
  std::memcpy(out, &count, 8);
  if (verifier == nullptr) return sink_answer_bytes;
  const VerifyCounts& c = verifier->counts();
  const uint64_t fields[4] = {c.messages, c.mismatches, c.gaps, c.duplicates};
  std::memcpy(out + 8, fields, sizeof(fields));
  return sink_answer_verify_bytes;
}

// Sink: counts what arrives; answers the count when the client ends its side.
class SinkStream final : public mux::StreamObserver {
 public:
  SinkStream(const mux::StreamStart& start, ServerStats& stats) : connection_(*start.connection), id_(start.id), stats_(stats) {
    const Preamble preamble = load_preamble(start.payload);
    if (preamble.verify()) verifier_.emplace(preamble.stream_key, message_bytes_max);
    skip_ = start.payload.size();  // the preamble is not part of the counted stream
  }
  void on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept override {
    connection_.consume(id_, bytes.size());
    const std::size_t skipped = std::min(skip_, bytes.size());
    skip_ -= skipped;
    bytes = bytes.subspan(skipped);
    count_ += bytes.size();
    stats_.bytes_received.fetch_add(bytes.size(), std::memory_order_relaxed);
    if (verifier_) verifier_->feed(bytes);
    if (end_stream) {
      if (verifier_) {
        verifier_->finish();
        stats_.verify_errors.fetch_add(verifier_->counts().errors(), std::memory_order_relaxed);
      }
      answer_bytes_ = encode_sink_answer(answer_, count_, verifier_ ? &*verifier_ : nullptr);
      send_answer();
    }
  }
  // The answer may find the batch full (other streams filled it): the rest goes out when
  // the connection says this stream is writable again.
  void on_stream_writable() noexcept override { send_answer(); }
  void on_stream_finished(mux::MuxError) noexcept override {}

 private:
  mux::Connection& connection_;
  mux::StreamId id_;
  ServerStats& stats_;
  void send_answer() noexcept {
    if (answer_sent_ == answer_bytes_) return;
    auto taken = connection_.write(id_, std::span<const std::byte>(answer_ + answer_sent_, answer_bytes_ - answer_sent_), true);
    if (taken) answer_sent_ += taken.value();
  }

  uint64_t count_ = 0;
  std::size_t skip_ = 0;
  std::optional<StreamVerifier> verifier_;
  std::byte answer_[sink_answer_verify_bytes] = {};
  std::size_t answer_bytes_ = 0;
  std::size_t answer_sent_ = 0;
};

// Source: writes messages of the requested size until the client resets the stream.
class SourceStream final : public mux::StreamObserver {
 public:
  SourceStream(const mux::StreamStart& start, ServerStats& stats)
      : connection_(*start.connection), id_(start.id), stats_(stats), preamble_(load_preamble(start.payload)),
        message_(std::clamp<uint32_t>(preamble_.size, preamble_.verify() ? verify_stamp_bytes : 1, message_bytes_max)) {}
  void pump() noexcept {
    while (!done_) {
      // A new message is stamped once, however many writes it takes.
      if (offset_ == 0 && !stamped_ && preamble_.verify()) stamp_message(message_, preamble_.stream_key, sequence_++);
      stamped_ = true;
      auto taken = connection_.write(id_, std::span<const std::byte>(message_).subspan(offset_), false);
      if (!taken || taken.value() == 0) return;
      stats_.bytes_sent.fetch_add(taken.value(), std::memory_order_relaxed);
      offset_ = (offset_ + taken.value()) % message_.size();
      if (offset_ == 0) stamped_ = false;
    }
  }
  void on_stream_data(std::span<const std::byte> bytes, bool) noexcept override { connection_.consume(id_, bytes.size()); }
  void on_stream_writable() noexcept override { pump(); }
  void on_stream_stopped() noexcept override { done_ = true; }
  void on_stream_finished(mux::MuxError) noexcept override { done_ = true; }

 private:
  mux::Connection& connection_;
  mux::StreamId id_;
  ServerStats& stats_;
  Preamble preamble_;
  std::vector<std::byte> message_;
  std::size_t offset_ = 0;
  uint64_t sequence_ = 0;
  bool stamped_ = false;  // message_ holds the stamped message being written
  bool done_ = false;
};

// Echo stream: every byte goes back; ends when the client ends.
class EchoStream final : public mux::StreamObserver {
 public:
  EchoStream(const mux::StreamStart& start, ServerStats& stats)
      : connection_(*start.connection), id_(start.id), stats_(stats), skip_(start.payload.size()) {}
  void on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept override {
    // The preamble is handed back as credit but not echoed.
    const std::size_t skipped = std::min(skip_, bytes.size());
    skip_ -= skipped;
    if (skipped > 0) connection_.consume(id_, skipped);
    bytes = bytes.subspan(skipped);
    stats_.bytes_received.fetch_add(bytes.size(), std::memory_order_relaxed);
    // Copy: what the window does not let out yet waits here. Its credit goes back only
    // as the echo leaves (pump), so the peer cannot make this grow past one window.
    pending_.insert(pending_.end(), bytes.begin(), bytes.end());
    end_ |= end_stream;
    pump();
  }
  void on_stream_writable() noexcept override { pump(); }
  void on_stream_finished(mux::MuxError) noexcept override { finished_ = true; }

 private:
  void pump() noexcept {
    if (finished_) return;
    auto taken = connection_.write(id_, std::span<const std::byte>(pending_).subspan(sent_), end_);
    if (!taken) return;
    stats_.bytes_sent.fetch_add(taken.value(), std::memory_order_relaxed);
    if (taken.value() > 0) connection_.consume(id_, taken.value());
    sent_ += taken.value();
    // The echoed prefix goes once it is half of what is kept: an echo that never fully
    // catches up (its direction shared with another stream) kept every byte it had
    // echoed, growing by the stream's rate for as long as the stream lived. Now it keeps
    // at most twice the unsent bytes (one window), and moves no more bytes than it echoes.
    if (sent_ == pending_.size()) {
      pending_.clear();
      sent_ = 0;
    } else if (sent_ >= pending_.size() - sent_) {
      pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(sent_));
      sent_ = 0;
    }
  }
  mux::Connection& connection_;
  mux::StreamId id_;
  ServerStats& stats_;
  std::vector<std::byte> pending_;
  std::size_t sent_ = 0;
  std::size_t skip_;
  bool end_ = false;
  bool finished_ = false;
};

// The handlers of every loadgen mode, on a plain server's registry or on each loop's of a
// cluster member. `response_pool` is that loop's (handlers of one loop run on its thread).
void register_handlers(mux::Registry& target, ServerStats& stats, std::vector<std::byte>& response_pool) {
  target.add_unary(handler_unary, [&stats, &response_pool](std::span<const std::byte> request,
                                                          std::shared_ptr<mux::Responder> responder) {
    stats.calls.fetch_add(1, std::memory_order_relaxed);
    stats.bytes_received.fetch_add(request.size(), std::memory_order_relaxed);
    const Preamble preamble = load_preamble(request);
    const uint32_t response_bytes = std::min<uint32_t>(preamble.size, message_bytes_max);
    if (response_pool.size() < response_bytes) response_pool.resize(response_bytes, std::byte{0x5a});
    const std::span<std::byte> response(response_pool.data(), response_bytes);
    if (preamble.verify()) {
      const auto stamped = request.size() >= preamble_bytes ? request.subspan(preamble_bytes) : request.last(0);
      if (!message_intact(stamped) || response_bytes < verify_stamp_bytes) {
        stats.verify_errors.fetch_add(1, std::memory_order_relaxed);
        responder->fail(wire::StatusCode::handler_error, "verify: request damaged");
        return;
      }
      stamp_message(response, message_stream_key(stamped), message_sequence(stamped));
    }
    stats.bytes_sent.fetch_add(response_bytes, std::memory_order_relaxed);
    responder->reply(response);
  });
  target.add_stream(handler_sink, [&stats](const mux::StreamStart& start) { return new SinkStream(start, stats); });
  target.add_stream(handler_source, [&stats](const mux::StreamStart& start) {
    auto* source = new SourceStream(start, stats);
    source->pump();
    return source;
  });
  target.add_stream(handler_echo_stream, [&stats](const mux::StreamStart& start) { return new EchoStream(start, stats); });
}

}  // namespace

struct LoadServer::RingmuxSide final : engine::ListenerHandler, mux::ConnectionObserver {
  RingmuxSide(engine::Loop& l, ServerStats& s, const mux::ConnectionOptions& o)
      : loop(l), stats(s), options(o), listener(l, *this), acceptor(l, [this](int fd) {
          stats.sessions.fetch_add(1, std::memory_order_relaxed);
          connections.push_back(std::make_unique<mux::Connection>(loop, fd, false, &registry, *this, options));
          return connections.back().get();
        }) {
    options.resume = true;  // sessions outlive their TCP connections (mux/acceptor.h)
    register_handlers(registry, stats, response_pool);
  }
  void on_accept(int fd) noexcept override {
    stats.connections.fetch_add(1, std::memory_order_relaxed);
    acceptor.accept(fd);  // reads the HELLO: a new session, or a resume of one of ours
  }
  void on_accept_error(engine::IoError) noexcept override {}
  void on_listener_closed() noexcept override { listener_closed = true; }
  // An ended session goes at once (its last callback may destroy it): the server's memory
  // is bounded by the sessions alive, not by those it ever served.
  void on_connection_closed(mux::Connection& connection, mux::MuxError, engine::IoError) noexcept override {
    std::erase_if(connections, [&](const auto& c) { return c.get() == &connection; });
  }
  void on_connection_resumed(mux::Connection&, uint64_t) noexcept override {
    stats.resumes.fetch_add(1, std::memory_order_relaxed);
  }
  bool all_closed() const {
    return listener_closed && connections.empty() && acceptor.idle();
  }

  engine::Loop& loop;
  ServerStats& stats;
  mux::ConnectionOptions options;
  mux::Registry registry;
  engine::Listener listener;
  mux::Acceptor acceptor;
  std::vector<std::unique_ptr<mux::Connection>> connections;
  std::vector<std::byte> response_pool;
  bool listener_closed = false;
};

std::unique_ptr<LoadServer> LoadServer::start_ringmux(const std::string& address, const std::vector<int>& cpus,
                                                      std::string& error, const mux::ConnectionOptions& connection_options,
                                                      const std::vector<std::string>& peers, uint32_t loops) {
  std::vector<engine::Address> peer_addresses;
  for (const std::string& peer : peers) {
    auto parsed_peer = engine::Address::parse(peer);
    if (!parsed_peer) {
      error = "peer address '" + peer + "': " + engine::describe(parsed_peer.error());
      return nullptr;
    }
    peer_addresses.push_back(parsed_peer.value());
  }
  auto parsed = engine::Address::parse(address);
  if (!parsed) {
    error = "listen address '" + address + "': " + engine::describe(parsed.error());
    return nullptr;
  }
  std::unique_ptr<LoadServer> server(new LoadServer());
  engine::EngineOptions options;
  options.loop_count = peer_addresses.empty() ? 1 : std::max<uint32_t>(loops, 1);
  options.cpus.assign(cpus.begin(), cpus.begin() + std::min<std::size_t>(cpus.size(), options.loop_count));
  auto started = engine::Engine::start(options);
  if (!started) {
    error = std::string("engine: ") + engine::describe(started.error());
    return nullptr;
  }
  server->engine_ = std::move(started).value();
  if (!peer_addresses.empty()) {
    // A cluster member: a node whose loops share its peer sessions; it listens, dials the
    // peers it should, and serves the same handlers on every session (mux/node.h).
    mux::ManagerOptions manager_options;
    manager_options.connection = connection_options;
    server->response_pools_.resize(options.loop_count);
    LoadServer* raw = server.get();
    auto node = mux::Node::start(*server->engine_, parsed.value(), manager_options,
                                 [raw](mux::Registry& registry, uint32_t loop) {
                                   register_handlers(registry, raw->stats_, raw->response_pools_[loop]);
                                 });
    if (!node) {
      error = "listen on " + address + ": " + engine::describe(node.error());
      server->stop();
      return nullptr;
    }
    server->node_ = std::move(node).value();
    server->port_ = server->node_->self().port();
    for (const auto& peer : peer_addresses) server->node_->add_peer(peer);
    return server;
  }
  LoadServer* raw = server.get();
  const engine::Address where = parsed.value();
  server->engine_->loop(0).run_sync([raw, where, &error, &connection_options] {
    raw->side_ = std::make_unique<RingmuxSide>(raw->engine_->loop(0), raw->stats_, connection_options);
    RingmuxSide& side = *raw->side_;
    auto listened = side.listener.listen(where);
    if (listened) raw->port_ = side.listener.address().port();
    error = listened ? "" : engine::describe(listened.error());
  });
  if (!error.empty()) {
    error = "listen on " + address + ": " + error;
    server->stop();
    return nullptr;
  }
  return server;
}

namespace {

// Serves one baseline connection; the caller closes `fd`.
void serve_tcp_connection(int fd, ServerStats& stats) {
  std::byte hello[tcp_hello_bytes];
  if (!tools::recv_exact(fd, hello, sizeof(hello))) return;
  const uint32_t mode = load_u32(hello);
  const Preamble preamble = load_preamble(std::span<const std::byte>(hello, open_verify_bytes));
  if (mode == tcp_mode_source) {
    // Writes messages until the client goes away (send fails).
    uint32_t message_bytes = 0;
    std::memcpy(&message_bytes, hello + open_verify_bytes, sizeof(message_bytes));
    std::vector<std::byte> message(std::clamp<uint32_t>(message_bytes, preamble.verify() ? verify_stamp_bytes : 1,
                                                        message_bytes_max), std::byte{0x5a});
    for (uint64_t sequence = 0;; sequence++) {
      if (preamble.verify()) stamp_message(message, preamble.stream_key, sequence);
      if (!tools::send_all(fd, message.data(), message.size())) return;
      stats.bytes_sent.fetch_add(message.size(), std::memory_order_relaxed);
    }
  }
  std::optional<StreamVerifier> verifier;
  if (mode == tcp_mode_sink && preamble.verify()) verifier.emplace(preamble.stream_key, message_bytes_max);
  std::vector<std::byte> buffer(256 * 1024);
  uint64_t count = 0;
  for (;;) {
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    count += static_cast<uint64_t>(n);
    stats.bytes_received.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
    if (verifier) verifier->feed(std::span<const std::byte>(buffer.data(), static_cast<std::size_t>(n)));
    if (mode == tcp_mode_echo) {
      if (!tools::send_all(fd, buffer.data(), static_cast<std::size_t>(n))) break;
      stats.bytes_sent.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
    }
  }
  if (mode == tcp_mode_sink) {
    if (verifier) {
      verifier->finish();
      stats.verify_errors.fetch_add(verifier->counts().errors(), std::memory_order_relaxed);
    }
    std::byte answer[sink_answer_verify_bytes];
    const std::size_t answer_bytes = encode_sink_answer(answer, count, verifier ? &*verifier : nullptr);
    (void)tools::send_all(fd, answer, answer_bytes);
  }
}

}  // namespace

std::unique_ptr<LoadServer> LoadServer::start_tcp(const std::string& address, int cpu, std::string& error) {
  auto parsed = engine::Address::parse(address);
  if (!parsed) {
    error = "listen address '" + address + "': " + engine::describe(parsed.error());
    return nullptr;
  }
  std::unique_ptr<LoadServer> server(new LoadServer());
  const int fd = ::socket(parsed->storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  engine::Address bound = parsed.value();
  if (fd < 0 || ::bind(fd, bound.sockaddr_ptr(), bound.length) != 0 || ::listen(fd, 128) != 0) {
    error = "listen on " + address + ": " + std::strerror(errno);
    if (fd >= 0) ::close(fd);
    return nullptr;
  }
  bound.length = sizeof(bound.storage);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound.storage), &bound.length);
  server->port_ = bound.port();
  server->listen_fd_ = fd;
  LoadServer* raw = server.get();
  server->accept_thread_ = std::thread([raw, cpu] {
    if (cpu >= 0) (void)engine::pin_current_thread(cpu);
    while (!raw->stopping_.load()) {
      const int client = ::accept4(raw->listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) {
        if (errno == EINTR) continue;
        break;  // the listener was shut down
      }
      const int nodelay = 1;
      setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof(nodelay));
      raw->stats_.connections.fetch_add(1, std::memory_order_relaxed);
      {
        std::lock_guard<std::mutex> lock(raw->connection_fds_mutex_);
        raw->connection_fds_.push_back(client);
      }
      raw->connection_threads_.emplace_back([raw, client, cpu] {
        if (cpu >= 0) (void)engine::pin_current_thread(cpu);
        serve_tcp_connection(client, raw->stats_);
        // Forget the fd before closing it, so that stop() never shuts down a reused number.
        std::lock_guard<std::mutex> lock(raw->connection_fds_mutex_);
        std::erase(raw->connection_fds_, client);
        ::close(client);
      });
    }
  });
  return server;
}

void LoadServer::stop() {
  if (stopped_) return;
  stopped_ = true;
  if (engine_) {
    if (node_) {
      // A cluster member: its node's totals are the server's connection figures.
      const mux::ManagerStats totals = node_->stats();
      stats_.connections.store(totals.connections_accepted, std::memory_order_relaxed);
      stats_.sessions.store(totals.sessions, std::memory_order_relaxed);
      stats_.resumes.store(totals.resumes, std::memory_order_relaxed);
      node_.reset();  // closes every session and waits for it
    }
    if (side_) {
      engine::Loop& loop = engine_->loop(0);
      loop.run_sync([this] {
        // A close may report at once and erase its connection: walk a snapshot (a report
        // erases only its own connection).
        std::vector<mux::Connection*> open;
        for (auto& connection : side_->connections) open.push_back(connection.get());
        for (mux::Connection* connection : open) connection->close();
        side_->acceptor.close();
        side_->listener.close();
      });
      // Closing completes on the loop: wait for it (bounded).
      for (int i = 0; i < 5000; i++) {
        bool closed = false;
        loop.run_sync([this, &closed] { closed = side_->all_closed(); });
        if (closed) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      loop.run_sync([this] { side_.reset(); });
    }
    engine_->stop();
  }
  if (listen_fd_ >= 0) {
    stopping_.store(true);
    ::shutdown(listen_fd_, SHUT_RDWR);  // wakes the blocked accept
    if (accept_thread_.joinable()) accept_thread_.join();
    {
      // Connections whose client is still there end now instead of blocking stop().
      std::lock_guard<std::mutex> lock(connection_fds_mutex_);
      for (int fd : connection_fds_) ::shutdown(fd, SHUT_RDWR);
    }
    for (auto& thread : connection_threads_) {
      if (thread.joinable()) thread.join();
    }
    ::close(listen_fd_);
    listen_fd_ = -1;
  }
}

LoadServer::~LoadServer() { stop(); }

}  // namespace ringmux::loadgen
