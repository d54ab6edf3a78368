#include "tools/echo_server.h"

#include <cstdio>
#include <cstring>

#include "ringmux/base/assert.h"

namespace ringmux::tools {

class EchoServer::Connection final : public engine::SocketHandler {
 public:
  Connection(EchoServer& server, int fd) : server_(server), socket_(server.loop_, fd, *this) {}

  void start() noexcept {
    if (!server_.never_read_) socket_.start();
  }
  void close() noexcept { socket_.close(); }

  void on_recv(std::span<const std::byte> bytes) noexcept override {
    received_ += bytes.size();
    if (server_.abort_after_bytes_ != 0 && received_ >= server_.abort_after_bytes_) {
      socket_.abort();
      return;
    }
    // The one user-space copy of the echo path: out of the provided buffer, which goes
    // back to the kernel when this call returns, into the batch of the next send.
    const std::size_t old_size = active_.size();
    active_.resize(old_size + bytes.size());
    std::memcpy(active_.data() + old_size, bytes.data(), bytes.size());
    if (!socket_.send_in_flight()) flush();
    if (active_.size() >= echo_pending_bytes_max) socket_.pause_recv();
  }

  void on_send_complete() noexcept override {
    server_.bytes_echoed_ += sending_.size();
    sending_.clear();
    if (!active_.empty()) flush();
    if (active_.size() < echo_pending_bytes_max) socket_.resume_recv();
  }

  void on_error(engine::IoError) noexcept override { socket_.close(); }
  void on_closed() noexcept override { server_.remove(this); }  // destroys this

 private:
  // Double-buffer swap: the batch gathered while the last send was in flight becomes
  // the next send; the sent buffer (capacity kept) becomes the new batch.
  void flush() noexcept {
    RM_ASSERT(sending_.empty());
    sending_.swap(active_);
    socket_.send(std::span<const std::byte>(sending_.data(), sending_.size()));
  }

  EchoServer& server_;
  engine::Socket socket_;
  std::vector<std::byte> active_;
  std::vector<std::byte> sending_;
  uint64_t received_ = 0;
};

EchoServer::EchoServer(engine::Loop& loop) noexcept : loop_(loop), listener_(loop, *this) {}

EchoServer::~EchoServer() { RM_ASSERT(closed()); }

void EchoServer::on_accept(int fd) noexcept {
  auto connection = std::make_unique<Connection>(*this, fd);
  Connection* raw = connection.get();
  connections_.emplace(raw, std::move(connection));
  raw->start();
}

void EchoServer::on_accept_error(engine::IoError error) noexcept {
  std::fprintf(stderr, "echo server: accept failed: %s\n", engine::describe(error));
}

void EchoServer::remove(Connection* connection) noexcept {
  // Called from the connection's on_closed(), the last thing the socket does.
  connections_.erase(connection);
}

void EchoServer::close() noexcept {
  listener_.close();
  std::vector<Connection*> open;
  open.reserve(connections_.size());
  for (auto& entry : connections_) open.push_back(entry.first);
  for (Connection* connection : open) connection->close();
}

bool EchoServer::closed() const noexcept {
  const auto state = listener_.state();
  return (state == engine::Listener::State::closed || state == engine::Listener::State::idle) &&
         connections_.empty();
}

}  // namespace ringmux::tools
