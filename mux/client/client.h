// Client: a connection to a ringmux server for application threads, with no loop code in
// the application. dial() from any thread gives a handle whose calls block (with a
// deadline), complete on a callback or through a std::future, and whose streams are read
// and written by blocking calls with deadlines.
//
// The connection lives on a loop (one the client starts, or one the application lends it)
// and is touched only there: each method posts its work to the loop (engine::Loop::post,
// a lock-free stack) and the caller sleeps on a futex until the loop hands the result back
// (engine::Loop::run_and_wait; a stream's reads and writes through mux::WorkerStream's slot
// ring and wake words). No method polls or sleeps in slices.
//
// Deadlines are absolute, on the monotonic clock of engine::Loop::clock_ns() (deadline_after
// makes one); 0 means none. A call's or a stream's deadline is also sent to the server,
// whose handler sees it; at the deadline the call fails with deadline_exceeded, even if
// the server is silent.
//
// Errors are mux::MuxError values (a std::error_code enum): the call's or stream's own
// (deadline_exceeded, cancelled, refused, unknown_handler, handler_error, stream_reset,
// resource_exhausted, ...) or the connection's when it ended under them (connection_lost,
// session_lost, a protocol error, cancelled after close()).
//
// Threads: dial(), call(), open_stream() and close() block, so they may be called from any
// thread except the client's loop thread (asserted: the loop would wait for itself).
// call_async() and call_future() may be called from any thread, the loop's too. Any number
// of threads may use one client at once; the destructor must not race with them.
// Lifetime: every ClientStream must be destroyed before its client (asserted). A borrowed
// loop must keep running until the client is destroyed.
#pragma once

#include <atomic>
#include <cstdint>
#include <future>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "ringmux/base/result.h"
#include "ringmux/engine/engine.h"
#include "ringmux/engine/loop.h"
#include "ringmux/engine/socket.h"
#include "ringmux/mux/link/connection.h"
#include "ringmux/mux/rpc/call.h"
#include "ringmux/mux/workers/threaded.h"
#include "ringmux/mux/workers/worker_stream.h"

namespace ringmux::mux {

// The deadline `ns` from now, for the calls below.
inline uint64_t deadline_after(uint64_t ns) noexcept { return engine::add_saturating(engine::Loop::clock_ns(), ns); }

struct ClientOptions {
  // The connection's options (resume, keepalive, windows, connect timeout, ...). dial()
  // sets `peer` to the address it dials, for resume.
  ConnectionOptions connection;
  // The loop the connection lives on, borrowed: it must be running on its own thread
  // (engine::Engine::loop(i)) until the client is destroyed. Null: the client starts an
  // engine of one loop, with `own_loop`, and stops it when it is destroyed.
  engine::Loop* loop = nullptr;
  engine::LoopOptions own_loop;
  // The slot ring and spin of every stream opened by open_stream().
  WorkerStreamOptions stream;
};

// A unary call's outcome: the response, or why there is none.
using CallReply = Result<std::vector<std::byte>, MuxError>;

// One read of a stream: the bytes of one delivery; `end` when the server half-closed
// after them (nothing more will be read).
struct StreamRead {
  std::vector<std::byte> bytes;
  bool end = false;
};

class Client;

// A stream opened by Client::open_stream. One thread reads at a time and one writes at a
// time (the same thread or two); cancel() from any thread. Movable, not copyable.
// Destroying it cancels the stream unless it has ended.
class ClientStream {
 public:
  ClientStream(ClientStream&& other) noexcept;
  ClientStream& operator=(ClientStream&& other) noexcept;
  ClientStream(const ClientStream&) = delete;
  ClientStream& operator=(const ClientStream&) = delete;
  ~ClientStream();

  // The next delivery, sleeping until it arrives or `deadline_ns`. Errors:
  // deadline_exceeded (nothing arrived in time; the stream stays open and may be read
  // again), stream_closed (read again after the end), the stream's error (cancelled,
  // stream_reset, deadline_exceeded of the stream's own deadline, the connection's).
  Result<StreamRead, MuxError> read(uint64_t deadline_ns) noexcept;
  // Sends `bytes` (read in place while this sleeps: no copy), sleeping until the loop has
  // taken all of them (flow control permitting) or `deadline_ns`. Errors: those of
  // WorkerStream::write: deadline_exceeded (the stream is then reset, so nothing is left
  // half-written), stream_stopped, stream_closed, the stream's reset reason.
  Result<void, MuxError> write(std::span<const std::byte> bytes, uint64_t deadline_ns) noexcept;
  // Half-closes: the server reads the end; reads go on until its end. Errors: as write().
  Result<void, MuxError> close_write(uint64_t deadline_ns) noexcept;
  // Resets the stream with cancelled (any thread): a blocked write fails with cancelled,
  // a blocked read returns the stream's end (cancelled), the server's handler sees it.
  void cancel() noexcept;
  StreamId id() const noexcept;
  WorkerStreamStats stats() const noexcept;

 private:
  friend class Client;
  ClientStream(Client& client, std::shared_ptr<WorkerStream> stream) noexcept;
  void release() noexcept;

  Client* client_ = nullptr;  // null once moved from
  std::shared_ptr<WorkerStream> stream_;
  bool read_ended_ = false;  // the end (or the stream's error) was returned by read()
  MuxError read_error_ = MuxError::none;
};

class Client {
 public:
  // Connects to `address` ("a.b.c.d:port" or "[v6]:port") and waits until the session's
  // handshake has completed or `deadline_ns` has passed. Errors: connection_lost (the TCP
  // connect failed, or the transport broke in the handshake: `io_error`, when given, says
  // how: refused, timed_out, unreachable, address_invalid for an address that does not
  // parse, reset, closed; or the client's own engine could not start: not_supported,
  // no_memory, permission_denied), deadline_exceeded (the deadline passed first), the
  // session's error when the server refused it (a protocol error, session_lost).
  static Result<std::unique_ptr<Client>, MuxError> dial(std::string_view address, uint64_t deadline_ns,
                                                        const ClientOptions& options = {},
                                                        engine::IoError* io_error = nullptr);
  static Result<std::unique_ptr<Client>, MuxError> dial(const engine::Address& address, uint64_t deadline_ns,
                                                        const ClientOptions& options = {},
                                                        engine::IoError* io_error = nullptr);
  // close(), then frees the connection on its loop and stops the client's own engine.
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // A unary call to `handler_id`: blocks until the response, the error, or `deadline_ns`.
  // `request` is read on the loop while this blocks (no copy here). Errors: see the top.
  CallReply call(uint32_t handler_id, std::span<const std::byte> request, uint64_t deadline_ns) noexcept;
  // The same, returning at once: `done` runs once on the loop thread (it must not block)
  // with the response (valid during the call) or the error and the server's message.
  void call_async(uint32_t handler_id, std::vector<std::byte> request, uint64_t deadline_ns, CallCallback done);
  // The same, the outcome through a future.
  std::future<CallReply> call_future(uint32_t handler_id, std::vector<std::byte> request, uint64_t deadline_ns);

  // Opens a stream to `handler_id` whose OPEN carries `payload` (and half-closes with it
  // when `end_stream`); blocks only for the loop to open it. `deadline_ns` is the whole
  // stream's deadline (0: none). Errors: those of Connection::open_owned (refused,
  // stream_closed once the connection ended, deadline_exceeded when already passed).
  Result<ClientStream, MuxError> open_stream(uint32_t handler_id, uint64_t deadline_ns,
                                             std::span<const std::byte> payload = {}, bool end_stream = false) noexcept;

  // Closes the connection and waits until it is closed: calls and streams in flight end
  // with cancelled; later calls and open_stream() fail at once with stream_closed (the
  // connection takes no more streams). Idempotent; any thread but the loop's.
  void close() noexcept;
  // The connection has ended (close(), or the server or the network ended it), and why.
  bool closed() const noexcept { return closed_.load(std::memory_order_acquire); }
  MuxError close_error() const noexcept { return close_error_.load(std::memory_order_acquire); }

  engine::Loop& loop() noexcept { return loop_; }
  // The connection itself, for what this class does not offer: on its loop thread only
  // (asserted).
  Connection& connection() noexcept;

 private:
  class Core;  // the loop side: connector, connection, observer
  friend class ClientStream;
  Client(engine::Loop& loop, std::unique_ptr<engine::Engine> engine, const ClientOptions& options) noexcept;
  // Frees the core on the loop thread, then stops the own engine.
  void tear_down() noexcept;

  std::unique_ptr<engine::Engine> engine_;  // the client's own, or null when the loop is borrowed
  engine::Loop& loop_;
  const WorkerStreamOptions stream_options_;
  std::unique_ptr<Core> core_;  // created, used and destroyed on the loop thread
  Connection* connection_ = nullptr;  // the core's, set once dial() succeeded
  std::atomic<bool> closed_{false};
  std::atomic<MuxError> close_error_{MuxError::none};
  std::atomic<uint32_t> streams_alive_{0};  // ClientStreams not yet destroyed
};

}  // namespace ringmux::mux
