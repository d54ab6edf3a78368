#include "mux/connection.h"

#include <sys/random.h>

#include <cerrno>
#include <cstring>

#include "engine/assert.h"

namespace ringmux::mux {

using engine::Loop;

// ---- Registry ----------------------------------------------------------------------------

void Registry::add_stream(uint32_t handler_id, StreamHandler handler) {
  RM_ASSERT(handler);
  const bool inserted = handlers_.emplace(handler_id, std::move(handler)).second;
  RM_ASSERT(inserted);  // one handler per id
}

namespace {

// Server side of a unary call: gathers the request, runs the handler, sends the reply.
class UnaryResponder final : public Responder {
 public:
  UnaryResponder(Connection& connection, StreamId id) : connection_(&connection), id_(id) {}

  void reply(std::span<const std::byte> response) noexcept override {
    if (done_ || cancelled_) return;
    done_ = true;
    auto taken = connection_->write(id_, response, true);
    if (!taken) return;  // the stream ended meanwhile (the peer reset it)
    if (taken.value() < response.size()) {
      // Copy: the rest of a response larger than the window waits here for credit.
      pending_.assign(response.begin() + static_cast<std::ptrdiff_t>(taken.value()), response.end());
    }
  }
  void fail(wire::StatusCode status, std::string_view message) noexcept override {
    if (done_ || cancelled_) return;
    done_ = true;
    connection_->reset(id_, error_from_status(status) == MuxError::stream_reset ? MuxError::handler_error
                                                                                 : error_from_status(status),
                       message.empty() ? std::string_view("handler failed") : message);
  }
  bool cancelled() const noexcept override { return cancelled_; }
  void on_cancel(std::function<void()> callback) noexcept override { cancel_callback_ = std::move(callback); }

  void writable() noexcept {
    if (pending_.empty() || cancelled_) return;
    auto taken = connection_->write(id_, std::span<const std::byte>(pending_).subspan(offset_), true);
    if (!taken) return;
    offset_ += taken.value();
    if (offset_ == pending_.size()) {
      pending_.clear();
      offset_ = 0;
    }
  }
  void finished(MuxError error) noexcept {
    if (error != MuxError::none && !done_) {
      cancelled_ = true;
      if (cancel_callback_) cancel_callback_();
    }
    done_ = true;
  }

 private:
  Connection* connection_;
  StreamId id_;
  bool done_ = false;
  bool cancelled_ = false;
  std::vector<std::byte> pending_;
  std::size_t offset_ = 0;
  std::function<void()> cancel_callback_;
};

class UnaryServerStream final : public StreamObserver {
 public:
  UnaryServerStream(const StreamStart& start, const Registry::UnaryHandler& handler)
      : connection_(*start.connection), id_(start.id), handler_(handler),
        responder_(std::make_shared<UnaryResponder>(*start.connection, start.id)),
        deadline_(&UnaryServerStream::on_deadline, this) {
    if (start.deadline_ns != 0) {
      const uint64_t now = connection_.loop().now_ns();
      connection_.loop().timer_start(deadline_, start.deadline_ns > now ? start.deadline_ns - now : 0);
    }
  }
  ~UnaryServerStream() override { connection_.loop().timer_cancel(deadline_); }

  void on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept override {
    connection_.consume(id_, bytes.size());
    if (end_stream && request_.empty()) {
      handler_(bytes, responder_);  // the whole request in one frame: no copy
      return;
    }
    // Copy: a request split over several frames is gathered before the handler runs.
    request_.insert(request_.end(), bytes.begin(), bytes.end());
    if (end_stream) {
      // The handler may reply at once, which can finish and delete this stream: the
      // request must not live in it then.
      const std::vector<std::byte> request = std::move(request_);
      handler_(request, responder_);
    }
  }
  void on_stream_writable() noexcept override { responder_->writable(); }
  void on_stream_finished(MuxError error) noexcept override { responder_->finished(error); }

 private:
  static void on_deadline(engine::Timer& timer) noexcept {
    auto& self = *static_cast<UnaryServerStream*>(timer.context());
    self.connection_.reset(self.id_, MuxError::deadline_exceeded);  // deletes self
  }

  Connection& connection_;
  StreamId id_;
  const Registry::UnaryHandler& handler_;
  std::shared_ptr<UnaryResponder> responder_;
  std::vector<std::byte> request_;
  engine::Timer deadline_;
};

// Client side of a unary call.
class UnaryCall final : public StreamObserver {
 public:
  UnaryCall(Connection& connection, CallCallback done)
      : connection_(connection), done_(std::move(done)), deadline_(&UnaryCall::on_deadline, this) {}
  ~UnaryCall() override { connection_.loop().timer_cancel(deadline_); }

  void arm(StreamId id, uint64_t deadline_ns) noexcept {
    id_ = id;
    if (deadline_ns != 0) {
      const uint64_t now = connection_.loop().now_ns();
      connection_.loop().timer_start(deadline_, deadline_ns > now ? deadline_ns - now : 0);
    }
  }
  void on_stream_data(std::span<const std::byte> bytes, bool end_stream) noexcept override {
    connection_.consume(id_, bytes.size());
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
  static void on_deadline(engine::Timer& timer) noexcept {
    auto& self = *static_cast<UnaryCall*>(timer.context());
    self.connection_.reset(self.id_, MuxError::deadline_exceeded);  // deletes self
  }

  Connection& connection_;
  CallCallback done_;
  StreamId id_ = 0;
  std::vector<std::byte> response_;
  std::span<const std::byte> whole_;  // valid: finished follows in the same receive call
  std::string message_;
  engine::Timer deadline_;
};

}  // namespace

void Registry::add_unary(uint32_t handler_id, UnaryHandler handler) {
  RM_ASSERT(handler);
  auto shared = std::make_shared<UnaryHandler>(std::move(handler));
  add_stream(handler_id, [shared](const StreamStart& start) -> StreamObserver* {
    return new UnaryServerStream(start, *shared);
  });
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
      session_(*this, session_options_for(options.session, dialer)),
      socket_(loop, fd, *this),
      keepalive_(&Connection::on_keepalive, this) {}

Connection::~Connection() {
  RM_ASSERT(closed());
  RM_ASSERT(depth_ == 0);
  reap();
}

void Connection::start() noexcept {
  EntryGuard guard(*this);
  last_received_ns_ = loop_.now_ns();
  socket_.start();
  loop_.timer_start(keepalive_, options_.keepalive_interval_ns);
  // The dialer's HELLO goes out at once (with whatever was queued behind it), so that the
  // acceptor, whose frames wait for it, never waits for our first stream or keepalive.
  flush();
}

void Connection::close(MuxError reason) noexcept {
  EntryGuard guard(*this);
  if (close_reason_ == MuxError::none) close_reason_ = reason;
  loop_.timer_cancel(keepalive_);
  session_.fail(reason);  // finishes every stream
  socket_.close();
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
  auto id = session_.open(handler_id, budget_ns, payload, end_stream);
  if (!id) return id;
  streams_.emplace(id.value(), Entry{&observer, false});
  flush();
  return id;
}

Result<std::size_t, MuxError> Connection::write(StreamId id, std::span<const std::byte> bytes, bool end_stream) noexcept {
  EntryGuard guard(*this);
  auto taken = session_.write(id, bytes, end_stream);
  flush();
  return taken;
}

Result<void, MuxError> Connection::end(StreamId id) noexcept {
  EntryGuard guard(*this);
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
  auto id = session_.open(handler_id, budget_ns, request, true);
  if (!id) {
    call->on_stream_finished(id.error());
    delete call;
    return 0;
  }
  streams_.emplace(id.value(), Entry{call, true});
  call->arm(id.value(), deadline_ns);
  flush();
  return id.value();
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
  StreamStart start{this, id, handler_id, deadline_budget_ns == 0 ? 0 : loop_.now_ns() + deadline_budget_ns,
                    payload, end_stream};
  StreamObserver* observer = (*handler)(start);
  if (observer == nullptr) return refuse(MuxError::unknown_handler);
  streams_.emplace(id, Entry{observer, true});
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
  const Entry entry = it->second;
  streams_.erase(it);
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
  for (int round = 0; round < 16 && !writable_pending_.empty(); round++) {
    std::vector<StreamId>& ids = writable_scratch_;  // capacity kept: no allocation per round
    ids.clear();
    ids.swap(writable_pending_);
    for (const StreamId id : ids) {
      auto it = streams_.find(id);
      if (it != streams_.end()) it->second.observer->on_stream_writable();
    }
  }
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
  if (it != streams_.end()) it->second.observer->on_stream_stopped();
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
  if (flushing_ || socket_.send_in_flight() || !session_.has_output() ||
      socket_.state() != engine::Socket::State::open) {
    return;
  }
  RM_ASSERT(sending_control_.empty() && sending_data_.empty());
  // take_batch wakes writers, whose writes call flush() again: they must only fill the
  // session's new batch, not start a send of their own.
  flushing_ = true;
  session_.take_batch(sending_control_, sending_data_);
  flushing_ = false;
  // take_batch may have woken writers that refilled the session's batch: that waits for
  // this send to complete (double buffer), as it should.
  if (sending_control_.empty() && sending_data_.empty()) return;
  batches_sent_++;
  socket_.send(sending_control_, sending_data_);
}

void Connection::on_recv(std::span<const std::byte> bytes) noexcept {
  EntryGuard guard(*this);
  last_received_ns_ = loop_.now_ns();
  auto received = session_.receive(bytes, last_received_ns_);
  if (!received) {
    // The reader decides transport health: a protocol error ends the connection.
    close_reason_ = received.error();
    close(received.error());
    return;
  }
  flush();
}

void Connection::on_send_complete() noexcept {
  EntryGuard guard(*this);
  sending_control_.clear();  // capacity kept: the next swap reuses it
  sending_data_.clear();
  flush();
}

void Connection::on_error(engine::IoError error) noexcept {
  EntryGuard guard(*this);
  io_error_ = error;
  close(MuxError::connection_lost);  // io_error_ says how
}

void Connection::on_closed() noexcept {
  if (closed_reported_ || close_pending_) return;
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
  const uint64_t now = self.loop_.now_ns();
  const uint64_t silent_ns = now - self.last_received_ns_;
  if (silent_ns >= self.options_.dead_peer_timeout_ns) {
    self.io_error_ = engine::IoError::timed_out;
    self.close(MuxError::connection_lost);
    return;
  }
  if (silent_ns >= self.options_.keepalive_interval_ns && self.ping_sent_ns_ == 0) {
    self.ping_sent_ns_ = now;
    self.session_.ping(now);
    self.flush();
  }
  self.loop_.timer_start(self.keepalive_, self.options_.keepalive_interval_ns / 2);
}

}  // namespace ringmux::mux
