// The resume handshake, both sides, as pure state: HELLO and HELLO_ACK in (as wire/
// types), verdicts and the position to replay from out. No I/O, no clock, no randomness
// (the caller supplies the session id).
//
// The dialing side (DialHandshake) owns the session's identity: a 128-bit random id and
// the generation, the count of connections the session has used, this one included. Each
// connection attempt takes the next generation and sends HELLO: a new session, or RESUME
// with our receive position once the session has been established. The HELLO_ACK either
// accepts, carrying the peer's receive position (our replay starts there), or refuses
// with a status code that becomes a distinct ReplayError.
//
// The accepting side (answer_hello) is a function of the HELLO and what its session table
// knows about that session id. It accepts a new session, accepts a resume (checking the
// dialer's receive position against its own replay ring), refuses (with the SPEC status
// code: resume_position_ahead, resume_position_gone, resume_unknown_session,
// version_unsupported, protocol_error), or ignores a superseded generation.
//
// Generations. A HELLO or HELLO_ACK whose generation is older than (or, on the accepting
// side, equal to) the session's current one comes from a connection that was superseded,
// for example a dial attempt delayed in the network that arrives after its successor was
// accepted. It is ignored, never answered (no status code means "superseded", and nobody
// waits on that connection): the caller closes that connection and nothing else changes,
// which is how "errors from a superseded generation are ignored" holds. A newer generation
// supersedes the current connection: accepting it means the caller closes the older one.
//
// DialHandshake invariant: generation 0 exactly until the first attempt; hello_sent and
// established concern the connection of the current generation; once established, every
// later HELLO resumes; ended is final.
// Threads: one thread (the session's loop) owns a DialHandshake; answer_hello is pure and
// callable from any thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "ringmux/base/result.h"
#include "ringmux/replay/errors.h"
#include "ringmux/replay/held.h"
#include "ringmux/wire/frame.h"

namespace ringmux::replay {

// Who a session is, as its dialing side offers it in HELLO.
struct SessionIdentity {
  wire::SessionId id{};     // 128 random bits from the caller's random source
  uint64_t generation = 0;  // connections used so far, the current one included; 0 before any
};

// A handshake that succeeded, as the dialing side sees it.
struct Established {
  uint16_t version = 0;      // protocol version of this connection
  uint64_t features = 0;     // feature bits both sides use
  uint64_t generation = 0;   // generation of this connection
  uint64_t replay_from = 0;  // the peer's receive position: our first byte to send (again);
                             // it acknowledges everything before it (HeldBatches::ack)
};

enum class DialState : uint8_t {
  idle,         // no attempt outstanding: before the first, or after a connection was lost
  hello_sent,   // the current generation's HELLO is out; waiting for its HELLO_ACK
  established,  // the current generation's HELLO_ACK accepted; the session runs
  ended,        // refused with a session-scoped error: the session cannot resume (final)
};
const char* describe(DialState state) noexcept;

class DialHandshake {
 public:
  // A session with the caller's random `id` whose HELLOs offer `features`.
  explicit DialHandshake(const wire::SessionId& id, uint64_t features = 0) noexcept;

  // Starts the next connection attempt: takes the next generation and returns the HELLO to
  // send on it. `receive_position` is the session's receive position; it must be
  // 0 until the session has been established once (asserted). Callable in every state but
  // ended (asserted); from hello_sent it abandons an attempt that got no answer, from
  // established a connection that was lost.
  wire::Hello start_attempt(uint64_t receive_position) noexcept;

  // The HELLO_ACK that arrived on a connection. `held` is what our held batches hold
  // (HeldBatches::held()). On success the state is established and the result says where
  // to replay from. Errors:
  //  - superseded_generation: an answer for an older generation; ignore it (state unchanged).
  //  - handshake_violation: no HELLO outstanding, another session id, a generation we did
  //    not offer, or a version outside our range (state unchanged; close the connection).
  //  - resume_position_ahead / resume_position_gone / resume_unknown_session /
  //    version_unsupported: refused by the peer, or the peer's receive position lies
  //    outside `held` (then tell it with ERROR(status_of(error))). Session-scoped: the
  //    state is ended.
  //  - handshake_refused: refused for any other status (refusal_status() says which);
  //    the state is idle and a later attempt may succeed.
  Result<Established, ReplayError> on_hello_ack(const wire::HelloAck& ack, HeldRange held) noexcept;

  // The current connection closed (or its attempt failed): back to idle unless ended.
  void on_connection_lost() noexcept;

  DialState state() const noexcept { return state_; }
  const SessionIdentity& identity() const noexcept { return identity_; }
  // Whether the session was established once, so that HELLOs now ask to resume.
  bool resumable() const noexcept { return resumable_; }
  // The status of the last refusing HELLO_ACK (ok if none), for logs.
  wire::StatusCode refusal_status() const noexcept { return refusal_status_; }

  // Checks the invariant stated at the top of this file.
  bool invariant() const noexcept;

 private:
  SessionIdentity identity_;
  uint64_t features_;
  DialState state_ = DialState::idle;
  bool resumable_ = false;
  wire::StatusCode refusal_status_ = wire::StatusCode::ok;
};

// What the accepting side's session table knows about a session id.
// The key of a session's resumes (wire/SPEC.md §8.2): derived by both sides from the
// session's first transport (keying material a TLS connection exports), never sent.
using ResumeKey = std::array<std::byte, 32>;

// HMAC-SHA256 by `key` of the resume `hello`'s session id, generation and receive position.
wire::ResumeProof resume_proof(const ResumeKey& key, const wire::Hello& hello) noexcept;
// Whether `hello` carries the proof `key` gives it (compared in constant time).
bool resume_proof_valid(const ResumeKey& key, const wire::Hello& hello) noexcept;

struct KnownSession {
  uint64_t generation = 0;        // generation of the connection it last accepted
  HeldRange held;                 // what its replay ring holds
  uint64_t receive_position = 0;  // what it has received from the dialing side
  const ResumeKey* resume_key = nullptr;  // set: a resume must prove it (resume_proof)
  // The dialer has shown it received our first HELLO_ACK (it acknowledged bytes of ours, or
  // resumed with RESUME). Until then a new-session HELLO of a newer generation (the dialer
  // never got our answer, so it has no resume key) needs no proof.
  bool dialer_confirmed = true;
};

enum class HelloVerdict : uint8_t {
  accept_new,     // create the session; send `ack`
  accept_resume,  // resume the known session: close its older connection (its later errors
                  // are ignored), send `ack`, ack `replay_from` in our ring (the HELLO's
                  // position acknowledges what precedes it) and replay from there
  refuse,         // send `ack` (its status says why) and close; `error` says why. When the
                  // error is session-scoped the known session ends too (its streams fail)
  ignore,         // a superseded generation: close this connection without an answer
};
const char* describe(HelloVerdict verdict) noexcept;

struct HelloAnswer {
  HelloVerdict verdict = HelloVerdict::refuse;
  wire::HelloAck ack;                     // for accept_new, accept_resume and refuse
  uint64_t replay_from = 0;               // accept_resume: our first byte to send again
  ReplayError error = ReplayError::none;  // refuse and ignore: why
};

// The accepting side's answer to `hello`. `known` is the session table's entry for
// hello.session_id, or nullptr when there is none; `features` are the feature bits this
// side supports. In order:
//  1. generation 0 (no connection counts as the zeroth): refuse, handshake_violation.
//  2. no common protocol version: refuse, version_unsupported.
//  3. unknown session: RESUME refuses with resume_unknown_session (the peer restarted);
//     a new-session HELLO carrying a receive position is a handshake_violation; otherwise
//     accept_new.
//  4. known session, generation <= the known one: ignore, superseded_generation.
//  4a. known session with a resume key, no valid proof in the HELLO: refuse,
//     resume_unauthenticated (the caller keeps its session: the refusal is the resumer's);
//     except a new-session HELLO (no RESUME) while the dialer is not confirmed: it lost our
//     first HELLO_ACK and holds no key (the caller still checks the peer's identity, and
//     binds the session's key to the new transport).
//  5. known session, the HELLO's receive position before held.acked: refuse with
//     resume_position_gone; beyond held.tail: refuse with resume_position_ahead.
//  6. otherwise accept_resume. A new-session HELLO (no RESUME) for a known session with a
//     newer generation also resumes: the dialer sent it because our answer to its first
//     HELLO was lost, and its receive position (0) is checked like any other.
HelloAnswer answer_hello(const wire::Hello& hello, const KnownSession* known, uint64_t features = 0) noexcept;

}  // namespace ringmux::replay
