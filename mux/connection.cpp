#include "mux/connection.h"

#include <endian.h>
#include <sys/random.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

#include "engine/assert.h"
#include "mux/acceptor.h"

namespace ringmux::mux {

using engine::Loop;

// ---- Registry ----------------------------------------------------------------------------

void Registry::add_stream(uint32_t handler_id, StreamHandler handler) {
  RM_ASSERT(handler);
  const bool inserted = handlers_.emplace(handler_id, std::move(handler)).second;
  RM_ASSERT(inserted);  // one handler per id
}

class OrderedStart;

namespace {

// The connection's order gate, for the unary glue below (Connection befriends OrderedStart).
void release_order(Connection& connection, uint64_t token) noexcept;
void enter_order(Connection& connection, std::shared_ptr<OrderedStart> start) noexcept;

// Bytes charged to a connection's RPC buffer budget (Connection::rpc_charge), released
// when this goes (movable: a gathered request moves with its charge).
class RpcCharge {
 public:
  explicit RpcCharge(Connection& connection) noexcept : connection_(&connection) {}
  RpcCharge(RpcCharge&& other) noexcept : connection_(other.connection_), bytes_(std::exchange(other.bytes_, 0)) {}
  RpcCharge& operator=(RpcCharge&&) = delete;
  ~RpcCharge() { release(); }
  bool add(std::size_t bytes) noexcept {
    if (!connection_->rpc_charge(bytes)) return false;
    bytes_ += bytes;
    return true;
  }
  void release() noexcept {
    if (bytes_ > 0) connection_->rpc_release(std::exchange(bytes_, 0));
  }

 private:
  Connection* connection_;
  std::size_t bytes_ = 0;
};

std::string over_budget_message(const Connection& connection, std::string_view what) {
  return std::string(what) + ": this connection's RPC buffer is over its limit of " +
         std::to_string(connection.options().rpc_bytes_max) + " bytes (limits::connection_rpc_bytes_max)";
}

// Server side of a unary call: gathers the request, runs the handler, sends the reply.
class UnaryResponder final : public Responder {
 public:
  UnaryResponder(Connection& connection, StreamId id) : connection_(&connection), id_(id), charge_(connection) {}

  void reply(std::span<const std::byte> response) noexcept override { send(response, nullptr); }
  void reply(std::span<const std::byte> response, std::shared_ptr<const void> keep_alive) noexcept override {
    RM_ASSERT(keep_alive != nullptr);
    send(response, std::move(keep_alive));
  }
  void fail(wire::StatusCode status, std::string_view message) noexcept override {
    if (done_ || cancelled_) return;
    done_ = true;
    release();
    connection_->reset(id_, error_from_status(status) == MuxError::stream_reset ? MuxError::handler_error
                                                                                 : error_from_status(status),
                       message.empty() ? std::string_view("handler failed") : message);
  }
  bool cancelled() const noexcept override { return cancelled_; }
  void on_cancel(std::function<void()> callback) noexcept override { cancel_callback_ = std::move(callback); }
  void release() noexcept override {
    if (order_token_ == 0) return;  // unordered, or released already
    const uint64_t token = order_token_;
    order_token_ = 0;
    release_order(*connection_, token);
  }
  // An ordered request now holds the order under `token`.
  void hold(uint64_t token) noexcept { order_token_ = token; }

  void writable() noexcept {
    if (rest_.empty() || cancelled_) return;
    auto taken = connection_->write(id_, rest_, true);
    if (!taken) return;
    rest_ = rest_.subspan(taken.value());
    if (rest_.empty()) drop_rest();
  }
  void finished(MuxError error) noexcept {
    if (error != MuxError::none && !done_) {
      cancelled_ = true;
      if (cancel_callback_) cancel_callback_();
    }
    done_ = true;
    drop_rest();
    release();
  }

 private:
  void send(std::span<const std::byte> response, std::shared_ptr<const void> keep_alive) noexcept {
    if (done_ || cancelled_) return;
    done_ = true;
    release();
    auto taken = connection_->write(id_, response, true);
    if (!taken || taken.value() == response.size()) return;  // all sent, or the stream ended meanwhile
    // The rest of a response larger than the window waits for credit: held by reference
    // when the caller keeps it alive, else copied (and charged).
    rest_ = response.subspan(taken.value());
    if (keep_alive != nullptr) {
      keep_alive_ = std::move(keep_alive);
      return;
    }
    if (!charge_.add(rest_.size())) {
      rest_ = {};
      connection_->reset(id_, MuxError::resource_exhausted, over_budget_message(*connection_, "response not sent"));
      return;
    }
    copy_.assign(rest_.begin(), rest_.end());
    rest_ = copy_;
  }
  void drop_rest() noexcept {
    rest_ = {};
    keep_alive_.reset();
    std::vector<std::byte>().swap(copy_);
    charge_.release();
  }

  Connection* connection_;
  StreamId id_;
  bool done_ = false;
  bool cancelled_ = false;
  std::span<const std::byte> rest_;         // of the response, waiting for credit
  std::shared_ptr<const void> keep_alive_;  // keeps rest_ valid when the caller's
  std::vector<std::byte> copy_;             // holds rest_ otherwise
  RpcCharge charge_;                        // for copy_
  std::function<void()> cancel_callback_;
  uint64_t order_token_ = 0;  // holding the order of an ordered handler
};

}  // namespace

// An ordered request whose start waits for the order: the request (copied, since it
// waits), its responder and its handler.
class OrderedStart {
 public:
  explicit OrderedStart(RpcCharge&& request_charge) noexcept : charge(std::move(request_charge)) {}
  std::vector<std::byte> request;
  RpcCharge charge;  // for `request`, until the handler starts
  std::shared_ptr<UnaryResponder> responder;
  const Registry::UnaryHandler* handler = nullptr;

  static void enter(Connection& connection, std::shared_ptr<OrderedStart> start) noexcept {
    (void)connection.order_enter(std::move(start));
  }
  static void release(Connection& connection, uint64_t token) noexcept { connection.order_release(token); }
};

namespace {

void release_order(Connection& connection, uint64_t token) noexcept { OrderedStart::release(connection, token); }
void enter_order(Connection& connection, std::shared_ptr<OrderedStart> start) noexcept {
  OrderedStart::enter(connection, std::move(start));
}

class UnaryServerStream final : public StreamObserver {
 public:
  // The stream's deadline is the connection's (Connection::on_stream_opened arms it).
  UnaryServerStream(const StreamStart& start, const Registry::UnaryHandler& handler, UnaryLimits limits,
                    bool ordered = false)
      : connection_(*start.connection), id_(start.id), handler_(handler), limits_(limits), ordered_(ordered),
        responder_(std::make_shared<UnaryResponder>(*start.connection, start.id)), charge_(*start.connection) {}

  void on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept override {
    // The bytes are consumed into the request (bounded below), so their credit returns.
    connection_.consume(id_, bytes.size());
    if (refused_) return;
    if (request_.size() + bytes.size() > limits_.request_bytes_max) {
      return refuse("unary request over " + std::to_string(limits_.request_bytes_max) +
                    " bytes, this handler's limit (UnaryLimits::request_bytes_max)");
    }
    const bool whole = end_stream && request_.empty() && !ordered_;
    if (!whole && !charge_.add(bytes.size())) return refuse(over_budget_message(connection_, "request refused"));
    if (ordered_) {
      request_.insert(request_.end(), bytes.begin(), bytes.end());
      if (!end_stream) return;
      auto start = std::make_shared<OrderedStart>(std::move(charge_));
      start->request = std::move(request_);
      start->responder = responder_;
      start->handler = &handler_;
      enter_order(connection_, std::move(start));  // may run it now, and delete this stream
      return;
    }
    if (whole) {
      handler_(bytes, responder_);  // the whole request in one frame: no copy
      return;
    }
    // Copy: a request split over several frames is gathered before the handler runs.
    request_.insert(request_.end(), bytes.begin(), bytes.end());
    if (end_stream) {
      // The handler may reply at once, which can finish and delete this stream: the
      // request (and its charge) must not live in it then.
      RpcCharge charge(std::move(charge_));
      const std::vector<std::byte> request = std::move(request_);
      handler_(request, responder_);
    }
  }
  void on_stream_writable() noexcept override { responder_->writable(); }
  void on_stream_finished(MuxError error) noexcept override { responder_->finished(error); }

 private:
  // Fails the call (stream-scoped, the message names the limit) and drops what was gathered.
  void refuse(const std::string& message) noexcept {
    refused_ = true;
    std::vector<std::byte>().swap(request_);
    charge_.release();
    responder_->fail(wire::StatusCode::resource_exhausted, message);  // may delete this stream
  }

  Connection& connection_;
  StreamId id_;
  const Registry::UnaryHandler& handler_;
  UnaryLimits limits_;
  bool ordered_;
  bool refused_ = false;
  std::shared_ptr<UnaryResponder> responder_;
  std::vector<std::byte> request_;
  RpcCharge charge_;  // for request_
};

// Client side of a unary call.
class UnaryCall final : public StreamObserver {
 public:
  // The call's deadline is its stream's (Connection arms it).
  UnaryCall(Connection& connection, CallCallback done) : connection_(connection), done_(std::move(done)) {}

  void set_id(StreamId id) noexcept { id_ = id; }
  void on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept override {
    connection_.consume(id_, bytes.size());
    if (response_.size() + bytes.size() > connection_.options().call_response_bytes_max) {
      // A peer answering with more than we gather: the call fails, the stream is reset.
      return connection_.reset(id_, MuxError::resource_exhausted,
                               "unary response over " + std::to_string(connection_.options().call_response_bytes_max) +
                                   " bytes (ConnectionOptions::call_response_bytes_max)");
    }
    if (end_stream && response_.empty()) {
      whole_ = bytes;  // the whole response in one frame: handed on with no copy
      return;
    }
    // Copy: a response split over several frames is gathered.
    response_.insert(response_.end(), bytes.begin(), bytes.end());
  }
  void on_stream_message(std::string_view message) noexcept override { message_ = std::string(message); }
  void on_stream_finished(MuxError error) noexcept override {
    CallResult result;
    result.error = error;
    result.message = std::move(message_);
    if (error == MuxError::none) {
      result.response = whole_.empty() ? std::span<const std::byte>(response_) : whole_;
    }
    done_(result);
  }

 private:
  Connection& connection_;
  CallCallback done_;
  StreamId id_ = 0;
  std::vector<std::byte> response_;
  std::span<const std::byte> whole_;  // valid: finished follows in the same receive call
  std::string message_;
};

}  // namespace

void Registry::add_unary(uint32_t handler_id, UnaryHandler handler, UnaryLimits limits) {
  RM_ASSERT(handler);
  auto shared = std::make_shared<UnaryHandler>(std::move(handler));
  add_stream(handler_id, [shared, limits](const StreamStart& start) -> StreamObserver* {
    return new UnaryServerStream(start, *shared, limits);
  });
}

void Registry::add_unary_ordered(uint32_t handler_id, UnaryHandler handler, UnaryLimits limits) {
  RM_ASSERT(handler);
  auto shared = std::make_shared<UnaryHandler>(std::move(handler));
  add_stream(handler_id, [shared, limits](const StreamStart& start) -> StreamObserver* {
    return new UnaryServerStream(start, *shared, limits, true);
  });
}

void Registry::add_unary_route(uint32_t handler_id, uint64_t route_key, UnaryHandler handler) {
  RM_ASSERT(handler);
  auto& table = routes_[handler_id];
  if (!table) {
    // The first route of this id: the id's handler dispatches by route key.
    table = std::make_shared<std::unordered_map<uint64_t, UnaryHandler>>();
    add_unary(handler_id, [handler_id, routes = table](std::span<const std::byte> request,
                                                       std::shared_ptr<Responder> responder) {
      uint64_t key = 0;
      if (request.size() < sizeof(key)) {
        return responder->fail(wire::StatusCode::unknown_handler, "routed handler " + std::to_string(handler_id) +
                                                                      ": the request has no route key");
      }
      std::memcpy(&key, request.data(), sizeof(key));
      key = le64toh(key);
      auto route = routes->find(key);
      if (route == routes->end()) {
        return responder->fail(wire::StatusCode::unknown_handler, "handler " + std::to_string(handler_id) +
                                                                      " has no route " + std::to_string(key));
      }
      route->second(request.subspan(sizeof(key)), std::move(responder));
    });
  }
  const bool inserted = table->emplace(route_key, std::move(handler)).second;
  RM_ASSERT(inserted);  // one handler per route
}

std::vector<std::byte> routed_request(uint64_t route_key, std::span<const std::byte> request) {
  std::vector<std::byte> bytes(sizeof(route_key) + request.size());
  const uint64_t key = htole64(route_key);
  std::memcpy(bytes.data(), &key, sizeof(key));
  if (!request.empty()) std::memcpy(bytes.data() + sizeof(key), request.data(), request.size());
  return bytes;
}

const Registry::StreamHandler* Registry::find(uint32_t handler_id) const noexcept {
  auto it = handlers_.find(handler_id);
  return it == handlers_.end() ? nullptr : &it->second;
}

// ---- Connection --------------------------------------------------------------------------

namespace {

// A new session's id: 128 bits from the kernel's random source. getrandom(2) does not fail
// for 16 bytes once the pool is initialised except when a signal interrupts it (EINTR,
// retried); anything else means the system cannot give a session an identity (fatal).
wire::SessionId random_session_id() noexcept {
  wire::SessionId id{};
  std::size_t filled = 0;
  for (int attempt = 0; attempt < 100 && filled < id.size(); attempt++) {
    const ssize_t got = ::getrandom(id.data() + filled, id.size() - filled, 0);
    if (got > 0) filled += static_cast<std::size_t>(got);
    else RM_ASSERT(got < 0 && errno == EINTR);
  }
  RM_ASSERT(filled == id.size());
  return id;
}

// The session options of one side: the dialer's session gets a fresh random id unless the
// caller supplied one.
SessionOptions session_options_for(const SessionOptions& options, bool dialer) noexcept {
  SessionOptions session_options = options;
  session_options.dialer = dialer;
  if (dialer && session_options.session_id == wire::SessionId{}) session_options.session_id = random_session_id();
  return session_options;
}

}  // namespace

Connection::Connection(Loop& loop, int fd, bool dialer, const Registry* registry, ConnectionObserver& observer,
                       const ConnectionOptions& options)
    : loop_(loop),
      registry_(registry),
      observer_(observer),
      options_(options),
      session_(*this, [&] {
        SessionOptions session_options = session_options_for(options.session, dialer);
        session_options.resumable = options.resume;
        return session_options;
      }()),
      transport_(std::make_unique<Transport>(*this, fd)),
      keepalive_(&Connection::on_keepalive, this),
      resume_deadline_(&Connection::on_resume_deadline, this),
      redial_timer_(&Connection::on_redial_timer, this),
      ack_timer_(&Connection::on_ack_timer, this),
      connector_(loop, *this) {
  RM_ASSERT(!options.resume || !dialer || options.peer.length != 0);  // a resuming dialer redials somewhere
  // Jitter only spreads redials apart: the session id's bits are random enough for that.
  std::memcpy(&jitter_state_, session_.session_id().data(), sizeof(jitter_state_));
  jitter_state_ |= 1;
}

Connection::~Connection() {
  RM_ASSERT(closed());
  RM_ASSERT(depth_ == 0);
  reap();
}

void Connection::start() noexcept {
  EntryGuard guard(*this);
  last_received_ns_ = loop_.now_ns();
  transport_started_ns_ = last_received_ns_;
  transport_->socket.start();
  loop_.timer_start(keepalive_, options_.keepalive_interval_ns);
  // The dialer's HELLO goes out at once (with whatever was queued behind it), so that the
  // acceptor, whose frames wait for it, never waits for our first stream or keepalive.
  flush();
}

void Connection::start(const wire::Hello& hello) noexcept {
  EntryGuard guard(*this);
  if (!session_.accept_hello(hello)) {
    end(session_.failure());
    return;
  }
  start();
}

void Connection::close(MuxError reason) noexcept {
  EntryGuard guard(*this);
  // A resumable peer would otherwise take the closed socket for a broken connection and
  // wait for a resume until its timeout: an ERROR on stream 0 ends its session at once.
  // If it does not go out, the peer's resume is refused instead.
  if (options_.resume && !ended_ && connected()) send_final_error(reason, "session closed");
  end(reason);
}

void Connection::send_final_error(MuxError reason, std::string_view message) noexcept {
  if (transport_ == nullptr || transport_->socket.send_in_flight() ||
      transport_->socket.state() != engine::Socket::State::open) {
    return;
  }
  if (message.size() > limits::frame_text_bytes_max) message = message.substr(0, limits::frame_text_bytes_max);
  // Written straight to the socket (no send in flight: a fresh frame boundary), since the
  // session's own output ends with it.
  std::array<std::byte, wire::frame_bytes(4 + limits::frame_text_bytes_max)> frame{};  // status, then the text
  const std::size_t bytes = wire::encode_error(frame, 0, status_of(reason), message);
  const int fd = transport_->socket.fd();
  (void)::send(fd, frame.data(), bytes, MSG_DONTWAIT | MSG_NOSIGNAL);
  // The FIN follows the ERROR, and what the peer sent that we will never read is dropped
  // now: a socket closed with unread input resets the connection, and the reset discards
  // our unsent ERROR with it. Bounded: a peer still sending gets its reset after all.
  (void)::shutdown(fd, SHUT_WR);
  std::array<std::byte, 64 * 1024> sink;
  for (int i = 0; i < 16 && ::recv(fd, sink.data(), sink.size(), MSG_DONTWAIT | MSG_TRUNC) > 0; i++) {
  }
}

void Connection::tell_peer_why() noexcept {
  const std::string& why = session_.failure_message();
  send_final_error(session_.failure(), why.empty() ? std::string_view(describe(session_.failure())) : why);
}

bool Connection::rpc_charge(std::size_t bytes) noexcept {
  if (rpc_bytes_buffered_ + bytes > options_.rpc_bytes_max) return false;
  rpc_bytes_buffered_ += bytes;
  return true;
}

void Connection::rpc_release(std::size_t bytes) noexcept {
  RM_ASSERT(bytes <= rpc_bytes_buffered_);
  rpc_bytes_buffered_ -= bytes;
}

void Connection::arm_stream_timer(StreamId id, Entry& entry) noexcept {
  uint64_t at_ns = entry.deadline_ns;
  if (entry.stop_close_ns != 0 && (at_ns == 0 || entry.stop_close_ns < at_ns)) at_ns = entry.stop_close_ns;
  if (at_ns == 0 || at_ns == UINT64_MAX) {  // none, or beyond the clock (a saturated budget)
    if (entry.timer != nullptr) loop_.timer_cancel(entry.timer->timer);
    return;
  }
  if (entry.timer == nullptr) {
    entry.timer = std::make_unique<StreamTimer>();
    entry.timer->connection = this;
    entry.timer->id = id;
    entry.timer->timer.set_callback(&Connection::on_stream_timer, entry.timer.get());
  }
  const uint64_t now = loop_.now_ns();
  loop_.timer_start(entry.timer->timer, at_ns > now ? at_ns - now : 0);
}

void Connection::on_stream_timer(engine::Timer& timer) noexcept {
  auto& stream_timer = *static_cast<StreamTimer*>(timer.context());
  Connection& self = *stream_timer.connection;
  const StreamId id = stream_timer.id;
  EntryGuard guard(self);
  auto it = self.streams_.find(id);
  RM_ASSERT(it != self.streams_.end());  // a finished stream's timer is cancelled with it
  Entry& entry = it->second;
  const uint64_t now = self.loop_.now_ns();
  if (entry.deadline_ns != 0 && now >= entry.deadline_ns) {
    self.reset(id, MuxError::deadline_exceeded);  // finishes the stream
    return;
  }
  // The peer stopped the stream and our writer has neither ended nor reset it since.
  RM_ASSERT(entry.stop_close_ns != 0 && now >= entry.stop_close_ns);
  if (self.session_.local_open(id)) {
    self.reset(id, MuxError::stream_stopped,
               "the peer stopped this stream and its writer neither ended nor reset it "
               "(limits::stopped_stream_close_timeout_ns)");
    return;
  }
  entry.stop_close_ns = 0;  // our side has ended: the peer's own end closes the stream
  self.arm_stream_timer(id, entry);
}

ResumeStats Connection::resume_stats() const noexcept {
  ResumeStats stats = resume_stats_;
  stats.resumes = session_.stats().resumes;
  stats.bytes_replayed = session_.stats().bytes_replayed;
  stats.held_bytes_peak = session_.held().bytes_held_peak();
  return stats;
}

// ---- streams ----

Result<StreamId, MuxError> Connection::open(uint32_t handler_id, uint64_t deadline_ns,
                                            std::span<const std::byte> payload, bool end_stream,
                                            StreamObserver& observer) noexcept {
  EntryGuard guard(*this);
  uint64_t budget_ns = 0;
  if (deadline_ns != 0) {
    const uint64_t now = Loop::clock_ns();
    if (deadline_ns <= now) return Err{MuxError::deadline_exceeded};  // never sent
    budget_ns = deadline_ns - now;
  }
  // The initial payload must fit the initial stream window (the caller's part of the
  // contract); the connection's credit, which other streams may hold, is waited for: what
  // the OPEN cannot carry now follows as DATA (open_rests_).
  if (payload.size() > options_.session.stream_window_bytes) {
    return Err{session_.failed() ? MuxError::stream_closed : MuxError::refused};
  }
  auto opened = session_.open_some(handler_id, budget_ns, payload, end_stream);
  if (!opened) return Err{opened.error()};
  const StreamId id = opened->id;
  Entry& entry = streams_.emplace(id, Entry{&observer, false}).first->second;
  entry.deadline_ns = deadline_ns;
  arm_stream_timer(id, entry);
  keep_open_rest(id, payload.subspan(opened->taken), end_stream);
  flush();
  return id;
}

void Connection::keep_open_rest(StreamId id, std::span<const std::byte> rest, bool end_stream) {
  // Copy: the caller's payload is valid only during its call.
  if (!rest.empty()) open_rests_.emplace(id, OpenRest{std::vector<std::byte>(rest.begin(), rest.end()), end_stream});
}

bool Connection::send_open_rest(StreamId id) noexcept {
  if (open_rests_.empty()) return true;  // the usual case, on every write
  auto it = open_rests_.find(id);
  if (it == open_rests_.end()) return true;
  OpenRest& rest = it->second;
  auto taken = session_.write(id, rest.bytes, rest.end_stream);
  if (taken) {
    rest.bytes.erase(rest.bytes.begin(), rest.bytes.begin() + static_cast<std::ptrdiff_t>(taken.value()));
    if (!rest.bytes.empty()) return false;  // the session wakes the stream when more can go
  }
  open_rests_.erase(it);  // all sent, or the stream failed (its finish reports that)
  return true;
}

Result<std::size_t, MuxError> Connection::write(StreamId id, std::span<const std::byte> bytes, bool end_stream) noexcept {
  EntryGuard guard(*this);
  // The open's payload goes first; until it has, nothing else is taken (the writer hears
  // on_stream_writable once it has). An END alone (no bytes) is queued behind it.
  if (!send_open_rest(id)) {
    OpenRest& rest = open_rests_.find(id)->second;
    if (rest.end_stream) return Err{MuxError::stream_closed};  // ended already
    if (bytes.empty() && end_stream) rest.end_stream = true;
    flush();
    return std::size_t{0};
  }
  auto taken = session_.write(id, bytes, end_stream);
  flush();
  return taken;
}

Result<void, MuxError> Connection::end(StreamId id) noexcept {
  EntryGuard guard(*this);
  if (!send_open_rest(id)) {
    // The END follows the open's payload still waiting for credit.
    OpenRest& rest = open_rests_.find(id)->second;
    if (rest.end_stream) return Err{MuxError::stream_closed};  // ended already
    rest.end_stream = true;
    flush();
    return {};
  }
  auto ended = session_.end(id);
  flush();
  return ended;
}

void Connection::reset(StreamId id, MuxError reason, std::string_view message) noexcept {
  EntryGuard guard(*this);
  session_.reset(id, reason, message);
  flush();
}

void Connection::stop(StreamId id) noexcept {
  EntryGuard guard(*this);
  session_.stop(id);
  flush();
}

void Connection::consume(StreamId id, std::size_t bytes) noexcept {
  EntryGuard guard(*this);
  session_.consume(id, bytes, loop_.now_ns());
  // Inside the receive path the credit leaves with the batch flushed after the read;
  // called on its own (a worker's release reaching the loop) it must go out now, or a
  // sender waiting for it would wait forever.
  if (depth_ == 1) flush();
}

StreamId Connection::call(uint32_t handler_id, std::span<const std::byte> request, uint64_t deadline_ns,
                          CallCallback done) noexcept {
  EntryGuard guard(*this);
  auto* call = new UnaryCall(*this, std::move(done));
  uint64_t budget_ns = 0;
  if (deadline_ns != 0) {
    const uint64_t now = Loop::clock_ns();
    if (deadline_ns <= now) {
      call->on_stream_finished(MuxError::deadline_exceeded);
      delete call;
      return 0;
    }
    budget_ns = deadline_ns - now;
  }
  // A call waits for credit rather than fail for want of it: what the OPEN cannot carry
  // now follows as DATA.
  auto opened = session_.open_some(handler_id, budget_ns, request, true);
  if (!opened) {
    call->on_stream_finished(opened.error());
    delete call;
    return 0;
  }
  const StreamId id = opened->id;
  Entry& entry = streams_.emplace(id, Entry{call, true}).first->second;
  entry.deadline_ns = deadline_ns;
  arm_stream_timer(id, entry);
  keep_open_rest(id, request.subspan(opened->taken), true);
  call->set_id(id);
  // A nested call of the ordered handler holding the order (made inside its invocation):
  // while it is outstanding, an ordered request coming back is a self-deadlock.
  if (order_in_handler_ && order_holder_ != 0) order_nested_calls_.push_back(id);
  flush();
  return id;
}

// ---- ordered handlers ----

bool Connection::order_enter(std::shared_ptr<OrderedStart> start) noexcept {
  if (order_holder_ != 0 && !order_nested_calls_.empty()) {
    // The holder waits on a call it made over this session, and this request came back
    // over the same session: queued, it would wait for the holder, which waits for it.
    start->responder->fail(wire::StatusCode::handler_error,
                           "ordered handler re-entered on this session while the order is held by a handler "
                           "waiting on its nested call (release() before nested calls)");
    return false;
  }
  order_waiting_.push_back(std::move(start));
  order_drain();
  return true;
}

void Connection::order_release(uint64_t token) noexcept {
  if (token != order_holder_) return;
  order_holder_ = 0;
  order_nested_calls_.clear();
  order_drain();
}

void Connection::order_drain() noexcept {
  // A loop, not recursion: a handler that replies at once releases the order inside its
  // own start, and 10,000 waiting requests must not become 10,000 stack frames.
  if (order_draining_) return;
  order_draining_ = true;
  while (order_holder_ == 0 && !order_waiting_.empty() && !ended_) {
    std::shared_ptr<OrderedStart> start = std::move(order_waiting_.front());
    order_waiting_.pop_front();
    if (start->responder->cancelled()) continue;  // cancelled while it waited: never starts
    order_holder_ = order_next_token_++;
    start->responder->hold(order_holder_);
    order_in_handler_ = true;
    (*start->handler)(start->request, start->responder);
    order_in_handler_ = false;
  }
  if (ended_) order_waiting_.clear();
  order_draining_ = false;
}

void Connection::goaway(wire::StatusCode code) noexcept {
  EntryGuard guard(*this);
  session_.goaway(code);
  flush();
}

// ---- session events ----

void Connection::on_stream_opened(StreamId id, uint32_t handler_id, uint64_t deadline_budget_ns,
                                  std::span<const std::byte> payload, bool end_stream) noexcept {
  // A stream refused here never reaches a handler: its payload's credit goes back at once.
  auto refuse = [&](MuxError reason) {
    session_.consume(id, payload.size(), loop_.now_ns());
    session_.reset(id, reason);
  };
  const Registry::StreamHandler* handler = registry_ != nullptr ? registry_->find(handler_id) : nullptr;
  if (handler == nullptr) return refuse(MuxError::unknown_handler);
  // Its deadline has (as good as) passed: refuse it rather than start the handler.
  if (deadline_budget_ns != 0 && deadline_budget_ns < limits::deadline_budget_ns_min) {
    return refuse(MuxError::deadline_exceeded);
  }
  // The budget is the peer's: a huge one saturates to "no deadline we can reach".
  StreamStart start{this, id, handler_id,
                    deadline_budget_ns == 0 ? 0 : engine::add_saturating(loop_.now_ns(), deadline_budget_ns), payload,
                    end_stream};
  StreamObserver* observer = (*handler)(start);
  if (observer == nullptr) return refuse(MuxError::unknown_handler);
  Entry& entry = streams_.emplace(id, Entry{observer, true}).first->second;
  entry.deadline_ns = start.deadline_ns;
  arm_stream_timer(id, entry);
  if (!payload.empty() || end_stream) observer->on_stream_data(payload, end_stream);
}

void Connection::on_stream_data(StreamId id, std::span<const std::byte> payload, bool end_stream) noexcept {
  auto it = streams_.find(id);
  if (it == streams_.end()) {
    session_.consume(id, payload.size(), loop_.now_ns());
    return;
  }
  it->second.observer->on_stream_data(payload, end_stream);
}

void Connection::finish(StreamId id, MuxError error, std::string_view message) noexcept {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  const Entry entry = std::move(it->second);
  if (entry.timer != nullptr) loop_.timer_cancel(entry.timer->timer);
  streams_.erase(it);
  open_rests_.erase(id);
  if (!order_nested_calls_.empty()) {
    std::erase(order_nested_calls_, id);
  }
  if (!message.empty()) entry.observer->on_stream_message(message);
  entry.observer->on_stream_finished(error);
  if (entry.owned) {
    RM_ASSERT(depth_ > 0);  // every path here starts at an entry point
    finished_.emplace_back(entry.observer);
  }
}

void Connection::reap() noexcept {
  if (reaping_) return;  // observers called below enter and leave entry points again
  reaping_ = true;
  // Writers woken meanwhile go on now. Their writes may wake others: a few rounds, each
  // bounded; what remains waits for the next entry point (a send completion is coming).
  bool rests_sent = false;
  for (int round = 0; round < 16 && !writable_pending_.empty(); round++) {
    std::vector<StreamId>& ids = writable_scratch_;  // capacity kept: no allocation per round
    ids.clear();
    ids.swap(writable_pending_);
    for (const StreamId id : ids) {
      // The open's payload first; the observer after it.
      rests_sent |= !open_rests_.empty();
      if (!send_open_rest(id)) continue;
      auto it = streams_.find(id);
      if (it != streams_.end()) it->second.observer->on_stream_writable();
    }
  }
  // The observers' writes flushed themselves; what send_open_rest queued goes now (this
  // runs after the entry point's own flush).
  if (rests_sent) flush();
  reaping_ = false;
  finished_.clear();
  if (close_pending_) {
    close_pending_ = false;
    closed_reported_ = true;
    observer_.on_connection_closed(*this, close_reason_, io_error_);  // last: may destroy this
  }
}

void Connection::on_stream_reset(StreamId id, MuxError error, std::string_view message) noexcept {
  finish(id, error, message);
}

void Connection::on_stream_closed(StreamId id) noexcept { finish(id, MuxError::none, {}); }

void Connection::on_stream_writable(StreamId id) noexcept {
  // Delivered when the outermost entry point returns (reap), never inside a write the
  // observer is making: a writer re-entered from its own write() would see its state
  // change under it.
  writable_pending_.push_back(id);
}

void Connection::on_stream_stopped(StreamId id) noexcept {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  // Our writes on it fail from now on: a writer that neither ends nor resets the stream is
  // reset for it after the close timeout, so the stream's state cannot live forever.
  it->second.stop_close_ns = engine::add_saturating(loop_.now_ns(), options_.stopped_stream_close_timeout_ns);
  arm_stream_timer(id, it->second);
  it->second.observer->on_stream_stopped();
}

void Connection::on_goaway(uint32_t, wire::StatusCode) noexcept {}

void Connection::on_pong(uint64_t opaque) noexcept {
  if (opaque == ping_sent_ns_ && ping_sent_ns_ != 0) {
    const uint64_t rtt = loop_.now_ns() - ping_sent_ns_;
    session_.set_rtt_ns(rtt > 0 ? rtt : 1);
    ping_sent_ns_ = 0;
  }
}

// ---- I/O ----

void Connection::flush() noexcept {
  if (flushing_ || transport_ == nullptr || transport_->socket.send_in_flight() || !session_.has_output() ||
      transport_->socket.state() != engine::Socket::State::open) {
    return;
  }
  RM_ASSERT(sending_link_.empty());
  // take_output wakes writers, whose writes call flush() again: they must only fill the
  // session's new batch, not start a send of their own.
  flushing_ = true;
  replay::HeldSpans held;
  session_.take_output(sending_link_, held);
  flushing_ = false;
  if (sending_link_.empty() && held.empty()) return;
  batches_sent_++;
  send_started_ns_ = loop_.now_ns();
  transport_->socket.send(sending_link_, held.first, held.second);
}

void Connection::on_transport_recv(Transport& transport, std::span<const std::byte> bytes) noexcept {
  if (&transport != transport_.get()) return;  // a replaced connection's late bytes
  EntryGuard guard(*this);
  last_received_ns_ = loop_.now_ns();
  const bool was_established = session_.handshake_complete();
  auto received = session_.receive(bytes, last_received_ns_);
  if (!received) {
    // The reader decides transport health: a protocol error ends the connection, and the
    // session too unless it can resume (the session says which by failing or not). A
    // session that fails for what the peer did tells it why first.
    if (session_.failed() && scope_of(session_.failure()) == Scope::connection &&
        session_.failure() != MuxError::peer_error) {
      if (transport_->socket.send_in_flight()) {
        // The ERROR must not cut into the frames in flight: it goes when that send
        // completes (or the keepalive gives up on a send that makes no progress).
        final_error_due_ = true;
        return;
      }
      tell_peer_why();
    }
    lose_transport(received.error(), engine::IoError::none);
    return;
  }
  if (!was_established && session_.handshake_complete()) on_established();
  flush();
  arm_ack_timer();
}

void Connection::arm_ack_timer() noexcept {
  const uint64_t deadline = session_.ack_deadline_ns();
  // Only on a live connection: while resuming, the next handshake carries the position.
  if (deadline == replay::AckPolicy::no_deadline_ns || ack_timer_.armed() || !connected()) return;
  const uint64_t now = loop_.now_ns();
  loop_.timer_start(ack_timer_, deadline > now ? deadline - now : 0);
}

void Connection::on_ack_timer(engine::Timer& timer) noexcept {
  auto& self = *static_cast<Connection*>(timer.context());
  EntryGuard guard(self);
  if (self.ended_) return;
  self.session_.on_ack_timer(self.loop_.now_ns());
  self.flush();
  self.arm_ack_timer();  // still pending when a send in flight holds the ACK back
}

void Connection::on_transport_sent(Transport& transport) noexcept {
  if (&transport != transport_.get()) return;
  EntryGuard guard(*this);
  sending_link_.clear();  // capacity kept: the next swap reuses it
  send_started_ns_ = 0;
  if (final_error_due_) {
    final_error_due_ = false;
    tell_peer_why();
    lose_transport(session_.failure(), engine::IoError::none);
    return;
  }
  flush();
}

void Connection::on_transport_error(Transport& transport, engine::IoError error) noexcept {
  if (&transport != transport_.get()) return;  // a superseded connection's errors are ignored
  EntryGuard guard(*this);
  lose_transport(MuxError::connection_lost, error);  // io_error_ says how
}

void Connection::on_transport_closed(Transport& transport) noexcept {
  EntryGuard guard(*this);
  if (&transport == transport_.get()) {
    transport_.reset();  // closed without an error reaching us (close() of the session)
  } else {
    for (auto it = retired_.begin(); it != retired_.end(); ++it) {
      if (it->get() == &transport) {
        retired_.erase(it);  // its operations are all complete: safe to destroy now
        break;
      }
    }
  }
  if (ended_) {
    maybe_report_closed();
    return;
  }
  // A dialer that lost its transport redials once the old socket is gone.
  if (transport_ == nullptr && session_.dialer() && !redial_timer_.armed() && !connector_.in_progress()) {
    schedule_redial();
  }
}

void Connection::lose_transport(MuxError reason, engine::IoError io_error) noexcept {
  if (ended_) return;
  io_error_ = io_error;
  if (!resumable()) {
    end(session_.failed() ? session_.failure() : reason);
    return;
  }
  // Resume: the session keeps its streams; this TCP connection is done.
  resume_stats_.transports_lost++;
  session_.on_transport_lost();
  loop_.timer_cancel(keepalive_);
  retire_transport();
  if (!resume_deadline_.armed()) loop_.timer_start(resume_deadline_, options_.resume_timeout_ns);
  if (acceptor_ != nullptr) {
    // Detached: what it holds for the dialer's return counts against the acceptor's cap
    // (limits::detached_held_bytes_max), which may end the oldest detached session.
    session_.trim();
    acceptor_->on_detached(*this);
  }
  // The dialer redials when the retired socket has closed (on_transport_closed), so that no
  // operation of the old connection is left in flight; the acceptor waits for adopt().
}

void Connection::end(MuxError reason) noexcept {
  if (!ended_) {
    ended_ = true;
    if (close_reason_ == MuxError::none) close_reason_ = reason;
  }
  loop_.timer_cancel(keepalive_);
  loop_.timer_cancel(resume_deadline_);
  loop_.timer_cancel(redial_timer_);
  loop_.timer_cancel(ack_timer_);
  connector_.cancel();  // its on_connect closes the fd it may still bring
  if (acceptor_ != nullptr) {
    acceptor_->forget(*this);
    acceptor_ = nullptr;
  }
  session_.fail(reason);  // finishes every stream
  retire_transport();
  maybe_report_closed();
}

void Connection::retire_transport() noexcept {
  if (transport_ == nullptr) return;
  sending_link_.clear();
  send_started_ns_ = 0;
  Transport& transport = *transport_;
  retired_.push_back(std::move(transport_));
  transport.socket.close();  // on_transport_closed removes it from retired_
}

void Connection::install_transport(int fd) noexcept {
  RM_ASSERT(transport_ == nullptr);
  transport_ = std::make_unique<Transport>(*this, fd);
  last_received_ns_ = loop_.now_ns();
  transport_started_ns_ = last_received_ns_;
  ping_sent_ns_ = 0;
  transport_->socket.start();
  loop_.timer_start(keepalive_, options_.keepalive_interval_ns);
}

void Connection::schedule_redial() noexcept {
  // The first attempt after a loss goes at once; then exponential backoff with jitter.
  uint64_t delay_ns = 0;
  if (redial_attempts_ > 0) {
    const uint32_t doublings = std::min<uint32_t>(redial_attempts_ - 1, 40);
    const uint64_t ceiling =
        std::min(options_.redial_backoff_ns_max, options_.redial_backoff_ns_min << std::min<uint32_t>(doublings, 30));
    jitter_state_ ^= jitter_state_ << 13;
    jitter_state_ ^= jitter_state_ >> 7;
    jitter_state_ ^= jitter_state_ << 17;
    delay_ns = ceiling / 2 + jitter_state_ % (ceiling / 2 + 1);
  }
  loop_.timer_start(redial_timer_, delay_ns);
}

void Connection::on_redial_timer(engine::Timer& timer) noexcept {
  auto& self = *static_cast<Connection*>(timer.context());
  EntryGuard guard(self);
  if (self.ended_ || self.transport_ != nullptr || self.connector_.in_progress()) return;
  self.redial_attempts_++;
  self.resume_stats_.redials++;
  self.connector_.connect(self.options_.peer, self.options_.connect_timeout_ms);
}

void Connection::on_connect(Result<int, engine::IoError> result) noexcept {
  EntryGuard guard(*this);
  if (ended_) {
    if (result) ::close(result.value());
    maybe_report_closed();
    return;
  }
  if (!result) {
    schedule_redial();  // refused, timed out, ...: try again until the resume deadline
    return;
  }
  install_transport(result.value());
  session_.start_resume();
  flush();
}

replay::HelloAnswer Connection::adopt(int fd, const wire::Hello& hello) noexcept {
  EntryGuard guard(*this);
  RM_ASSERT(!session_.dialer());
  // A HELLO of an older or the same generation comes from a superseded attempt: ignore it
  // before touching the current transport.
  if (ended_ || hello.generation <= session_.generation()) {
    replay::HelloAnswer ignored;
    ignored.verdict = replay::HelloVerdict::ignore;
    ignored.error = replay::ReplayError::superseded_generation;
    if (ended_) {
      ignored = replay::answer_hello(hello, nullptr);  // unknown by now: refused as such
    }
    return ignored;
  }
  // The dialer is on a new connection: whatever we still hold of the old one is stale
  // (often we have not even seen it break yet).
  if (transport_ != nullptr) lose_transport(MuxError::connection_lost, engine::IoError::none);
  if (ended_) return replay::answer_hello(hello, nullptr);
  replay::HelloAnswer answer = session_.answer_resume(hello);
  if (answer.verdict != replay::HelloVerdict::accept_resume) {
    if (session_.failed()) end(session_.failure());  // refused for good: the session is lost
    return answer;
  }
  install_transport(fd);
  on_established();
  flush();
  return answer;
}

void Connection::on_established() noexcept {
  const uint64_t now = loop_.now_ns();
  loop_.timer_cancel(resume_deadline_);
  redial_attempts_ = 0;
  if (session_.generation() > 1) {
    resume_stats_.last_resume_ns = now;
    resume_stats_.last_resume_duration_ns = now - transport_started_ns_;
    observer_.on_connection_resumed(*this, resume_stats_.last_resume_duration_ns);
  }
}

void Connection::on_resume_deadline(engine::Timer& timer) noexcept {
  auto& self = *static_cast<Connection*>(timer.context());
  EntryGuard guard(self);
  if (self.connected() || self.ended_) return;
  self.end(MuxError::session_lost);
}

void Connection::maybe_report_closed() noexcept {
  if (!closed() || connector_.in_progress() || closed_reported_ || close_pending_) return;
  if (depth_ > 0) {
    // Inside an entry point: the observer hears of it when that returns (it may destroy
    // the connection, which must not happen under a running member function).
    close_pending_ = true;
    return;
  }
  closed_reported_ = true;
  observer_.on_connection_closed(*this, close_reason_, io_error_);  // last: may destroy this
}

void Connection::on_keepalive(engine::Timer& timer) noexcept {
  auto& self = *static_cast<Connection*>(timer.context());
  EntryGuard guard(self);
  if (self.transport_ == nullptr || self.ended_) return;
  const uint64_t now = self.loop_.now_ns();
  const uint64_t silent_ns = now - self.last_received_ns_;
  // A silent peer, or a send that makes no progress (the peer stopped reading, or the path
  // is a black hole): the transport is dead. The session resumes if it can.
  const bool send_stuck = self.send_started_ns_ != 0 && now - self.send_started_ns_ >= self.options_.dead_peer_timeout_ns;
  if (silent_ns >= self.options_.dead_peer_timeout_ns || send_stuck) {
    self.lose_transport(MuxError::connection_lost, engine::IoError::timed_out);
    return;
  }
  // Slowloris: a frame whose bytes trickle in keeps the peer from being silent, but not
  // from this bound.
  const uint64_t frame_started = self.session_.frame_started_ns();
  if (frame_started != 0 && now - frame_started >= self.options_.frame_complete_timeout_ns) {
    std::string why = "a frame was not completed within " +
                      std::to_string(self.options_.frame_complete_timeout_ns / 1'000'000) +
                      " ms (limits::frame_complete_timeout_ns)";
    self.send_final_error(MuxError::limit_exceeded, why);
    self.session_.fail(MuxError::limit_exceeded, std::move(why));
    self.lose_transport(MuxError::limit_exceeded, engine::IoError::none);
    return;
  }
  // Quiet since the last tick (nothing sent, nothing held): give back the capacity the
  // session kept for bulk traffic, so that an idle connection costs its state only.
  if (self.batches_sent_ == self.batches_at_last_keepalive_ && self.session_.held().bytes_held() == 0 &&
      !self.session_.has_output()) {
    self.session_.trim();
  }
  self.batches_at_last_keepalive_ = self.batches_sent_;
  if (silent_ns >= self.options_.keepalive_interval_ns && self.ping_sent_ns_ == 0 &&
      self.session_.handshake_complete()) {
    self.ping_sent_ns_ = now;
    self.session_.ping(now);
    self.flush();
  }
  self.loop_.timer_start(self.keepalive_, self.options_.keepalive_interval_ns / 2);
}

}  // namespace ringmux::mux
