// EchoServer: an engine-level echo service (every byte received is sent back), used by
// the echo demo, the echo benchmark and the engine's loopback tests.
//
// Each connection copies received bytes into the active half of a double buffer; when no
// send is in flight the halves swap and the whole batch goes out in one send. Memory per
// connection is bounded: past echo_pending_bytes_max unsent bytes the connection pauses
// its receive until the send drains. Loop thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "ringmux/engine/loop.h"
#include "ringmux/engine/socket.h"

namespace ringmux::tools {

// Unsent echo bytes a connection may hold before it stops reading (4 MiB: a few
// round trips of a bulk stream on loopback, small enough for 1000 connections).
inline constexpr std::size_t echo_pending_bytes_max = 4u << 20;

class EchoServer final : public engine::ListenerHandler {
 public:
  explicit EchoServer(engine::Loop& loop) noexcept;
  ~EchoServer();

  // Listens on `address` (port 0: any). Errors as Listener::listen.
  Result<void, engine::IoError> listen(const engine::Address& address) { return listener_.listen(address); }
  const engine::Address& address() const noexcept { return listener_.address(); }
  // Stops accepting and closes every connection; `closed()` turns true when all is done.
  void close() noexcept;
  bool closed() const noexcept;

  // Test hooks: abort (RST) each connection after it received this many bytes (0: never),
  // and do not read at all (the peer's sends fill the socket buffers).
  void set_abort_after_bytes(uint64_t bytes) noexcept { abort_after_bytes_ = bytes; }
  void set_never_read(bool never_read) noexcept { never_read_ = never_read; }

  uint64_t connections_accepted() const noexcept { return listener_.accepted(); }
  std::size_t connections_open() const noexcept { return connections_.size(); }
  uint64_t bytes_echoed() const noexcept { return bytes_echoed_; }

  void on_accept(int fd) noexcept override;
  void on_accept_error(engine::IoError error) noexcept override;
  void on_listener_closed() noexcept override { listener_closed_ = true; }

 private:
  class Connection;
  friend class Connection;
  void remove(Connection* connection) noexcept;

  engine::Loop& loop_;
  engine::Listener listener_;
  std::unordered_map<Connection*, std::unique_ptr<Connection>> connections_;
  uint64_t abort_after_bytes_ = 0;
  uint64_t bytes_echoed_ = 0;
  bool never_read_ = false;
  bool listener_closed_ = false;
};

}  // namespace ringmux::tools
