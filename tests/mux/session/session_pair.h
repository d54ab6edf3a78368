// Two sans-I/O sessions back to back in memory (a dialer and an acceptor), a recorder of
// every session event, and raw-frame helpers: shared by the session-level tests.
#pragma once

#include <doctest/doctest.h>

#include <cstring>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ringmux/mux/session/session.h"
#include "ringmux/wire/codec.h"

namespace ringmux::mux::testing {

using wire::StatusCode;
using Bytes = std::vector<std::byte>;
using ringmux::ByteVector;

inline Bytes bytes_of(std::string_view text) {
  Bytes out(text.size());
  std::memcpy(out.data(), text.data(), text.size());
  return out;
}

// Records every event of one session; can auto-consume what it receives.
struct Recorder final : SessionHandler {
  Session* session = nullptr;
  bool auto_consume = true;
  struct StreamLog {
    uint32_t handler_id = 0;
    Bytes received;
    bool remote_ended = false;
    bool closed = false;
    std::optional<MuxError> reset;
    bool stopped = false;
    int writable = 0;
    std::string message;
  };
  std::map<StreamId, StreamLog> streams;
  std::vector<uint64_t> pongs;
  std::optional<uint32_t> goaway_last;

  void on_stream_opened(StreamId id, StreamBinding&, uint32_t handler_id, uint64_t, std::span<const std::byte> payload,
                        bool end_stream) noexcept override {
    auto& log = streams[id];
    log.handler_id = handler_id;
    log.received.insert(log.received.end(), payload.begin(), payload.end());
    log.remote_ended = end_stream;
    if (auto_consume) session->consume(id, payload.size(), 0);
  }
  void on_stream_data(StreamId id, StreamBinding&, std::span<const std::byte> payload, bool end_stream) noexcept override {
    auto& log = streams[id];
    log.received.insert(log.received.end(), payload.begin(), payload.end());
    log.remote_ended |= end_stream;
    if (auto_consume) session->consume(id, payload.size(), 0);
  }
  void on_stream_finished(StreamId id, StreamBinding&, MuxError error, std::string_view message) noexcept override {
    if (error == MuxError::none) {
      streams[id].closed = true;
      return;
    }
    streams[id].reset = error;
    streams[id].message = std::string(message);
  }
  void on_stream_writable(StreamId id) noexcept override { streams[id].writable++; }
  void on_stream_stopped(StreamId id, StreamBinding&) noexcept override { streams[id].stopped = true; }
  void on_goaway(uint32_t last_stream_id, StatusCode) noexcept override { goaway_last = last_stream_id; }
  void on_pong(uint64_t opaque) noexcept override { pongs.push_back(opaque); }
};

// A dialer and an acceptor joined by an in-memory "socket".
struct Pair {
  explicit Pair(SessionOptions client_options = {}, SessionOptions server_options = {})
      : client(client_log, with_role(client_options, true)), server(server_log, with_role(server_options, false)) {
    client_log.session = &client;
    server_log.session = &server;
  }
  static SessionOptions with_role(SessionOptions options, bool dialer) {
    options.dialer = dialer;
    return options;
  }
  // Moves batches both ways until neither side has output (bounded).
  void pump() {
    for (int round = 0; round < 1000; round++) {
      const bool moved = move(client, server) | move(server, client);
      if (!moved) return;
    }
    FAIL("sessions kept talking for 1000 rounds");
  }
  static bool move(Session& from, Session& to) {
    if (!from.has_output()) return false;
    ByteVector link;
    replay::HeldSpans held;
    from.take_output(link, held);
    // Link frames first, then the held bytes: the order of the glue's gather send.
    for (std::span<const std::byte> part : {std::span<const std::byte>(link), held.first, held.second}) {
      if (!to.failed()) (void)to.receive(part, 0);
    }
    return true;
  }
  Recorder client_log;
  Recorder server_log;
  Session client;
  Session server;
};

// Encodes one raw frame for injection.
template <typename Encode>
Bytes raw(Encode encode) {
  Bytes out(2048);
  out.resize(encode(std::span<std::byte>(out)));
  return out;
}

}  // namespace ringmux::mux::testing
