#include "tools/uring_probe.h"

#include <liburing.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <optional>
#include <string_view>
#include <utility>

#include "tools/errno_text.h"

namespace ringmux::tools {

namespace {

// Entries of each probe ring: the loopback probe has at most two operations in flight.
constexpr unsigned probe_ring_entries = 4;

// The loopback probe's provided buffers: a power of two of small buffers (it sends one
// byte), group 0 of its own ring.
constexpr unsigned probe_buffer_count = 2;
constexpr unsigned probe_buffer_bytes = 64;
constexpr uint16_t probe_buffer_group = 0;

// Completions the loopback probe reads while it waits for one operation's: the other
// operation (the multishot accept stays armed) posts at most a few.
constexpr unsigned probe_completions_max = 8;

// io_uring_setup's feature bit for recv/send bundles (Linux 6.10,
// include/uapi/linux/io_uring.h); Debian's liburing 2.3 headers predate it.
constexpr uint32_t feat_recvsend_bundle = 1u << 14;

constexpr uint64_t accept_user_data = 1;
constexpr uint64_t recv_user_data = 2;

// A descriptor closed on scope exit. Declared before the ring that uses it, so that the
// ring is torn down (its operations cancelled and reaped) before the descriptor closes.
struct Fd {
  int fd = -1;
  Fd() = default;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// A probe ring: io_uring_queue_exit on scope exit cancels what is still armed.
struct ProbeRing {
  io_uring ring{};
  io_uring_params params{};
  bool ready = false;
  ProbeRing() = default;
  ProbeRing(const ProbeRing&) = delete;
  ProbeRing& operator=(const ProbeRing&) = delete;
  ~ProbeRing() {
    if (ready) io_uring_queue_exit(&ring);
  }
  // 0, or the negative errno of io_uring_setup.
  int init(uint32_t flags) {
    params.flags = flags;
    const int rc = io_uring_queue_init_params(probe_ring_entries, &ring, &params);
    ready = rc == 0;
    return rc;
  }
};

// The outcome of `call`, which returned `rc` (>= 0 or a negative errno): the kernel
// answers EINVAL for a flag, opcode or registration it does not know.
void judge(UringFeature& feature, int rc, std::string_view call) {
  if (rc >= 0) {
    feature.presence = Presence::present;
    return;
  }
  feature.presence = rc == -EINVAL ? Presence::absent : Presence::unknown;
  feature.detail = std::string(call) + ": " + errno_text(-rc);
}

void mark_unknown(UringFeature& feature, std::string why) {
  feature.presence = Presence::unknown;
  feature.detail = std::move(why);
}

struct Completion {
  int32_t result = 0;
  uint32_t flags = 0;
};

// Submits what is prepared and waits for the completion tagged `user_data`, for at most
// probe_wait_ns_max; none when it does not come (the reason goes to `why`).
std::optional<Completion> complete(io_uring& ring, uint64_t user_data, std::string& why) {
  const int submitted = io_uring_submit(&ring);
  if (submitted < 0) {
    why = "io_uring_submit: " + errno_text(-submitted);
    return std::nullopt;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::nanoseconds(probe_wait_ns_max);
  for (unsigned seen = 0; seen < probe_completions_max; seen++) {
    const auto left_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - std::chrono::steady_clock::now())
                             .count();
    if (left_ns <= 0) break;
    __kernel_timespec timeout{left_ns / 1'000'000'000, left_ns % 1'000'000'000};
    io_uring_cqe* cqe = nullptr;
    const int rc = io_uring_wait_cqe_timeout(&ring, &cqe, &timeout);
    if (rc == -ETIME) break;
    if (rc == -EINTR) continue;
    if (rc < 0) {
      why = "waiting for a completion: " + errno_text(-rc);
      return std::nullopt;
    }
    const Completion completion{cqe->res, cqe->flags};
    const bool ours = cqe->user_data == user_data;
    io_uring_cqe_seen(&ring, cqe);
    if (ours) return completion;
  }
  why = "no completion within " + std::to_string(probe_wait_ns_max / 1'000'000) + " ms";
  return std::nullopt;
}

// A listening socket on 127.0.0.1 (any port) and a client connected to it: the kernel
// completes the connection from the backlog, before anyone accepts it.
std::string connect_loopback(Fd& listener, Fd& client) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  listener.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener.fd < 0) return "socket: " + errno_text(errno);
  if (::bind(listener.fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    return "bind 127.0.0.1: " + errno_text(errno);
  }
  if (::listen(listener.fd, 1) != 0) return "listen: " + errno_text(errno);
  if (::getsockname(listener.fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    return "getsockname: " + errno_text(errno);
  }
  client.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (client.fd < 0) return "socket: " + errno_text(errno);
  if (::connect(client.fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    return "connect 127.0.0.1: " + errno_text(errno);
  }
  return "";
}

// Provided-buffer ring, multishot accept and multishot receive, as the engine uses them:
// a connection on 127.0.0.1, its accept armed multishot, one byte received multishot into
// a provided buffer. Each counts as present when its completion says the operation stays
// armed (IORING_CQE_F_MORE).
void probe_loopback(UringFeature& buffers, UringFeature& accept, UringFeature& recv) {
  // Declared before the ring: they outlive it (see Fd).
  Fd listener, client, accepted;
  alignas(64) std::array<std::byte, probe_buffer_count * probe_buffer_bytes> buffer_bytes{};
  struct Mapping {
    void* address = MAP_FAILED;
    std::size_t bytes = probe_buffer_count * sizeof(io_uring_buf);
    ~Mapping() {
      if (address != MAP_FAILED) ::munmap(address, bytes);
    }
  } entries;
  ProbeRing ring;

  if (const int rc = ring.init(0); rc < 0) {
    for (UringFeature* feature : {&buffers, &accept, &recv}) mark_unknown(*feature, "io_uring_setup: " + errno_text(-rc));
    return;
  }
  // The ring of io_uring_buf entries must be page aligned: mmap gives that.
  entries.address = ::mmap(nullptr, entries.bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (entries.address == MAP_FAILED) {
    mark_unknown(buffers, "mmap: " + errno_text(errno));
  } else {
    auto* entry_ring = static_cast<io_uring_buf_ring*>(entries.address);
    io_uring_buf_ring_init(entry_ring);
    io_uring_buf_reg registration{};
    registration.ring_addr = reinterpret_cast<uint64_t>(entry_ring);
    registration.ring_entries = probe_buffer_count;
    registration.bgid = probe_buffer_group;
    judge(buffers, io_uring_register_buf_ring(&ring.ring, &registration, 0), "IORING_REGISTER_PBUF_RING");
    const int mask = io_uring_buf_ring_mask(probe_buffer_count);
    for (unsigned id = 0; id < probe_buffer_count; id++) {
      io_uring_buf_ring_add(entry_ring, buffer_bytes.data() + id * probe_buffer_bytes, probe_buffer_bytes,
                            static_cast<unsigned short>(id), mask, static_cast<int>(id));
    }
    io_uring_buf_ring_advance(entry_ring, probe_buffer_count);
  }

  if (std::string error = connect_loopback(listener, client); !error.empty()) {
    mark_unknown(accept, error);
    mark_unknown(recv, error);
    return;
  }
  io_uring_sqe* sqe = io_uring_get_sqe(&ring.ring);
  io_uring_prep_multishot_accept(sqe, listener.fd, nullptr, nullptr, SOCK_CLOEXEC);
  sqe->user_data = accept_user_data;
  std::string why;
  if (const auto done = complete(ring.ring, accept_user_data, why); !done) {
    mark_unknown(accept, why);
  } else if (done->result >= 0) {
    accepted.fd = done->result;
    const bool armed = (done->flags & IORING_CQE_F_MORE) != 0;
    accept.presence = armed ? Presence::present : Presence::absent;
    if (!armed) accept.detail = "the accept completed without IORING_CQE_F_MORE (single shot)";
  } else {
    judge(accept, done->result, "multishot accept");
  }

  if (buffers.presence != Presence::present) {
    mark_unknown(recv, "needs provided buffer rings");
    return;
  }
  // Without a multishot accept, a plain one gives the receive probe its socket.
  if (accepted.fd < 0) accepted.fd = ::accept4(listener.fd, nullptr, nullptr, SOCK_CLOEXEC);
  if (accepted.fd < 0) {
    mark_unknown(recv, "accept: " + errno_text(errno));
    return;
  }
  sqe = io_uring_get_sqe(&ring.ring);
  io_uring_prep_recv_multishot(sqe, accepted.fd, nullptr, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = probe_buffer_group;
  sqe->user_data = recv_user_data;
  const char byte = 'r';
  if (::send(client.fd, &byte, 1, MSG_NOSIGNAL) != 1) {
    mark_unknown(recv, "send: " + errno_text(errno));
    return;
  }
  if (const auto done = complete(ring.ring, recv_user_data, why); !done) {
    mark_unknown(recv, why);
  } else if (done->result == 1) {
    const bool armed = (done->flags & IORING_CQE_F_MORE) != 0 && (done->flags & IORING_CQE_F_BUFFER) != 0;
    recv.presence = armed ? Presence::present : Presence::absent;
    if (!armed) recv.detail = "the receive completed without IORING_CQE_F_MORE (single shot)";
  } else if (done->result >= 0) {
    mark_unknown(recv, "received " + std::to_string(done->result) + " bytes instead of 1");
  } else {
    judge(recv, done->result, "multishot recv");
  }
}

std::string kernel_text() {
  utsname name{};
  if (::uname(&name) != 0) return "unknown (uname: " + errno_text(errno) + ")";
  return std::string(name.sysname) + " " + name.release + " " + name.machine;
}

}  // namespace

UringProbe probe_uring() {
  UringFeature ring_feature{"io_uring", EngineUse::required};
  UringFeature buffers{"provided buffer rings", EngineUse::required};
  UringFeature accept{"multishot accept", EngineUse::required};
  UringFeature recv{"multishot recv", EngineUse::required};
  UringFeature single_issuer{"SINGLE_ISSUER", EngineUse::when_present};
  UringFeature defer_taskrun{"DEFER_TASKRUN", EngineUse::when_present};
  UringFeature coop_taskrun{"COOP_TASKRUN", EngineUse::when_present};
  UringFeature registered_fd{"registered ring fd", EngineUse::when_present};
  UringFeature send_zc{"SEND_ZC", EngineUse::unused};
  UringFeature bundles{"recv/send bundles", EngineUse::unused};
  const auto result = [&] {
    return UringProbe{kernel_text(),
                      {ring_feature, buffers, accept, recv, single_issuer, defer_taskrun, coop_taskrun, registered_fd,
                       send_zc, bundles}};
  };

  ProbeRing ring;
  if (const int rc = ring.init(0); rc < 0) {
    // ENOSYS: no io_uring in this kernel; EPERM: disabled (sysctl kernel.io_uring_disabled)
    // or filtered (seccomp, as in many containers).
    ring_feature.presence = rc == -ENOSYS || rc == -EPERM ? Presence::absent : Presence::unknown;
    ring_feature.detail = "io_uring_setup: " + errno_text(-rc);
    for (UringFeature* feature : {&buffers, &accept, &recv, &single_issuer, &defer_taskrun, &coop_taskrun,
                                  &registered_fd, &send_zc, &bundles}) {
      mark_unknown(*feature, "no io_uring to probe with");
    }
    return result();
  }
  ring_feature.presence = Presence::present;

  // The set-ups the engine tries (engine/loop.cpp), each on a ring of its own.
  struct Setup {
    UringFeature* feature;
    uint32_t flags;
    std::string_view call;
  };
  const Setup setups[] = {
      {&single_issuer, IORING_SETUP_SINGLE_ISSUER, "io_uring_setup(SINGLE_ISSUER)"},
      {&defer_taskrun, IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
       "io_uring_setup(SINGLE_ISSUER | DEFER_TASKRUN)"},
      {&coop_taskrun, IORING_SETUP_COOP_TASKRUN, "io_uring_setup(COOP_TASKRUN)"},
  };
  for (const Setup& setup : setups) {
    ProbeRing flagged;
    judge(*setup.feature, flagged.init(setup.flags), setup.call);
  }
  judge(registered_fd, io_uring_register_ring_fd(&ring.ring), "IORING_REGISTER_RING_FDS");

  if (io_uring_probe* opcodes = io_uring_get_probe_ring(&ring.ring)) {
    const bool supported = io_uring_opcode_supported(opcodes, IORING_OP_SEND_ZC) != 0;
    send_zc.presence = supported ? Presence::present : Presence::absent;
    if (!supported) send_zc.detail = "opcode not in IORING_REGISTER_PROBE";
    io_uring_free_probe(opcodes);
  } else {
    mark_unknown(send_zc, "IORING_REGISTER_PROBE failed");
  }
  const bool bundled = (ring.params.features & feat_recvsend_bundle) != 0;
  bundles.presence = bundled ? Presence::present : Presence::absent;
  if (!bundled) bundles.detail = "io_uring_setup reports no IORING_FEAT_RECVSEND_BUNDLE";

  probe_loopback(buffers, accept, recv);
  return result();
}

std::string_view presence_name(Presence presence) noexcept {
  switch (presence) {
    case Presence::present: return "present";
    case Presence::absent: return "absent";
    case Presence::unknown: return "unknown";
  }
  return "?";
}

std::string_view engine_use_name(EngineUse use) noexcept {
  switch (use) {
    case EngineUse::required: return "required by the engine";
    case EngineUse::when_present: return "used by the engine when present";
    case EngineUse::unused: return "not used by this version";
  }
  return "?";
}

}  // namespace ringmux::tools
