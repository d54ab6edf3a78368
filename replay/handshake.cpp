#include "ringmux/replay/handshake.h"

#include <endian.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstring>

#include <algorithm>

#include "ringmux/base/assert.h"
#include "ringmux/base/limits.h"

namespace ringmux::replay {

namespace {

using wire::StatusCode;

// Where a replay may start, judged against what the sender's ring holds.
ReplayError check_resume_position(uint64_t position, HeldRange held) noexcept {
  if (position < held.acked) return ReplayError::resume_position_gone;
  if (position > held.tail) return ReplayError::resume_position_ahead;
  return ReplayError::none;
}

// The refusal a HELLO_ACK status means to the dialing side.
ReplayError error_from_refusal(StatusCode status) noexcept {
  switch (status) {
    case StatusCode::resume_position_ahead: return ReplayError::resume_position_ahead;
    case StatusCode::resume_position_gone: return ReplayError::resume_position_gone;
    case StatusCode::resume_unknown_session: return ReplayError::resume_unknown_session;
    // session_lost is not a HELLO_ACK status of SPEC section 4.2, but its meaning (the
    // session cannot resume) is the same as an unknown session's.
    case StatusCode::session_lost: return ReplayError::resume_unknown_session;
    case StatusCode::version_unsupported: return ReplayError::version_unsupported;
    case StatusCode::resume_unauthenticated: return ReplayError::resume_unauthenticated;
    case StatusCode::ok:
    case StatusCode::cancelled:
    case StatusCode::deadline_exceeded:
    case StatusCode::refused_stream:
    case StatusCode::unknown_handler:
    case StatusCode::handler_error:
    case StatusCode::flow_control_error:
    case StatusCode::protocol_error:
    case StatusCode::internal_error:
    case StatusCode::stream_stopped:
    case StatusCode::going_away:
    case StatusCode::resource_exhausted:
      return ReplayError::handshake_refused;
  }
  return ReplayError::handshake_refused;
}

}  // namespace

const char* describe(DialState state) noexcept {
  switch (state) {
    case DialState::idle: return "idle";
    case DialState::hello_sent: return "hello_sent";
    case DialState::established: return "established";
    case DialState::ended: return "ended";
  }
  return "unknown";
}

const char* describe(HelloVerdict verdict) noexcept {
  switch (verdict) {
    case HelloVerdict::accept_new: return "accept_new";
    case HelloVerdict::accept_resume: return "accept_resume";
    case HelloVerdict::refuse: return "refuse";
    case HelloVerdict::ignore: return "ignore";
  }
  return "unknown";
}

// ---- dialing side ----------------------------------------------------------------------

DialHandshake::DialHandshake(const wire::SessionId& id, uint64_t features) noexcept : features_(features) {
  identity_.id = id;
}

wire::Hello DialHandshake::start_attempt(uint64_t receive_position) noexcept {
  RM_ASSERT(state_ != DialState::ended);
  RM_ASSERT(resumable_ || receive_position == 0);  // nothing can arrive before the first ACK
  identity_.generation++;
  state_ = DialState::hello_sent;
  wire::Hello hello;
  hello.version_min = limits::protocol_version_min;
  hello.version_max = limits::protocol_version_max;
  hello.features = features_;
  hello.session_id = identity_.id;
  hello.generation = identity_.generation;
  hello.receive_position = receive_position;
  hello.hello_flags = resumable_ ? wire::hello_flag_resume : 0;
  RM_DEBUG_ASSERT(invariant());
  return hello;
}

Result<Established, ReplayError> DialHandshake::on_hello_ack(const wire::HelloAck& ack, HeldRange held) noexcept {
  RM_ASSERT(held.acked <= held.tail);
  // An answer to an attempt we gave up on: its connection is stale, whatever it says.
  if (ack.generation < identity_.generation) return Err{ReplayError::superseded_generation};
  if (state_ != DialState::hello_sent) return Err{ReplayError::handshake_violation};
  if (ack.session_id != identity_.id || ack.generation != identity_.generation) {
    return Err{ReplayError::handshake_violation};
  }
  if (ack.status != StatusCode::ok) {
    refusal_status_ = ack.status;
    const ReplayError error = error_from_refusal(ack.status);
    state_ = scope_of(error) == Scope::session ? DialState::ended : DialState::idle;
    RM_DEBUG_ASSERT(invariant());
    return Err{error};
  }
  if (ack.version < limits::protocol_version_min || ack.version > limits::protocol_version_max) {
    return Err{ReplayError::handshake_violation};
  }
  // The peer's receive position must be one our ring can replay from. Before the session
  // was established the ring has sent nothing, so only 0 (or what is queued) qualifies.
  if (const ReplayError error = check_resume_position(ack.receive_position, held); error != ReplayError::none) {
    state_ = DialState::ended;
    RM_DEBUG_ASSERT(invariant());
    return Err{error};
  }
  state_ = DialState::established;
  resumable_ = true;
  RM_DEBUG_ASSERT(invariant());
  Established established;
  established.version = ack.version;
  established.features = ack.features & features_;
  established.generation = identity_.generation;
  established.replay_from = ack.receive_position;
  return established;
}

void DialHandshake::on_connection_lost() noexcept {
  if (state_ != DialState::ended) state_ = DialState::idle;
  RM_DEBUG_ASSERT(invariant());
}

bool DialHandshake::invariant() const noexcept {
  switch (state_) {
    case DialState::idle:
      return !resumable_ || identity_.generation >= 1;
    case DialState::hello_sent:
      return identity_.generation >= 1;
    case DialState::established:
      return identity_.generation >= 1 && resumable_;
    case DialState::ended:
      return identity_.generation >= 1;
  }
  return false;
}

// ---- resume proofs -----------------------------------------------------------------------

wire::ResumeProof resume_proof(const ResumeKey& key, const wire::Hello& hello) noexcept {
  // What the proof covers, in wire order: a proof fits one resume of one session.
  static constexpr char domain[] = "ringmux resume proof v1";
  std::array<unsigned char, sizeof(domain) - 1 + 16 + 8 + 8> message{};
  std::memcpy(message.data(), domain, sizeof(domain) - 1);
  unsigned char* at = message.data() + sizeof(domain) - 1;
  std::memcpy(at, hello.session_id.data(), 16);
  const uint64_t generation = htole64(hello.generation);
  const uint64_t position = htole64(hello.receive_position);
  std::memcpy(at + 16, &generation, 8);
  std::memcpy(at + 24, &position, 8);
  wire::ResumeProof proof{};
  unsigned int length = 0;
  const unsigned char* done = HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), message.data(),
                                   message.size(), reinterpret_cast<unsigned char*>(proof.data()), &length);
  RM_ASSERT(done != nullptr && length == proof.size());
  return proof;
}

bool resume_proof_valid(const ResumeKey& key, const wire::Hello& hello) noexcept {
  if (!hello.has_resume_proof) return false;
  const wire::ResumeProof expected = resume_proof(key, hello);
  return CRYPTO_memcmp(expected.data(), hello.resume_proof.data(), expected.size()) == 0;
}

// ---- accepting side --------------------------------------------------------------------

HelloAnswer answer_hello(const wire::Hello& hello, const KnownSession* known, uint64_t features) noexcept {
  HelloAnswer answer;
  answer.ack.session_id = hello.session_id;
  answer.ack.generation = hello.generation;
  answer.ack.features = hello.features & features;
  answer.ack.version = limits::protocol_version_max;
  auto refuse = [&answer](ReplayError error) {
    answer.verdict = HelloVerdict::refuse;
    answer.error = error;
    answer.ack.status = status_of(error);
    answer.ack.receive_position = 0;
    return answer;
  };

  if (hello.generation == 0) return refuse(ReplayError::handshake_violation);

  // The highest version both sides speak (wire/SPEC.md, "Versions").
  const uint16_t version_low = std::max(hello.version_min, limits::protocol_version_min);
  const uint16_t version_high = std::min(hello.version_max, limits::protocol_version_max);
  if (version_low > version_high) return refuse(ReplayError::version_unsupported);
  answer.ack.version = version_high;

  const bool resume = (hello.hello_flags & wire::hello_flag_resume) != 0;
  if (known == nullptr) {
    if (resume) return refuse(ReplayError::resume_unknown_session);
    // A new session has received nothing: a position here means the peer is confused.
    if (hello.receive_position != 0) return refuse(ReplayError::handshake_violation);
    answer.verdict = HelloVerdict::accept_new;
    answer.ack.status = StatusCode::ok;
    answer.ack.receive_position = 0;
    return answer;
  }

  if (hello.generation <= known->generation) {
    answer.verdict = HelloVerdict::ignore;
    answer.error = ReplayError::superseded_generation;
    return answer;
  }
  const bool proof_needed = resume || known->dialer_confirmed;
  if (known->resume_key != nullptr && proof_needed && !resume_proof_valid(*known->resume_key, hello)) {
    return refuse(ReplayError::resume_unauthenticated);
  }
  if (const ReplayError error = check_resume_position(hello.receive_position, known->held);
      error != ReplayError::none) {
    return refuse(error);
  }
  answer.verdict = HelloVerdict::accept_resume;
  answer.ack.status = StatusCode::ok;
  answer.ack.receive_position = known->receive_position;
  answer.replay_from = hello.receive_position;
  return answer;
}

}  // namespace ringmux::replay
