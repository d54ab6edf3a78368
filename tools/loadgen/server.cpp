#include "tools/loadgen/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <string>

#include "ringmux/base/assert.h"
#include "ringmux/mux/link/loop_placement.h"
#include "tools/blocking_io.h"
#include "tools/loadgen/message_buffer.h"
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

uint64_t steady_ns() noexcept {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

// A stream's life for CallTimes: from its OPEN (construction) to on_stream_finished;
// nothing without a histogram (calls not timed).
class StreamTimer {
 public:
  explicit StreamTimer(Histogram* times) noexcept : times_(times), started_ns_(times != nullptr ? steady_ns() : 0) {}
  void finished() noexcept {
    if (times_ != nullptr) times_->record(steady_ns() - started_ns_);
  }

 private:
  Histogram* times_;
  uint64_t started_ns_;
};

// What a refusal says: the size asked and the option that bounds it.
std::string too_large(uint32_t asked_bytes, uint32_t bytes_max) {
  return "message of " + std::to_string(asked_bytes) + " bytes asked, above this server's --max_message=" +
         std::to_string(bytes_max);
}

// A stream refused at its OPEN: it ends with ERROR(resource_exhausted, `message`), a
// stream-scoped error (the connection goes on; wire/SPEC.md §7: a limit, retry later). A
// refusal comes from the preamble in the OPEN's payload, so the payload is never empty and
// the connection delivers it right after the handler returns: the stream is registered
// then, and resetting it from here reaches this observer, which the connection deletes.
class RefusedStream final : public mux::StreamObserver {
 public:
  RefusedStream(const mux::StreamStart& start, std::string message)
      : connection_(*start.connection), id_(start.id), message_(std::move(message)) {
    RM_ASSERT(!start.payload.empty());
  }
  void on_stream_data(std::span<const std::byte> bytes, bool) noexcept override {
    connection_.consume(id_, bytes.size());
    if (!reset_) {
      reset_ = true;
      connection_.reset(id_, mux::MuxError::resource_exhausted, message_);
    }
  }
  void on_stream_finished(mux::MuxError) noexcept override {}

 private:
  mux::Connection& connection_;
  mux::StreamId id_;
  std::string message_;
  bool reset_ = false;
};

// Sink: counts what arrives; answers the count when the client ends its side. Verified,
// it reassembles messages up to the server's bound (the OPEN names the largest).
class SinkStream final : public mux::StreamObserver {
 public:
  SinkStream(const mux::StreamStart& start, ServerStats& stats, uint32_t message_bytes_allowed, Histogram* times)
      : connection_(*start.connection), id_(start.id), stats_(stats), timer_(times) {
    const Preamble preamble = load_preamble(start.payload);
    if (preamble.verify()) verifier_.emplace(preamble.stream_key, message_bytes_allowed);
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
  void on_stream_finished(mux::MuxError) noexcept override { timer_.finished(); }

 private:
  mux::Connection& connection_;
  mux::StreamId id_;
  ServerStats& stats_;
  StreamTimer timer_;
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

// Source: writes messages of the requested size until the client resets the stream, as
// fast as the stream's credit lets them go (each write takes what the credit allows). The
// messages are built in the loop's shared buffer, not in one of the stream's own.
class SourceStream final : public mux::StreamObserver {
 public:
  SourceStream(const mux::StreamStart& start, ServerStats& stats, MessageBuffer& messages, uint32_t message_bytes,
               Histogram* times)
      : connection_(*start.connection), id_(start.id), stats_(stats), messages_(messages),
        preamble_(load_preamble(start.payload)), message_bytes_(message_bytes), timer_(times) {}
  void pump() noexcept {
    while (!done_) {
      // A message cut by the credit goes on from offset_ when the stream is writable again:
      // verified, the buffer gives back the same bytes of the same stamped message.
      const std::span<const std::byte> rest =
          preamble_.verify() ? messages_.stamped_from(message_bytes_, preamble_.stream_key, sequence_, offset_)
                             : messages_.plain(message_bytes_).subspan(offset_);
      auto taken = connection_.write(id_, rest, false);
      if (!taken || taken.value() == 0) return;
      stats_.bytes_sent.fetch_add(taken.value(), std::memory_order_relaxed);
      offset_ += taken.value();
      if (offset_ == message_bytes_) {
        offset_ = 0;
        sequence_++;
      }
    }
  }
  void on_stream_data(std::span<const std::byte> bytes, bool) noexcept override { connection_.consume(id_, bytes.size()); }
  void on_stream_writable() noexcept override { pump(); }
  void on_stream_stopped() noexcept override { done_ = true; }
  void on_stream_finished(mux::MuxError) noexcept override {
    done_ = true;
    timer_.finished();
  }

 private:
  mux::Connection& connection_;
  mux::StreamId id_;
  ServerStats& stats_;
  MessageBuffer& messages_;
  Preamble preamble_;
  uint32_t message_bytes_;
  StreamTimer timer_;
  std::size_t offset_ = 0;  // of the message being written
  uint64_t sequence_ = 0;   // of the message being written
  bool done_ = false;
};

// Echo stream: every byte goes back; ends when the client ends.
class EchoStream final : public mux::StreamObserver {
 public:
  EchoStream(const mux::StreamStart& start, ServerStats& stats, Histogram* times)
      : connection_(*start.connection), id_(start.id), stats_(stats), timer_(times), skip_(start.payload.size()) {}
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
  void on_stream_finished(mux::MuxError) noexcept override {
    finished_ = true;
    timer_.finished();
  }

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
  StreamTimer timer_;
  std::vector<std::byte> pending_;
  std::size_t sent_ = 0;
  std::size_t skip_;
  bool end_ = false;
  bool finished_ = false;
};

// The handlers of every loadgen mode, on a plain server's registry or on each loop's of a
// cluster member. `messages` is that loop's (handlers of one loop run on its thread); its
// bound is the largest message a client may ask for, and the largest unary request the
// server gathers (the library refuses a longer one before the handler runs). `times` is
// that loop's too (nullptr: calls not timed).
void register_handlers(mux::Registry& target, ServerStats& stats, MessageBuffer& messages, CallTimes* times) {
  mux::UnaryLimits unary_limits;
  unary_limits.request_bytes_max = messages.bytes_max();
  auto times_of = [times](TimedHandler handler) {
    return times != nullptr ? &times->by_handler[static_cast<std::size_t>(handler)] : nullptr;
  };
  Histogram* unary_times = times_of(TimedHandler::unary);
  Histogram* sink_times = times_of(TimedHandler::sink);
  Histogram* source_times = times_of(TimedHandler::source);
  Histogram* echo_times = times_of(TimedHandler::echo_stream);
  target.add_unary(handler_unary, [&stats, &messages, unary_times](std::span<const std::byte> request,
                                                                   std::shared_ptr<mux::Responder> responder) {
    // The handler's time, on every way out (reply handed over, or refused).
    struct Timed {
      Histogram* times;
      uint64_t started_ns = times != nullptr ? steady_ns() : 0;
      ~Timed() {
        if (times != nullptr) times->record(steady_ns() - started_ns);
      }
    } timed{unary_times};
    stats.calls.fetch_add(1, std::memory_order_relaxed);
    stats.bytes_received.fetch_add(request.size(), std::memory_order_relaxed);
    const Preamble preamble = load_preamble(request);
    const uint32_t response_bytes = preamble.size;
    if (response_bytes > messages.bytes_max()) {
      responder->fail(wire::StatusCode::resource_exhausted, too_large(response_bytes, messages.bytes_max()));
      return;
    }
    if (!preamble.verify()) {
      // Filler held by reference until sent: no copy per call, however large.
      auto filler = messages.shared_plain(response_bytes);
      stats.bytes_sent.fetch_add(response_bytes, std::memory_order_relaxed);
      const std::span<const std::byte> response(filler->data(), response_bytes);
      responder->reply(response, std::move(filler));
      return;
    }
    std::span<const std::byte> response;
    {
      const auto stamped = request.size() >= preamble_bytes ? request.subspan(preamble_bytes) : request.last(0);
      if (!message_intact(stamped) || response_bytes < verify_stamp_bytes) {
        stats.verify_errors.fetch_add(1, std::memory_order_relaxed);
        responder->fail(wire::StatusCode::handler_error, "verify: request damaged");
        return;
      }
      response = messages.stamped(response_bytes, message_stream_key(stamped), message_sequence(stamped));
    }
    stats.bytes_sent.fetch_add(response_bytes, std::memory_order_relaxed);
    // A stamped response is the call's own: what the window does not take now is copied
    // by the responder, within the connection's RPC budget, and the buffer is free again.
    responder->reply(response);
  }, unary_limits);
  target.add_stream(handler_sink, [&stats, &messages, sink_times](const mux::StreamStart& start) -> mux::StreamObserver* {
    const Preamble preamble = load_preamble(start.payload);
    if (preamble.verify() && preamble.size > messages.bytes_max()) {
      return new RefusedStream(start, too_large(preamble.size, messages.bytes_max()));
    }
    return new SinkStream(start, stats, messages.bytes_max(), sink_times);
  });
  target.add_stream(handler_source, [&stats, &messages, source_times](const mux::StreamStart& start) -> mux::StreamObserver* {
    const Preamble preamble = load_preamble(start.payload);
    if (preamble.size > messages.bytes_max()) return new RefusedStream(start, too_large(preamble.size, messages.bytes_max()));
    auto* source = new SourceStream(start, stats, messages,
                                    std::max<uint32_t>(preamble.size, preamble.verify() ? verify_stamp_bytes : 1),
                                    source_times);
    source->pump();
    return source;
  });
  target.add_stream(handler_echo_stream, [&stats, echo_times](const mux::StreamStart& start) {
    return new EchoStream(start, stats, echo_times);
  });
}

}  // namespace

ServerCounts ServerStats::counts() const noexcept {
  auto load = [](const std::atomic<uint64_t>& value) { return value.load(std::memory_order_relaxed); };
  ServerCounts out;
  out.connections = load(connections);
  out.sessions = load(sessions);
  out.resumes = load(resumes);
  out.calls = load(calls);
  out.bytes_received = load(bytes_received);
  out.bytes_sent = load(bytes_sent);
  out.verify_errors = load(verify_errors);
  out.accepts_failed_no_fds = load(accepts_failed_no_fds);
  out.sessions_open = load(sessions_open);
  return out;
}

namespace {

void add_counts(ServerCounts& total, const ServerCounts& part) {
  total.connections += part.connections;
  total.sessions += part.sessions;
  total.resumes += part.resumes;
  total.calls += part.calls;
  total.bytes_received += part.bytes_received;
  total.bytes_sent += part.bytes_sent;
  total.verify_errors += part.verify_errors;
  total.accepts_failed_no_fds += part.accepts_failed_no_fds;
  total.sessions_open += part.sessions_open;
  total.cpu_ns += part.cpu_ns;
  total.loop_enters += part.loop_enters;
}

}  // namespace

// One loop of a plain server: its acceptor, sessions, handlers and message buffer, and on
// the listening loop the listener. Made, used and destroyed on that loop's thread.
struct LoadServer::RingmuxSide final : engine::ListenerHandler, mux::ConnectionObserver {
  RingmuxSide(engine::Loop& l, ServerStats& s, const mux::ConnectionOptions& o, uint32_t message_bytes_allowed,
              CallTimes* times, const mux::AcceptorOptions& accepting)
      : loop(l), stats(s), options(o), listener(l, *this), acceptor(l, [this](int fd) {
          return add(std::make_unique<mux::Connection>(loop, fd, false, &registry, *this, options));
        }, accepting), messages(message_bytes_allowed) {
    options.resume = true;  // sessions outlive their TCP connections (mux/link/acceptor.h)
    // With a handshake stage (TLS) a session gets the transport that ran it.
    acceptor.set_transport_factory([this](std::unique_ptr<mux::Transport>& transport) {
      return add(std::make_unique<mux::Connection>(loop, std::move(transport), false, &registry, *this, options));
    });
    register_handlers(registry, stats, messages, times);
  }
  // A new session's connection: counted and kept until its session ends.
  mux::Connection* add(std::unique_ptr<mux::Connection> connection) {
    stats.sessions.fetch_add(1, std::memory_order_relaxed);
    stats.sessions_open.fetch_add(1, std::memory_order_relaxed);
    connections.push_back(std::move(connection));
    return connections.back().get();
  }
  void on_accept(int fd) noexcept override {
    stats.connections.fetch_add(1, std::memory_order_relaxed);
    acceptor.accept(fd);  // reads the HELLO: a new session, or a resume; here or on its loop
  }
  // The listener tries again by itself; running out of descriptors is counted for the
  // tool to report (ringmux-serve says so on stderr).
  void on_accept_error(engine::IoError error) noexcept override {
    if (error == engine::IoError::too_many_files) stats.accepts_failed_no_fds.fetch_add(1, std::memory_order_relaxed);
  }
  void on_listener_closed() noexcept override { listener_closed = true; }
  // An ended session goes at once (its last callback may destroy it): the server's memory
  // is bounded by the sessions alive, not by those it ever served.
  // Its last counters stay in closed_totals.
  void on_connection_closed(mux::Connection& connection, mux::MuxError, engine::IoError) noexcept override {
    closed_totals.add(connection.snapshot());
    stats.sessions_open.fetch_sub(1, std::memory_order_relaxed);
    std::erase_if(connections, [&](const auto& c) { return c.get() == &connection; });
  }
  void on_connection_resumed(mux::Connection&, uint64_t) noexcept override {
    stats.resumes.fetch_add(1, std::memory_order_relaxed);
  }
  // Closes this loop's sessions, acceptor and listener; all_closed() once they are done.
  void close() {
    // A close may report at once and erase its connection: walk a snapshot (a report
    // erases only its own connection).
    std::vector<mux::Connection*> open;
    for (auto& connection : connections) open.push_back(connection.get());
    for (mux::Connection* connection : open) connection->close();
    acceptor.close();
    if (listening) listener.close();
  }
  bool all_closed() const {
    return (!listening || listener_closed) && connections.empty() && acceptor.idle();
  }

  engine::Loop& loop;
  ServerStats& stats;
  mux::ConnectionOptions options;
  mux::Registry registry;
  engine::Listener listener;  // listens on the listening loop only
  mux::Acceptor acceptor;
  std::vector<std::unique_ptr<mux::Connection>> connections;
  MessageBuffer messages;
  mux::LinkTotals closed_totals;  // of the sessions that ended
  bool listening = false;
  bool listener_closed = false;
};

std::unique_ptr<LoadServer> LoadServer::start_ringmux(const std::string& address, const std::vector<int>& cpus,
                                                      std::string& error, const ServeOptions& serve) {
  RM_ASSERT(serve.message_bytes_allowed <= message_bytes_max);
  std::vector<engine::Address> peer_addresses;
  for (const std::string& peer : serve.peers) {
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
  options.loop_count = std::max<uint32_t>(serve.loops, 1);
  options.loop.spin_ns = serve.loop_spin_ns;
  options.cpus.assign(cpus.begin(), cpus.begin() + std::min<std::size_t>(cpus.size(), options.loop_count));
  for (uint32_t i = 0; i < options.loop_count; i++) server->loop_stats_.push_back(std::make_unique<ServerStats>());
  auto started = engine::Engine::start(options);
  if (!started) {
    error = std::string("engine: ") + engine::describe(started.error());
    return nullptr;
  }
  server->engine_ = std::move(started).value();
  for (uint32_t i = 0; i < options.loop_count; i++) server->call_times_.push_back(std::make_unique<CallTimes>());
  if (!peer_addresses.empty()) {
    // A cluster member: a node whose loops share its peer sessions; it listens, dials the
    // peers it should, and serves the same handlers on every session (cluster/node.h).
    cluster::ManagerOptions manager_options;
    manager_options.connection = serve.connection;
    manager_options.handshake = serve.handshake;
    for (uint32_t i = 0; i < options.loop_count; i++) {
      server->messages_.push_back(std::make_unique<MessageBuffer>(serve.message_bytes_allowed));
    }
    LoadServer* raw = server.get();
    auto node = cluster::Node::start(*server->engine_, parsed.value(), manager_options,
                                 [raw, timed = serve.time_calls](mux::Registry& registry, uint32_t loop) {
                                   register_handlers(registry, *raw->loop_stats_[loop], *raw->messages_[loop],
                                                     timed ? raw->call_times_[loop].get() : nullptr);
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
  const uint32_t loops = options.loop_count;
  mux::AcceptorOptions accepting;
  accepting.handshake = serve.handshake;
  raw->sides_.resize(loops);
  // The listening loop (0) last: its router hands sockets to the other loops' acceptors.
  for (uint32_t i = loops; i-- > 0;) {
    server->engine_->loop(i).run_sync([raw, i, loops, where, &error, &serve, &accepting] {
      raw->sides_[i] = std::make_unique<RingmuxSide>(raw->engine_->loop(i), *raw->loop_stats_[i], serve.connection,
                                                     serve.message_bytes_allowed,
                                                     serve.time_calls ? raw->call_times_[i].get() : nullptr, accepting);
      if (i != 0) return;
      RingmuxSide& side = *raw->sides_[0];
      if (loops > 1) {
        std::vector<mux::Acceptor*> acceptors;
        for (auto& each : raw->sides_) acceptors.push_back(&each->acceptor);
        side.acceptor.set_router(mux::hand_over_router(*raw->engine_, 0, std::move(acceptors)));
      }
      side.listening = true;
      auto listened = side.listener.listen(where);
      if (listened) raw->port_ = side.listener.address().port();
      error = listened ? "" : engine::describe(listened.error());
    });
  }
  if (!error.empty()) {
    error = "listen on " + address + ": " + error;
    server->stop();
    return nullptr;
  }
  return server;
}

namespace {

// The baseline's accept thread out of descriptors: how long it waits before it tries
// again (each try fails at once until a connection closes; 10 ms costs nothing).
constexpr uint64_t accept_retry_ns = 10'000'000;

// The baseline's calls whose response size is not the request's (protocol.h, tcp call
// mode): header, request, response, in order, until the client shuts its side. A request
// or response above `message_bytes_allowed`, a malformed header or a damaged verified
// request closes the connection.
void serve_tcp_calls(int fd, ServerStats& stats, uint32_t message_bytes_allowed, bool verify) {
  std::vector<std::byte> request, response;
  for (;;) {
    std::byte header[tcp_call_header_bytes];
    if (!tools::recv_exact(fd, header, sizeof(header))) return;
    const uint32_t request_bytes = load_u32(header);
    const uint32_t response_bytes = load_u32(std::span<const std::byte>(header).subspan(4));
    if (request_bytes < tcp_call_header_bytes || request_bytes > message_bytes_allowed || response_bytes == 0 ||
        response_bytes > message_bytes_allowed) {
      return;
    }
    request.resize(request_bytes - tcp_call_header_bytes);
    if (!tools::recv_exact(fd, request.data(), request.size())) return;
    stats.calls.fetch_add(1, std::memory_order_relaxed);
    stats.bytes_received.fetch_add(request_bytes, std::memory_order_relaxed);
    response.resize(response_bytes, std::byte{0x5a});
    if (verify) {
      if (!message_intact(request) || response_bytes < verify_stamp_bytes) {
        stats.verify_errors.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      stamp_message(response, message_stream_key(request), message_sequence(request));
    }
    if (!tools::send_all(fd, response.data(), response.size())) return;
    stats.bytes_sent.fetch_add(response_bytes, std::memory_order_relaxed);
  }
}

// Serves one baseline connection; the caller closes `fd`. A hello asking for messages
// above `message_bytes_allowed` (a source's, a verified sink's) is answered by the close.
void serve_tcp_connection(int fd, ServerStats& stats, uint32_t message_bytes_allowed) {
  std::byte hello[tcp_hello_bytes];
  if (!tools::recv_exact(fd, hello, sizeof(hello))) return;
  const uint32_t mode = load_u32(hello);
  const Preamble preamble = load_preamble(std::span<const std::byte>(hello, open_verify_bytes));
  uint32_t message_bytes = 0;
  std::memcpy(&message_bytes, hello + open_verify_bytes, sizeof(message_bytes));
  if ((mode == tcp_mode_source || (mode == tcp_mode_sink && preamble.verify())) && message_bytes > message_bytes_allowed) return;
  if (mode == tcp_mode_source) {
    // Writes messages until the client goes away (send fails).
    std::vector<std::byte> message(std::max<uint32_t>(message_bytes, preamble.verify() ? verify_stamp_bytes : 1),
                                   std::byte{0x5a});
    for (uint64_t sequence = 0;; sequence++) {
      if (preamble.verify()) stamp_message(message, preamble.stream_key, sequence);
      if (!tools::send_all(fd, message.data(), message.size())) return;
      stats.bytes_sent.fetch_add(message.size(), std::memory_order_relaxed);
    }
  }
  if (mode == tcp_mode_call) return serve_tcp_calls(fd, stats, message_bytes_allowed, preamble.verify());
  std::optional<StreamVerifier> verifier;
  if (mode == tcp_mode_sink && preamble.verify()) verifier.emplace(preamble.stream_key, message_bytes_allowed);
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

std::unique_ptr<LoadServer> LoadServer::start_tcp(const std::string& address, int cpu, std::string& error,
                                                  uint32_t message_bytes_allowed) {
  RM_ASSERT(message_bytes_allowed <= message_bytes_max);
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
  server->tcp_message_bytes_allowed_ = message_bytes_allowed;
  LoadServer* raw = server.get();
  server->accept_thread_ = std::thread([raw, cpu] {
    if (cpu >= 0) (void)engine::pin_current_thread(cpu);
    while (!raw->stopping_.load()) {
      const int client = ::accept4(raw->listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) {
        if (errno == EINTR) continue;
        if (errno == EMFILE || errno == ENFILE) {
          // Out of descriptors: the connection waits in the backlog until one closes.
          raw->stats_.accepts_failed_no_fds.fetch_add(1, std::memory_order_relaxed);
          std::this_thread::sleep_for(std::chrono::nanoseconds(accept_retry_ns));
          continue;
        }
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
        serve_tcp_connection(client, raw->stats_, raw->tcp_message_bytes_allowed_);
        // Forget the fd before closing it, so that stop() never shuts down a reused number.
        std::lock_guard<std::mutex> lock(raw->connection_fds_mutex_);
        std::erase(raw->connection_fds_, client);
        ::close(client);
      });
    }
  });
  return server;
}

const char* describe(TimedHandler handler) noexcept {
  switch (handler) {
    case TimedHandler::unary: return "unary";
    case TimedHandler::sink: return "sink";
    case TimedHandler::source: return "source";
    case TimedHandler::echo_stream: return "echo_stream";
  }
  return "unknown";
}

std::vector<LoopSnapshot> LoadServer::snapshot() {
  std::vector<LoopSnapshot> loops;
  if (!engine_ || stopped_) return loops;
  loops.resize(call_times_.size());
  for (std::size_t i = 0; i < loops.size(); i++) {
    LoopSnapshot& out = loops[i];
    engine_->loop(static_cast<uint32_t>(i)).run_sync([this, i, &out] {
      out.loop = engine_->loop(static_cast<uint32_t>(i)).stats_snapshot();
      out.call_times = *call_times_[i];
      if (i < sides_.size() && sides_[i]) {
        const RingmuxSide& side = *sides_[i];
        out.link = side.closed_totals;
        for (const auto& connection : side.connections) out.link.add(connection->snapshot());
        out.link_counted = true;
      }
      if (node_) out.peers = node_->manager(static_cast<uint32_t>(i)).snapshot();
    });
  }
  return loops;
}

void LoadServer::stop() {
  if (stopped_) return;
  stopped_ = true;
  if (engine_) {
    for (uint32_t i = 0; i < engine_->loop_count(); i++) {
      loop_cpu_ns_stopped_.push_back(engine_->loop_cpu_ns(i));
      loop_enters_stopped_.push_back(engine_->loop(i).stats_snapshot().enters);
    }
    if (node_) {
      // A cluster member: its node's totals are the server's connection figures.
      const cluster::ManagerStats totals = node_->stats();
      stats_.connections.store(totals.connections_accepted, std::memory_order_relaxed);
      stats_.sessions.store(totals.sessions, std::memory_order_relaxed);
      stats_.resumes.store(totals.resumes, std::memory_order_relaxed);
      node_.reset();  // closes every session and waits for it
    }
    if (!sides_.empty()) {
      // The listening loop first: once its acceptor is closed it hands nothing over, and
      // what it handed over before runs on each loop ahead of the close posted after it.
      for (uint32_t i = 0; i < sides_.size(); i++) {
        engine_->loop(i).run_sync([side = sides_[i].get()] {
          if (side != nullptr) side->close();
        });
      }
      // Closing completes on the loops: wait for each (bounded).
      for (uint32_t i = 0; i < sides_.size(); i++) {
        for (int k = 0; k < 5000; k++) {
          bool closed = false;
          engine_->loop(i).run_sync([side = sides_[i].get(), &closed] { closed = side == nullptr || side->all_closed(); });
          if (closed) break;
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
      }
      for (uint32_t i = 0; i < sides_.size(); i++) engine_->loop(i).run_sync([this, i] { sides_[i].reset(); });
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

ServerCounts LoadServer::totals() {
  ServerCounts total = stats_.counts();
  for (const ServerCounts& loop : per_loop()) {
    ServerCounts part = loop;
    part.connections = 0;  // a loop's share; the accepts are counted once, below
    add_counts(total, part);
  }
  for (const auto& loop : loop_stats_) total.connections += loop->connections.load(std::memory_order_relaxed);
  return total;
}

std::vector<ServerCounts> LoadServer::per_loop() {
  std::vector<ServerCounts> out;
  for (uint32_t i = 0; i < loop_stats_.size(); i++) {
    ServerCounts loop = loop_stats_[i]->counts();
    loop.connections = loop.sessions + loop.resumes;  // the listening loop's accepts are all of them
    if (i < loop_cpu_ns_stopped_.size()) {
      loop.cpu_ns = loop_cpu_ns_stopped_[i];
      loop.loop_enters = loop_enters_stopped_[i];
    } else if (engine_) {
      loop.cpu_ns = engine_->loop_cpu_ns(i);
      loop.loop_enters = engine_->loop(i).stats_snapshot().enters;
    }
    out.push_back(loop);
  }
  return out;
}

LoadServer::~LoadServer() { stop(); }

}  // namespace ringmux::loadgen
