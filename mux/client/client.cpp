#include "ringmux/mux/client/client.h"

#include <functional>
#include <utility>

#include "ringmux/base/assert.h"

namespace ringmux::mux {

using engine::IoError;
using engine::Loop;

namespace {

// What a dial ended with, handed from the loop to the dialing thread.
struct DialOutcome {
  MuxError error = MuxError::none;
  IoError io_error = IoError::none;
};

}  // namespace

// The loop side of a client: the connect, the connection and what waits on them. Lives on
// the loop thread from creation to destruction.
// Invariant: state_ says which of connector_ / connection_ is live: connecting (the
// connector's one attempt runs), handshaking / up (the connection runs), closed (the
// connection reported its close; nothing runs); dial_done_ is set exactly while a dial
// waits (connecting, handshaking).
class Client::Core final : public engine::ConnectHandler, public ConnectionObserver {
 public:
  enum class State : uint8_t { idle, connecting, handshaking, up, closed };

  Core(Client& client, const ConnectionOptions& options) noexcept
      : client_(client), options_(options), connector_(client.loop_, *this),
        dial_timer_(&Core::on_dial_deadline, this) {}
  ~Core() {
    RM_ASSERT(client_.loop_.on_loop_thread());
    RM_ASSERT(state_ == State::idle || state_ == State::closed);  // nothing runs: see the invariant
    RM_ASSERT(!connector_.in_progress());
    client_.loop_.timer_cancel(dial_timer_);
  }

  // Starts connecting to `address`; `done` hears how the dial ended, once.
  void dial(const engine::Address& address, uint64_t deadline_ns, std::function<void(DialOutcome)> done) noexcept {
    RM_ASSERT(client_.loop_.on_loop_thread());
    RM_ASSERT(state_ == State::idle);
    options_.peer = address;
    dial_done_ = std::move(done);
    state_ = State::connecting;
    if (deadline_ns != 0) {
      const uint64_t now = Loop::clock_ns();
      client_.loop_.timer_start(dial_timer_, deadline_ns > now ? deadline_ns - now : 0);
    }
    connector_.connect(address, options_.connect_timeout_ms);
  }

  // Closes the connection; `done` runs once it is closed (at once when it is already).
  void close(std::function<void(bool)> done) noexcept {
    RM_ASSERT(client_.loop_.on_loop_thread());
    RM_ASSERT(state_ == State::up || state_ == State::closed);  // dial() succeeded
    if (state_ == State::closed) {
      done(true);
      return;
    }
    close_waiters_.push_back(std::move(done));
    connection_->close(MuxError::cancelled);  // a second close() while closing is a no-op
  }

  Connection* connection() noexcept { return connection_.get(); }

  // ConnectHandler
  void on_connect(Result<int, IoError> fd) noexcept override {
    RM_ASSERT(state_ == State::connecting);
    if (!fd) {
      state_ = State::idle;
      finish_dial({deadline_passed_ ? MuxError::deadline_exceeded : MuxError::connection_lost, fd.error()});
      return;
    }
    connection_ = std::make_unique<Connection>(client_.loop_, fd.value(), /*dialer=*/true, nullptr, *this, options_);
    state_ = State::handshaking;
    connection_->start();
  }

  // ConnectionObserver
  void on_connection_established(Connection&) noexcept override {
    RM_ASSERT(state_ == State::handshaking);
    state_ = State::up;
    finish_dial({});
  }
  void on_connection_closed(Connection&, MuxError error, IoError io_error) noexcept override {
    RM_ASSERT(state_ == State::handshaking || state_ == State::up);
    const bool dialing = state_ == State::handshaking;
    state_ = State::closed;
    client_.close_error_.store(error == MuxError::none ? MuxError::cancelled : error, std::memory_order_release);
    client_.closed_.store(true, std::memory_order_release);
    if (dialing) finish_dial({deadline_passed_ ? MuxError::deadline_exceeded : error, io_error});
    auto waiters = std::move(close_waiters_);
    close_waiters_.clear();
    for (auto& waiter : waiters) waiter(true);
  }

 private:
  void finish_dial(DialOutcome outcome) noexcept {
    RM_ASSERT(dial_done_ != nullptr);
    client_.loop_.timer_cancel(dial_timer_);
    auto done = std::move(dial_done_);
    dial_done_ = nullptr;
    done(outcome);
  }

  // The dial's deadline passed before the session was up: the connect is cancelled
  // (on_connect(canceled) follows) or the half-made connection closed (its close follows).
  static void on_dial_deadline(engine::Timer& timer) noexcept {
    auto& self = *static_cast<Core*>(timer.context());
    self.deadline_passed_ = true;
    switch (self.state_) {
      case State::connecting:
        self.connector_.cancel();
        return;
      case State::handshaking:
        self.connection_->close(MuxError::deadline_exceeded);
        return;
      case State::idle:
      case State::up:
      case State::closed:
        RM_ASSERT(false && "dial deadline fired with no dial in progress");
        return;
    }
  }

  Client& client_;
  ConnectionOptions options_;
  State state_ = State::idle;
  engine::Connector connector_;
  std::unique_ptr<Connection> connection_;
  engine::Timer dial_timer_;
  bool deadline_passed_ = false;
  std::function<void(DialOutcome)> dial_done_;
  std::vector<std::function<void(bool)>> close_waiters_;
};

// ---- Client ----------------------------------------------------------------------------------

Client::Client(Loop& loop, std::unique_ptr<engine::Engine> engine, const ClientOptions& options) noexcept
    : engine_(std::move(engine)), loop_(loop), stream_options_(options.stream) {}

Result<std::unique_ptr<Client>, MuxError> Client::dial(std::string_view address, uint64_t deadline_ns,
                                                       const ClientOptions& options, IoError* io_error) {
  auto parsed = engine::Address::parse(address);
  if (!parsed) {
    if (io_error != nullptr) *io_error = parsed.error();
    return Err{MuxError::connection_lost};
  }
  return dial(parsed.value(), deadline_ns, options, io_error);
}

Result<std::unique_ptr<Client>, MuxError> Client::dial(const engine::Address& address, uint64_t deadline_ns,
                                                       const ClientOptions& options, IoError* io_error) {
  if (io_error != nullptr) *io_error = IoError::none;
  std::unique_ptr<engine::Engine> engine;
  Loop* loop = options.loop;
  if (loop == nullptr) {
    engine::EngineOptions engine_options;
    engine_options.loop_count = 1;
    engine_options.loop = options.own_loop;
    auto started = engine::Engine::start(engine_options);
    if (!started) {
      if (io_error != nullptr) *io_error = started.error();
      return Err{MuxError::connection_lost};
    }
    engine = std::move(started.value());
    loop = &engine->loop(0);
  }
  RM_ASSERT(!loop->on_loop_thread());  // dial blocks for the loop
  std::unique_ptr<Client> client(new Client(*loop, std::move(engine), options));
  Client& self = *client;
  const DialOutcome outcome = loop->run_and_wait<DialOutcome>([&](auto complete) {
    self.core_ = std::make_unique<Core>(self, options.connection);
    self.core_->dial(address, deadline_ns, complete);
  });
  if (outcome.error != MuxError::none) {
    if (io_error != nullptr) *io_error = outcome.io_error;
    self.tear_down();
    return Err{outcome.error};
  }
  // From here the connection lives until the destructor frees it on the loop.
  self.connection_ = self.core_->connection();
  return client;
}

Client::~Client() {
  if (connection_ != nullptr) close();
  RM_ASSERT(streams_alive_.load(std::memory_order_acquire) == 0 && "a ClientStream outlives its client");
  tear_down();
}

void Client::tear_down() noexcept {
  // Posted after every task already posted (the loop runs them in posting order), so an
  // asynchronous call posted before this has reached the connection, which fails it on
  // its own.
  if (core_ != nullptr) loop_.run_sync([this] { core_.reset(); });
  engine_.reset();  // the own loop runs what is still posted, then stops
}

Connection& Client::connection() noexcept {
  RM_ASSERT(loop_.on_loop_thread() && "Client::connection() is for the loop thread");
  RM_ASSERT(connection_ != nullptr);
  return *connection_;
}

CallReply Client::call(uint32_t handler_id, std::span<const std::byte> request, uint64_t deadline_ns) noexcept {
  RM_ASSERT(connection_ != nullptr);
  CallOutcome outcome = RemoteCaller(*connection_).call(handler_id, request, deadline_ns);
  if (outcome.error != MuxError::none) return Err{outcome.error};
  return std::move(outcome.response);
}

void Client::call_async(uint32_t handler_id, std::vector<std::byte> request, uint64_t deadline_ns,
                        CallCallback done) {
  RM_ASSERT(connection_ != nullptr);
  RemoteCaller(*connection_).call_async(handler_id, std::move(request), deadline_ns, std::move(done));
}

std::future<CallReply> Client::call_future(uint32_t handler_id, std::vector<std::byte> request,
                                           uint64_t deadline_ns) {
  std::promise<CallReply> promise;
  std::future<CallReply> future = promise.get_future();
  call_async(handler_id, std::move(request), deadline_ns,
             [promise = std::move(promise)](const CallResult& result) mutable {
               if (result.error != MuxError::none) {
                 promise.set_value(Err{result.error});
               } else {
                 promise.set_value(std::vector<std::byte>(result.response.begin(), result.response.end()));
               }
             });
  return future;
}

Result<ClientStream, MuxError> Client::open_stream(uint32_t handler_id, uint64_t deadline_ns,
                                                   std::span<const std::byte> payload, bool end_stream) noexcept {
  RM_ASSERT(connection_ != nullptr);
  struct Opened {
    std::shared_ptr<WorkerStream> stream;
    MuxError error = MuxError::none;
  };
  Opened opened = loop_.run_and_wait<Opened>([&](auto complete) {
    auto stream = WorkerStream::open(*connection_, handler_id, deadline_ns, payload, end_stream, stream_options_);
    complete(stream ? Opened{std::move(stream.value()), MuxError::none} : Opened{nullptr, stream.error()});
  });
  if (opened.error != MuxError::none) return Err{opened.error};
  return ClientStream(*this, std::move(opened.stream));
}

void Client::close() noexcept {
  RM_ASSERT(connection_ != nullptr);
  (void)loop_.run_and_wait<bool>([this](auto complete) { core_->close(complete); });
  RM_ASSERT(closed());
}

// ---- ClientStream ----------------------------------------------------------------------------

ClientStream::ClientStream(Client& client, std::shared_ptr<WorkerStream> stream) noexcept
    : client_(&client), stream_(std::move(stream)) {
  client_->streams_alive_.fetch_add(1, std::memory_order_relaxed);
}

ClientStream::ClientStream(ClientStream&& other) noexcept
    : client_(std::exchange(other.client_, nullptr)), stream_(std::move(other.stream_)),
      read_ended_(other.read_ended_), read_error_(other.read_error_) {}

ClientStream& ClientStream::operator=(ClientStream&& other) noexcept {
  if (this != &other) {
    release();
    client_ = std::exchange(other.client_, nullptr);
    stream_ = std::move(other.stream_);
    read_ended_ = other.read_ended_;
    read_error_ = other.read_error_;
  }
  return *this;
}

ClientStream::~ClientStream() { release(); }

void ClientStream::release() noexcept {
  if (client_ == nullptr) return;
  // A stream that has ended ignores the cancel on the loop; one still running is reset, so
  // the server's handler is not left waiting for a client that is gone.
  stream_->cancel();
  stream_.reset();
  client_->streams_alive_.fetch_sub(1, std::memory_order_release);
  client_ = nullptr;
}

Result<StreamRead, MuxError> ClientStream::read(uint64_t deadline_ns) noexcept {
  RM_ASSERT(client_ != nullptr && "read on a moved-from ClientStream");
  if (read_ended_) return Err{read_error_ == MuxError::none ? MuxError::stream_closed : read_error_};
  const WorkerStream::Message* message = stream_->acquire(deadline_ns);
  if (message == nullptr) return Err{MuxError::deadline_exceeded};
  if (message->finished) {
    // The end without a half-close before it (the stream failed, or ended as we read).
    const MuxError error = message->error;
    stream_->release();
    read_ended_ = true;
    read_error_ = error;
    if (error != MuxError::none) return Err{error};
    return StreamRead{{}, true};
  }
  StreamRead read{message->bytes, message->end_stream};
  stream_->release();
  read_ended_ = read.end;
  return read;
}

Result<void, MuxError> ClientStream::write(std::span<const std::byte> bytes, uint64_t deadline_ns) noexcept {
  RM_ASSERT(client_ != nullptr && "write on a moved-from ClientStream");
  return stream_->write(bytes, false, deadline_ns);
}

Result<void, MuxError> ClientStream::close_write(uint64_t deadline_ns) noexcept {
  RM_ASSERT(client_ != nullptr && "close_write on a moved-from ClientStream");
  return stream_->end(deadline_ns);
}

void ClientStream::cancel() noexcept {
  RM_ASSERT(client_ != nullptr);
  stream_->cancel();
}

StreamId ClientStream::id() const noexcept { return stream_ == nullptr ? 0 : stream_->id(); }

WorkerStreamStats ClientStream::stats() const noexcept { return stream_ == nullptr ? WorkerStreamStats{} : stream_->stats(); }

}  // namespace ringmux::mux
