// Acceptor: the accepting side of resumable sessions. It reads the HELLO that opens every
// new TCP connection and either starts a new session or hands the connection to the
// session it resumes.
//
// The HELLO is read on its own, before any Connection sees the socket: a plain receive of
// exactly the frame's bytes (a version 1 HELLO in one read; a longer one, up to
// limits::hello_payload_bytes_max, completed once its header told the length), so nothing
// behind it is taken from the socket. A new
// session's dialer pipelines frames behind its HELLO; they stay in the kernel for the new
// Connection's receive. A resuming dialer sends nothing more until our HELLO_ACK.
//
// Routing, by the HELLO's session id in the table of live sessions:
//  - unknown id, new session: `factory` makes the Connection, which starts with the HELLO
//    and is entered in the table under its session id until its session ends;
//  - known id: the Connection adopts the socket and replays (Connection::adopt), or answers
//    with a refusal or ignores a superseded generation; then the acceptor sends that
//    refusal (a HELLO_ACK with its status) and closes the socket;
//  - unknown id asking to resume (the peer's session outlived ours, e.g. we restarted):
//    refused with resume_unknown_session, so the peer's streams fail with session_lost.
// A connection that sends no valid HELLO within limits::hello_timeout_ns, or damaged
// bytes, is closed.
//
// With a handshake stage (AcceptorOptions::handshake: TLS), the socket becomes a transport
// that runs the handshake first; the HELLO is read through it (with whatever frames came
// behind it, which go to the new session), and sessions get the transport, not the fd
// (set_transport_factory). Refusals are sent through it. A transport whose session another
// loop owns moves there whole: its receive is stopped (what was read behind the HELLO is
// kept), and once nothing of it is in flight it is released (Transport::release: the fd
// and, for TLS, the OpenSSL object) and posted with the HELLO and those bytes to the
// owning loop's acceptor, which adopts it and routes it as if it had read the HELLO
// itself. A transport that cannot move (can_release() false) stays on this loop.
//
// Threads: the acceptor and every Connection it routes to live on one loop. A server with
// several loops has an acceptor per loop; the listening loop's router hands each socket or
// handshaken transport, with its HELLO, to the acceptor of the loop that owns the session
// (loop_placement.h).
// Lifetime: the acceptor must outlive the sessions it routed to (a connection leaves the
// table when its session ends; destroying the acceptor with one still in it is asserted);
// close() it and let its pending reads finish (idle()) before destroying it.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "ringmux/engine/completion.h"
#include "ringmux/base/limits.h"
#include "ringmux/engine/loop.h"
#include "ringmux/engine/timer.h"
#include "ringmux/mux/link/connection.h"
#include "ringmux/wire/codec.h"

namespace ringmux::mux {

struct AcceptorStats {
  uint64_t connections = 0;  // sockets handed to accept()
  uint64_t sessions_new = 0;
  uint64_t resumes = 0;
  uint64_t refused = 0;       // answered with a refusing HELLO_ACK
  uint64_t ignored = 0;       // superseded generations, closed without an answer
  uint64_t failed = 0;        // no valid HELLO: timed out, closed early, damaged
  uint64_t handed_over = 0;   // taken by the router (to another loop's acceptor)
  uint64_t pending_refused = 0;  // closed at once: pending_hellos_max sockets were waiting
  uint64_t detached_ended = 0;   // detached sessions ended for detached_held_bytes_max
};

// A connection whose HELLO one loop's acceptor read, on its way to the acceptor of the loop
// that owns its session (Acceptor::take): a socket, or a handshaken transport taken off the
// accepting loop with the plaintext read behind its HELLO (a new session's first frames).
struct Arrival {
  int fd = -1;                                   // a socket (its HELLO read off it), or
  std::unique_ptr<ReleasedTransport> transport;  // a released transport (then fd is -1)
  std::vector<std::byte> pipelined;              // with what came behind its HELLO
};

struct AcceptorOptions {
  uint32_t pending_hellos_max = limits::pending_hellos_max;
  uint64_t hello_timeout_ns = limits::hello_timeout_ns;
  uint64_t detached_held_bytes_max = limits::detached_held_bytes_max;
  // The stage every accepted socket passes before its HELLO is read (mux/link/tls.h).
  std::shared_ptr<Handshake> handshake;
};

class Acceptor final : public SessionRegistry {
 public:
  // Makes the (not yet started) Connection of a new session on `fd`, with
  // ConnectionOptions::resume set, or returns nullptr to refuse the session (the acceptor
  // then closes `fd`). The caller owns the Connection.
  using Factory = std::function<Connection*(int fd)>;
  // Where sessions live in a server of several loops (hand_over_router, loop_placement.h):
  // `place` names the loop that owns a valid HELLO's session; when that is not `here`,
  // `hand_over` gives the connection to that loop's acceptor (Acceptor::take there).
  struct Router {
    std::function<uint32_t(const wire::Hello& hello)> place;
    uint32_t here = 0;
    std::function<void(uint32_t loop, const wire::Hello& hello, Arrival arrival)> hand_over;
  };
  // With a handshake: makes the (not yet started) Connection of a new session over
  // `transport`, taking it (moved from), or returns nullptr and leaves it to the acceptor.
  using TransportFactory = std::function<Connection*(std::unique_ptr<Transport>& transport)>;

  Acceptor(engine::Loop& loop, Factory factory, const AcceptorOptions& options = {}) noexcept;
  ~Acceptor();
  Acceptor(const Acceptor&) = delete;
  Acceptor& operator=(const Acceptor&) = delete;

  // Takes an accepted socket: reads its HELLO, then routes it (top of this file).
  void accept(int fd) noexcept;
  // Takes a connection whose HELLO another loop's acceptor has read (adopting a released
  // transport on this loop), and routes it here.
  void take(const wire::Hello& hello, Arrival arrival) noexcept;
  void set_router(Router router) noexcept { router_ = std::move(router); }
  void set_transport_factory(TransportFactory factory) noexcept { transport_factory_ = std::move(factory); }
  // Stops reading pending HELLOs (their sockets are closed); idle() once they are done.
  void close() noexcept;
  bool idle() const noexcept { return pending_.empty() && handshaking_.empty(); }
  std::size_t sessions() const noexcept { return sessions_.size(); }
  // Sessions whose transport broke, waiting for their dialer, and the bytes their held
  // batches hold (the pages written: a batch's reserved but unwritten capacity costs no
  // memory until it is used).
  std::size_t detached() const noexcept { return detached_.size(); }
  uint64_t detached_held_bytes() const noexcept { return detached_held_bytes_; }
  const AcceptorStats& stats() const noexcept { return stats_; }

 private:
  // One socket whose HELLO is being read.
  struct Pending {
    Acceptor* owner = nullptr;
    int fd = -1;
    engine::Completion recv;
    engine::Timer timeout;
    wire::Decoder decoder{limits::hello_payload_bytes_max};
    std::array<std::byte, limits::frame_header_bytes + limits::hello_payload_bytes_max> buffer{};
    std::size_t have = 0;  // bytes in buffer
    std::size_t fed = 0;   // bytes of buffer given to the decoder
    std::size_t need = 0;  // bytes the current read completes at
    bool timed_out = false;
  };
  // One transport whose handshake and HELLO are being read (AcceptorOptions::handshake),
  // or one being closed after a refusal or a failure.
  struct Handshaking final : TransportHandler {
    Acceptor* owner = nullptr;
    std::unique_ptr<Transport> transport;
    engine::Timer timeout;
    wire::Decoder decoder{limits::hello_payload_bytes_max};
    bool closing = false;
    // Moving to loop `moving_to` (its HELLO read, receiving stopping): what arrives until
    // the stop is what came behind the HELLO; the release runs on the next turn.
    bool moving = false;
    uint32_t moving_to = 0;
    wire::Hello moving_hello{};
    std::vector<std::byte> pipelined;
    engine::Deferred release_turn{&Acceptor::on_release_turn, this};
    void on_transport_recv(std::span<const std::byte> bytes) noexcept override;
    void on_transport_sent() noexcept override {}
    void on_transport_error(engine::IoError error) noexcept override;
    void on_transport_closed() noexcept override;
    void on_transport_recv_stopped() noexcept override;
  };
  struct IdHash {
    std::size_t operator()(const wire::SessionId& id) const noexcept;
  };

  static void on_recv(engine::Completion& completion, int32_t result, uint32_t flags) noexcept;
  static void on_timeout(engine::Timer& timer) noexcept;
  void arm_recv(Pending& pending) noexcept;
  // The read is over: `hello` when a valid one arrived, else nullptr (the socket is closed).
  void finish(Pending& pending, const wire::Hello* hello) noexcept;
  // The loop the router places `hello`'s session on, when that is another loop.
  std::optional<uint32_t> elsewhere(const wire::Hello& hello) const noexcept;
  void route(int fd, const wire::Hello& hello) noexcept;
  // The same for a transport that read `hello` (and `pipelined` behind it), still owned by
  // `entry`, which is closed (refusal) or given up (the session takes the transport).
  void route(Handshaking& entry, const wire::Hello& hello, std::span<const std::byte> pipelined) noexcept;
  // Starts moving the entry's transport to the loop that owns `hello`'s session; false
  // when it stays here (this loop owns the session, or the transport cannot move).
  bool move_elsewhere(Handshaking& entry, const wire::Hello& hello, std::span<const std::byte> pipelined) noexcept;
  // The entry's transport has stopped: released and handed over (next turn after the stop).
  static void on_release_turn(engine::Deferred& deferred) noexcept;
  // What both routes share: the answer to a HELLO for a session not in the table (a
  // refusal counted and logged), and the count of a resume's answer (a refusal logged);
  // each route acts on the verdict with its socket or its handshaken transport.
  replay::HelloAnswer answer_unknown(const wire::Hello& hello) noexcept;
  replay::HelloVerdict count_resume(const replay::HelloAnswer& answer, uint64_t connection_id) noexcept;
  // Sends `ack` (a refusal) through the entry's transport, best effort, and closes it.
  void refuse(Handshaking& entry, const wire::HelloAck& ack) noexcept;
  void close_entry(Handshaking& entry) noexcept;
  void erase(Handshaking& entry) noexcept;
  static void on_handshake_timeout(engine::Timer& timer) noexcept;
  // Sends a refusing HELLO_ACK (best effort: one non-blocking send on a fresh socket) and
  // closes the socket.
  static void refuse(int fd, const wire::HelloAck& ack) noexcept;
  // A connection's session ended: it leaves the table.
  void forget(Connection& connection) noexcept override;
  // A connection's transport broke (it waits for a resume): over the cap on detached held
  // bytes, the sessions detached longest ago end with session_lost.
  void on_detached(Connection& connection) noexcept override;

  engine::Loop& loop_;
  Factory factory_;
  AcceptorOptions options_;
  // Detached sessions, oldest first, each with the held bytes it was charged when it
  // detached (they do not change until it resumes or ends); their sum is kept.
  struct Detached {
    Connection* connection;
    uint64_t held_bytes;
  };
  std::vector<Detached> detached_;
  uint64_t detached_held_bytes_ = 0;
  // Removes `connection` from detached_ (if there) and its charge from the sum.
  void undetach(Connection& connection) noexcept;
  Router router_;
  std::vector<std::unique_ptr<Pending>> pending_;
  std::vector<std::unique_ptr<Handshaking>> handshaking_;
  TransportFactory transport_factory_;
  std::unordered_map<wire::SessionId, Connection*, IdHash> sessions_;
  AcceptorStats stats_;
  bool closing_ = false;
};

}  // namespace ringmux::mux
