// A unary call and a stream over 127.0.0.1, both ends on one loop (the README example).
#include <ringmux/engine/socket.h>
#include <ringmux/mux/link/connection.h>
#include <ringmux/mux/rpc/call.h>
#include <ringmux/mux/rpc/registry.h>

#include <cstdio>
#include <memory>
#include <string_view>

using namespace ringmux;

// Server side of a stream: answers each message with its length, ends when the client does.
struct Lengths final : mux::StreamObserver {
  mux::Connection* connection;
  mux::StreamId id;
  void on_stream_data(std::span<const std::byte> bytes, bool end) noexcept override {
    connection->consume(id, bytes.size());  // hand the credit back
    const auto length = static_cast<std::byte>(bytes.size());
    (void)connection->write(id, std::span(&length, 1), end);
  }
  void on_stream_finished(mux::MuxError) noexcept override {}
};

// Client side of the stream: prints what comes back.
struct Printer final : mux::StreamObserver {
  mux::Connection* connection;
  mux::StreamId id = 0;
  bool done = false;
  void on_stream_data(std::span<const std::byte> bytes, bool) noexcept override {
    connection->consume(id, bytes.size());
    for (auto b : bytes) std::printf("stream: server saw %d bytes\n", static_cast<int>(b));
  }
  void on_stream_finished(mux::MuxError error) noexcept override { done = error == mux::MuxError::none; }
};

struct Node final : engine::ListenerHandler, engine::ConnectHandler, mux::ConnectionObserver {
  explicit Node(engine::Loop& l) : loop(l), listener(l, *this), connector(l, *this) {}
  void on_accept(int fd) noexcept override {
    server = std::make_unique<mux::Connection>(loop, fd, /*dialer=*/false, &registry, *this);
    server->start();
  }
  void on_accept_error(engine::IoError) noexcept override {}
  void on_listener_closed() noexcept override { listener_closed = true; }
  void on_connect(Result<int, engine::IoError> fd) noexcept override {
    if (!fd) return;
    client = std::make_unique<mux::Connection>(loop, fd.value(), /*dialer=*/true, nullptr, *this);
    client->start();
  }
  void on_connection_closed(mux::Connection&, mux::MuxError, engine::IoError) noexcept override { closed++; }

  engine::Loop& loop;
  mux::Registry registry;
  engine::Listener listener;
  engine::Connector connector;
  std::unique_ptr<mux::Connection> server, client;
  int closed = 0;
  bool listener_closed = false;
};

int main() {
  auto created = engine::Loop::create();
  if (!created) return 77;  // no io_uring here
  engine::Loop& loop = *created.value();
  Node node(loop);
  // Handler 1: unary echo. Handler 2: a stream answered by Lengths.
  node.registry.add_unary(1, [](std::span<const std::byte> request, std::shared_ptr<mux::Responder> responder) {
    responder->reply(request);
  });
  node.registry.add_stream(2, [](const mux::StreamStart& start) -> mux::StreamObserver* {
    auto* lengths = new Lengths();  // owned by the connection from here on
    lengths->connection = start.connection;
    lengths->id = start.id;
    return lengths;
  });
  if (!node.listener.listen(engine::Address::loopback_v4(0))) return 1;
  node.connector.connect(node.listener.address());
  loop.run_until([&] { return node.client && node.server; }, 5'000'000'000);

  // A unary call with a 1 s deadline.
  bool answered = false;
  const std::string_view hello = "hello, storage node";
  mux::call(*node.client, 1, std::as_bytes(std::span(hello)), engine::Loop::clock_ns() + 1'000'000'000,
                    [&](const mux::CallResult& result) {
                      answered = result.error == mux::MuxError::none;
                      std::printf("unary: %.*s\n", static_cast<int>(result.response.size()),
                                  reinterpret_cast<const char*>(result.response.data()));
                    });
  // A stream: open with a first message, send two more, then half-close.
  Printer printer;
  printer.connection = node.client.get();
  auto id = node.client->open(2, 0, std::as_bytes(std::span(hello)), false, printer);
  if (!id) return 1;
  printer.id = id.value();
  (void)node.client->write(printer.id, std::as_bytes(std::span(std::string_view("abc"))), false);
  (void)node.client->write(printer.id, std::as_bytes(std::span(std::string_view("de"))), true);
  loop.run_until([&] { return answered && printer.done; }, 5'000'000'000);

  node.client->close();
  node.server->close();
  node.listener.close();
  loop.run_until([&] { return node.closed == 2 && node.listener_closed; }, 5'000'000'000);
  return answered && printer.done ? 0 : 1;
}
