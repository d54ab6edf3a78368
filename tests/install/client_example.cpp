// An application thread's client: dial, calls, a stream, close; no loop code on the
// client's side (the README example). The server it dials is at the bottom.
#include <ringmux/engine/engine.h>
#include <ringmux/mux/client/client.h>
#include <ringmux/mux/rpc/registry.h>

#include <cstdio>
#include <functional>
#include <future>
#include <memory>
#include <string_view>
#include <vector>

using namespace ringmux;

constexpr uint64_t second_ns = 1'000'000'000;
std::span<const std::byte> bytes(std::string_view text) { return std::as_bytes(std::span(text)); }

int use(const engine::Address& server) {
  auto dialed = mux::Client::dial(server, mux::deadline_after(5 * second_ns));
  if (!dialed) {
    std::printf("dial: %s\n", mux::describe(dialed.error()));
    return 1;
  }
  mux::Client& client = *dialed.value();

  // Handler 1 echoes: a blocking call with a 1 s deadline, then one through a future.
  auto reply = client.call(1, bytes("hello, storage node"), mux::deadline_after(second_ns));
  if (!reply) {
    std::printf("call: %s\n", mux::describe(reply.error()));
    return 1;
  }
  std::printf("call: %.*s\n", static_cast<int>(reply.value().size()), reinterpret_cast<const char*>(reply.value().data()));
  std::future<mux::CallReply> later = client.call_future(1, {std::byte{42}}, mux::deadline_after(second_ns));
  if (!later.get()) return 1;

  // Handler 2 answers each message of a stream with its length.
  auto opened = client.open_stream(2, mux::deadline_after(5 * second_ns));
  if (!opened) return 1;
  mux::ClientStream& stream = opened.value();
  for (std::string_view message : {"abc", "de"}) {
    if (!stream.write(bytes(message), mux::deadline_after(second_ns))) return 1;
    auto read = stream.read(mux::deadline_after(second_ns));
    if (!read || read.value().bytes.empty()) return 1;
    std::printf("stream: server saw %d bytes\n", static_cast<int>(read.value().bytes[0]));
  }
  if (!stream.close_write(mux::deadline_after(second_ns))) return 1;
  auto last = stream.read(mux::deadline_after(second_ns));  // the server's end
  return last && last.value().end ? 0 : 1;
}  // the stream goes, then the client: it closes and stops its loop

// The server, on an engine loop of its own: handlers 1 and 2 above.
struct Lengths final : mux::StreamObserver {
  Lengths(mux::Connection* c, mux::StreamId i) : connection(c), id(i) {}
  mux::Connection* connection;
  mux::StreamId id;
  void on_stream_data(std::span<const std::byte> data, bool end) noexcept override {
    connection->consume(id, data.size());
    const auto length = static_cast<std::byte>(data.size());
    (void)connection->write(id, std::span(&length, 1), end);
  }
  void on_stream_finished(mux::MuxError) noexcept override {}
};

struct Server final : engine::ListenerHandler, mux::ConnectionObserver {
  explicit Server(engine::Loop& l) : loop(l), listener(l, *this) {
    registry.add_unary(1, [](std::span<const std::byte> request, std::shared_ptr<mux::Responder> responder) {
      responder->reply(request);
    });
    registry.add_stream(2, [](const mux::StreamStart& start) -> mux::StreamObserver* {
      return new Lengths(start.connection, start.id);  // owned by the connection
    });
  }
  void on_accept(int fd) noexcept override {
    open++;
    connections.push_back(std::make_unique<mux::Connection>(loop, fd, /*dialer=*/false, &registry, *this));
    connections.back()->start();
  }
  void on_accept_error(engine::IoError) noexcept override {}
  void on_listener_closed() noexcept override { closed_one(); }
  void on_connection_closed(mux::Connection&, mux::MuxError, engine::IoError) noexcept override { closed_one(); }
  void closed_one() {
    if (--open == 0) all_closed(true);
  }

  engine::Loop& loop;
  mux::Registry registry;
  engine::Listener listener;
  std::vector<std::unique_ptr<mux::Connection>> connections;
  int open = 1;  // the listener and the connections not closed yet
  std::function<void(bool)> all_closed;
};

int main() {
  auto started = engine::Engine::start({});
  if (!started) return 77;  // no io_uring here
  engine::Loop& loop = started.value()->loop(0);
  std::unique_ptr<Server> server;
  bool listening = false;
  loop.run_sync([&] {
    server = std::make_unique<Server>(loop);
    listening = server->listener.listen(engine::Address::loopback_v4(0)).ok();
  });
  const int status = listening ? use(server->listener.address()) : 1;
  (void)loop.run_and_wait<bool>([&](auto done) {  // close everything, wait for it, free it
    server->all_closed = done;
    for (auto& connection : server->connections) connection->close();
    server->listener.close();
  });
  loop.run_sync([&] { server.reset(); });
  return status;
}
