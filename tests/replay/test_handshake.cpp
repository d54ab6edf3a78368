// The resume handshake: new sessions and resumes accepted on both sides (through the real
// wire encoding), every refused-resume case with its status code and error, superseded
// generations ignored, and handshake violations caught.
#include "ringmux/replay/handshake.h"

#include <doctest/doctest.h>

#include <vector>

#include "ringmux/wire/codec.h"

using namespace ringmux;
using namespace ringmux::replay;

namespace {

wire::SessionId session_id(uint8_t seed) {
  wire::SessionId id{};
  for (std::size_t i = 0; i < id.size(); i++) id[i] = std::byte(static_cast<uint8_t>(seed + i * 7));
  return id;
}

// Sends `hello` through the encoder and decoder, as a peer would receive it.
wire::Hello over_the_wire(const wire::Hello& hello) {
  std::vector<std::byte> buffer(wire::frame_bytes(wire::hello_payload_size(hello)));
  const std::size_t size = wire::encode_hello(buffer, hello);
  wire::Decoder decoder;
  auto step = decoder.next(std::span<const std::byte>(buffer.data(), size));
  REQUIRE(step.ok());
  REQUIRE(step->has_frame);
  auto parsed = wire::parse_hello(step->frame);
  REQUIRE(parsed.ok());
  return parsed.value();
}

wire::HelloAck over_the_wire(const wire::HelloAck& ack) {
  std::vector<std::byte> buffer(wire::frame_bytes(wire::hello_ack_payload_bytes));
  const std::size_t size = wire::encode_hello_ack(buffer, ack);
  wire::Decoder decoder;
  auto step = decoder.next(std::span<const std::byte>(buffer.data(), size));
  REQUIRE(step.ok());
  REQUIRE(step->has_frame);
  auto parsed = wire::parse_hello_ack(step->frame);
  REQUIRE(parsed.ok());
  return parsed.value();
}

// A dialer that completed its first handshake and then lost the connection.
DialHandshake established_then_lost(const wire::SessionId& id) {
  DialHandshake dialer(id);
  const auto hello = dialer.start_attempt(0);
  const auto answer = answer_hello(over_the_wire(hello), nullptr);
  REQUIRE(answer.verdict == HelloVerdict::accept_new);
  REQUIRE(dialer.on_hello_ack(over_the_wire(answer.ack), HeldRange{0, 0}).ok());
  dialer.on_connection_lost();
  return dialer;
}

}  // namespace

// Proves a first HELLO offers a new session of generation 1 at position 0, the accepting
// side accepts it, and the dialer is established with nothing to replay.
TEST_CASE("replay handshake: a new session is accepted") {
  DialHandshake dialer(session_id(1));
  CHECK(dialer.state() == DialState::idle);
  const auto hello = over_the_wire(dialer.start_attempt(0));
  CHECK(hello.generation == 1);
  CHECK(hello.session_id == session_id(1));
  CHECK((hello.hello_flags & wire::hello_flag_resume) == 0);
  CHECK(hello.receive_position == 0);
  CHECK(dialer.state() == DialState::hello_sent);

  const auto answer = answer_hello(hello, nullptr);
  CHECK(answer.verdict == HelloVerdict::accept_new);
  CHECK(answer.ack.status == wire::StatusCode::ok);
  CHECK(answer.ack.version == limits::protocol_version_max);
  CHECK(answer.ack.generation == 1);

  auto established = dialer.on_hello_ack(over_the_wire(answer.ack), HeldRange{0, 0});
  REQUIRE(established.ok());
  CHECK(established->replay_from == 0);
  CHECK(established->generation == 1);
  CHECK(dialer.state() == DialState::established);
  CHECK(dialer.resumable());
  CHECK(dialer.invariant());
}

// Proves a resume carries RESUME, the next generation and our receive position; the
// accepting side replays from that position and answers with its own, from which the
// dialer replays.
TEST_CASE("replay handshake: a resume is accepted and yields both replay positions") {
  auto dialer = established_then_lost(session_id(2));
  const auto hello = over_the_wire(dialer.start_attempt(500));
  CHECK(hello.generation == 2);
  CHECK((hello.hello_flags & wire::hello_flag_resume) != 0);
  CHECK(hello.receive_position == 500);

  const KnownSession known{1, HeldRange{300, 800}, 700};
  const auto answer = answer_hello(hello, &known);
  CHECK(answer.verdict == HelloVerdict::accept_resume);
  CHECK(answer.replay_from == 500);  // the accepting side resends its bytes from 500
  CHECK(answer.ack.receive_position == 700);

  auto established = dialer.on_hello_ack(over_the_wire(answer.ack), HeldRange{600, 900});
  REQUIRE(established.ok());
  CHECK(established->replay_from == 700);  // the dialer resends its bytes from 700
  CHECK(established->generation == 2);
  CHECK(dialer.state() == DialState::established);
}

// Proves authenticated resume (SPEC §8.2): with a resume key, a resume carrying the proof
// of that key (through the wire) is accepted; one without a proof, with another key's, or
// whose proven fields were changed (a replayed proof of an older generation or another
// position) is refused with resume_unauthenticated; without a key, proofs are not asked.
TEST_CASE("replay handshake: a resume must prove the session's key when it has one") {
  auto dialer = established_then_lost(session_id(9));
  wire::Hello hello = dialer.start_attempt(500);
  hello.stream_window_bytes = 256 * 1024;  // a HELLO with a proof carries the windows before it
  hello.connection_window_bytes = 8 * 1024 * 1024;
  ResumeKey key{};
  for (std::size_t i = 0; i < key.size(); i++) key[i] = std::byte(static_cast<uint8_t>(i * 13 + 1));
  ResumeKey other = key;
  other[5] ^= std::byte{1};
  const KnownSession keyed{1, HeldRange{300, 800}, 700, &key};

  CHECK(answer_hello(over_the_wire(hello), &keyed).error == ReplayError::resume_unauthenticated);
  hello.has_resume_proof = true;
  hello.resume_proof = resume_proof(other, hello);
  CHECK(answer_hello(over_the_wire(hello), &keyed).ack.status == wire::StatusCode::resume_unauthenticated);
  hello.resume_proof = resume_proof(key, hello);
  const auto accepted = answer_hello(over_the_wire(hello), &keyed);
  CHECK(accepted.verdict == HelloVerdict::accept_resume);
  CHECK(accepted.replay_from == 500);
  wire::Hello moved = hello;
  moved.receive_position = 400;  // the proof was made for position 500
  CHECK(answer_hello(over_the_wire(moved), &keyed).error == ReplayError::resume_unauthenticated);
  moved = hello;
  moved.generation = 3;  // a proof of generation 2 replayed for the next one
  CHECK(answer_hello(over_the_wire(moved), &keyed).error == ReplayError::resume_unauthenticated);
  CHECK(scope_of(ReplayError::resume_unauthenticated) == Scope::session);

  const KnownSession unkeyed{1, HeldRange{300, 800}, 700};
  wire::Hello plain = hello;
  plain.has_resume_proof = false;
  CHECK(answer_hello(over_the_wire(plain), &unkeyed).verdict == HelloVerdict::accept_resume);
}

// Proves the one proof-less way into a keyed session (SPEC §8.2): a new-session HELLO (no
// RESUME) of a newer generation while the dialer has not shown it got our first HELLO_ACK
// (it lost it, so it has no key) resumes; once the dialer is confirmed the same HELLO is
// refused, and a RESUME without a proof is refused either way.
TEST_CASE("replay handshake: a dialer that lost the first HELLO_ACK gets in without a proof until it is confirmed") {
  ResumeKey key{};
  key.fill(std::byte{7});
  wire::Hello retry;
  retry.session_id = session_id(10);
  retry.generation = 2;
  retry.hello_flags = 0;  // never established: a new-session HELLO
  retry.stream_window_bytes = 256 * 1024;
  retry.connection_window_bytes = 8 * 1024 * 1024;
  KnownSession unconfirmed{1, HeldRange{0, 40}, 0, &key};
  unconfirmed.dialer_confirmed = false;
  const auto accepted = answer_hello(over_the_wire(retry), &unconfirmed);
  CHECK(accepted.verdict == HelloVerdict::accept_resume);
  CHECK(accepted.replay_from == 0);  // from the start: our HELLO_ACK and all behind it

  KnownSession confirmed = unconfirmed;
  confirmed.dialer_confirmed = true;
  CHECK(answer_hello(over_the_wire(retry), &confirmed).error == ReplayError::resume_unauthenticated);

  wire::Hello resume = retry;
  resume.hello_flags = wire::hello_flag_resume;
  CHECK(answer_hello(over_the_wire(resume), &unconfirmed).error == ReplayError::resume_unauthenticated);
}

// Proves a resume whose receive position lies beyond what the accepting side sent is
// refused with resume_position_ahead, session-scoped, and the dialer ends the session.
TEST_CASE("replay handshake: resume refused, position ahead") {
  auto dialer = established_then_lost(session_id(3));
  const auto hello = dialer.start_attempt(801);
  const KnownSession known{1, HeldRange{300, 800}, 0};
  const auto answer = answer_hello(hello, &known);
  CHECK(answer.verdict == HelloVerdict::refuse);
  CHECK(answer.error == ReplayError::resume_position_ahead);
  CHECK(answer.ack.status == wire::StatusCode::resume_position_ahead);
  auto result = dialer.on_hello_ack(over_the_wire(answer.ack), HeldRange{0, 0});
  REQUIRE(!result.ok());
  CHECK(result.error() == ReplayError::resume_position_ahead);
  CHECK(scope_of(result.error()) == Scope::session);
  CHECK(dialer.state() == DialState::ended);
  CHECK(dialer.refusal_status() == wire::StatusCode::resume_position_ahead);
}

// Proves a resume whose receive position the accepting side has already released is
// refused with resume_position_gone, and the dialer ends the session.
TEST_CASE("replay handshake: resume refused, position gone") {
  auto dialer = established_then_lost(session_id(4));
  const auto hello = dialer.start_attempt(299);
  const KnownSession known{1, HeldRange{300, 800}, 0};
  const auto answer = answer_hello(hello, &known);
  CHECK(answer.verdict == HelloVerdict::refuse);
  CHECK(answer.error == ReplayError::resume_position_gone);
  CHECK(answer.ack.status == wire::StatusCode::resume_position_gone);
  auto result = dialer.on_hello_ack(over_the_wire(answer.ack), HeldRange{0, 0});
  REQUIRE(!result.ok());
  CHECK(result.error() == ReplayError::resume_position_gone);
  CHECK(dialer.state() == DialState::ended);
}

// Proves a resume of a session the accepting side does not know (it restarted) is refused
// with resume_unknown_session, and the dialer ends the session (its streams fail).
TEST_CASE("replay handshake: resume refused, unknown session") {
  auto dialer = established_then_lost(session_id(5));
  const auto hello = dialer.start_attempt(10);
  const auto answer = answer_hello(hello, nullptr);
  CHECK(answer.verdict == HelloVerdict::refuse);
  CHECK(answer.error == ReplayError::resume_unknown_session);
  CHECK(answer.ack.status == wire::StatusCode::resume_unknown_session);
  auto result = dialer.on_hello_ack(over_the_wire(answer.ack), HeldRange{0, 0});
  REQUIRE(!result.ok());
  CHECK(result.error() == ReplayError::resume_unknown_session);
  CHECK(scope_of(result.error()) == Scope::session);
  CHECK(dialer.state() == DialState::ended);
}

// Proves the dialer refuses an accepting side whose receive position its own ring cannot
// replay from: released bytes (gone) or bytes never written (ahead), each ending the
// session with an error that maps to the status to report in ERROR.
TEST_CASE("replay handshake: the dialer refuses the peer's position outside its ring") {
  {
    auto dialer = established_then_lost(session_id(6));
    const auto hello = dialer.start_attempt(0);
    const KnownSession known{1, HeldRange{0, 0}, 99};
    const auto answer = answer_hello(hello, &known);
    REQUIRE(answer.verdict == HelloVerdict::accept_resume);
    auto result = dialer.on_hello_ack(answer.ack, HeldRange{100, 200});
    REQUIRE(!result.ok());
    CHECK(result.error() == ReplayError::resume_position_gone);
    CHECK(status_of(result.error()) == wire::StatusCode::resume_position_gone);
    CHECK(dialer.state() == DialState::ended);
  }
  {
    auto dialer = established_then_lost(session_id(7));
    const auto hello = dialer.start_attempt(0);
    const KnownSession known{1, HeldRange{0, 0}, 201};
    const auto answer = answer_hello(hello, &known);
    REQUIRE(answer.verdict == HelloVerdict::accept_resume);
    auto result = dialer.on_hello_ack(answer.ack, HeldRange{100, 200});
    REQUIRE(!result.ok());
    CHECK(result.error() == ReplayError::resume_position_ahead);
    CHECK(status_of(result.error()) == wire::StatusCode::resume_position_ahead);
  }
}

// Proves a HELLO without a common protocol version is refused with version_unsupported.
TEST_CASE("replay handshake: no common version") {
  DialHandshake dialer(session_id(8));
  auto hello = dialer.start_attempt(0);
  hello.version_min = limits::protocol_version_max + 1;
  hello.version_max = limits::protocol_version_max + 2;
  const auto answer = answer_hello(hello, nullptr);
  CHECK(answer.verdict == HelloVerdict::refuse);
  CHECK(answer.error == ReplayError::version_unsupported);
  CHECK(answer.ack.status == wire::StatusCode::version_unsupported);
  auto result = dialer.on_hello_ack(answer.ack, HeldRange{});
  REQUIRE(!result.ok());
  CHECK(result.error() == ReplayError::version_unsupported);
  CHECK(dialer.state() == DialState::ended);
}

// Proves the accepting side ignores (never answers) a HELLO of an older or equal generation
// than the one it last accepted for the session, and accepts a newer one.
TEST_CASE("replay handshake: superseded generations are ignored by the accepting side") {
  const KnownSession known{3, HeldRange{0, 100}, 0};
  wire::Hello hello;
  hello.session_id = session_id(9);
  hello.hello_flags = wire::hello_flag_resume;
  hello.receive_position = 50;
  for (uint64_t generation : {uint64_t{1}, uint64_t{2}, uint64_t{3}}) {
    hello.generation = generation;
    const auto answer = answer_hello(hello, &known);
    CHECK(answer.verdict == HelloVerdict::ignore);
    CHECK(answer.error == ReplayError::superseded_generation);
    CHECK(scope_of(answer.error) == Scope::connection);
  }
  hello.generation = 4;
  CHECK(answer_hello(hello, &known).verdict == HelloVerdict::accept_resume);
}

// Proves the dialer ignores a HELLO_ACK for an attempt it abandoned: its state is
// unchanged, and the answer for the current attempt still establishes the session.
TEST_CASE("replay handshake: superseded generations are ignored by the dialer") {
  DialHandshake dialer(session_id(10));
  const auto first = dialer.start_attempt(0);   // generation 1: no answer in time
  const auto second = dialer.start_attempt(0);  // generation 2
  CHECK(second.generation == 2);
  const auto late = answer_hello(first, nullptr);
  auto stale = dialer.on_hello_ack(late.ack, HeldRange{});
  REQUIRE(!stale.ok());
  CHECK(stale.error() == ReplayError::superseded_generation);
  CHECK(dialer.state() == DialState::hello_sent);
  auto current = dialer.on_hello_ack(answer_hello(second, nullptr).ack, HeldRange{});
  REQUIRE(current.ok());
  CHECK(current->generation == 2);
}

// Proves that when the answer to the first HELLO was lost, the dialer's next (still
// new-session) HELLO resumes the session the accepting side already created.
TEST_CASE("replay handshake: a lost first answer resumes the session") {
  DialHandshake dialer(session_id(11));
  const auto first = dialer.start_attempt(0);
  REQUIRE(answer_hello(first, nullptr).verdict == HelloVerdict::accept_new);
  dialer.on_connection_lost();  // HELLO_ACK never arrived
  const auto second = dialer.start_attempt(0);
  CHECK((second.hello_flags & wire::hello_flag_resume) == 0);
  const KnownSession known{1, HeldRange{0, 64}, 0};  // it already queued 64 bytes for us
  const auto answer = answer_hello(second, &known);
  CHECK(answer.verdict == HelloVerdict::accept_resume);
  CHECK(answer.replay_from == 0);
  REQUIRE(dialer.on_hello_ack(answer.ack, HeldRange{}).ok());
}

// Proves HELLO_ACKs that do not answer our HELLO are handshake violations that leave the
// dialer's state alone: another session id, a generation we never offered, a version
// outside our range, or an answer when no HELLO is outstanding.
TEST_CASE("replay handshake: a HELLO_ACK that does not answer our HELLO") {
  DialHandshake dialer(session_id(12));
  const auto hello = dialer.start_attempt(0);
  auto ack = answer_hello(hello, nullptr).ack;

  auto other_session = ack;
  other_session.session_id = session_id(13);
  CHECK(dialer.on_hello_ack(other_session, HeldRange{}).error() == ReplayError::handshake_violation);
  auto future_generation = ack;
  future_generation.generation = 2;
  CHECK(dialer.on_hello_ack(future_generation, HeldRange{}).error() == ReplayError::handshake_violation);
  auto bad_version = ack;
  bad_version.version = limits::protocol_version_max + 1;
  CHECK(dialer.on_hello_ack(bad_version, HeldRange{}).error() == ReplayError::handshake_violation);
  CHECK(dialer.state() == DialState::hello_sent);

  REQUIRE(dialer.on_hello_ack(ack, HeldRange{}).ok());
  CHECK(dialer.on_hello_ack(ack, HeldRange{}).error() == ReplayError::handshake_violation);  // twice
  CHECK(dialer.state() == DialState::established);
}

// Proves the accepting side refuses malformed offers with protocol_error: generation 0, and
// a new-session HELLO that claims to have received bytes.
TEST_CASE("replay handshake: malformed HELLOs are refused") {
  wire::Hello hello;
  hello.session_id = session_id(14);
  hello.generation = 0;
  auto answer = answer_hello(hello, nullptr);
  CHECK(answer.verdict == HelloVerdict::refuse);
  CHECK(answer.error == ReplayError::handshake_violation);
  CHECK(answer.ack.status == wire::StatusCode::protocol_error);
  hello.generation = 1;
  hello.receive_position = 5;
  answer = answer_hello(hello, nullptr);
  CHECK(answer.verdict == HelloVerdict::refuse);
  CHECK(answer.error == ReplayError::handshake_violation);
}

// Proves a refusal for a passing reason (going_away) is connection-scoped: the dialer goes
// back to idle, remembers the status, and its next attempt (a new generation) can succeed.
TEST_CASE("replay handshake: a passing refusal allows a later attempt") {
  DialHandshake dialer(session_id(15));
  const auto hello = dialer.start_attempt(0);
  auto ack = answer_hello(hello, nullptr).ack;
  ack.status = wire::StatusCode::going_away;
  auto refused = dialer.on_hello_ack(over_the_wire(ack), HeldRange{});
  REQUIRE(!refused.ok());
  CHECK(refused.error() == ReplayError::handshake_refused);
  CHECK(scope_of(refused.error()) == Scope::connection);
  CHECK(dialer.refusal_status() == wire::StatusCode::going_away);
  CHECK(dialer.state() == DialState::idle);
  const auto retry = dialer.start_attempt(0);
  CHECK(retry.generation == 2);
  REQUIRE(dialer.on_hello_ack(answer_hello(retry, nullptr).ack, HeldRange{}).ok());
  CHECK(dialer.invariant());
}

// Proves every ReplayError has a description and a scope, and that the refusal errors map
// to their SPEC status codes.
TEST_CASE("replay errors: describe, scope and status") {
  for (int value = 0; value <= static_cast<int>(ReplayError::handshake_violation); value++) {
    const auto error = static_cast<ReplayError>(value);
    CHECK(std::string(describe(error)) != "unknown replay error");
    (void)scope_of(error);
  }
  CHECK(scope_of(ReplayError::ack_ahead) == Scope::connection);
  CHECK(scope_of(ReplayError::resume_unknown_session) == Scope::session);
  CHECK(status_of(ReplayError::resume_position_ahead) == wire::StatusCode::resume_position_ahead);
  CHECK(status_of(ReplayError::resume_position_gone) == wire::StatusCode::resume_position_gone);
  CHECK(status_of(ReplayError::resume_unknown_session) == wire::StatusCode::resume_unknown_session);
  CHECK(status_of(ReplayError::version_unsupported) == wire::StatusCode::version_unsupported);
  const std::error_code code = ReplayError::ack_ahead;
  CHECK(code.category().name() == std::string("ringmux.replay"));
}
