// The resume simulation's transports and dialer (sim.h): engine::Socket's and
// engine::Connector's contracts on the simulated network.
#include "tests/mux/link/sim/sim.h"

namespace ringmux::mux::sim {

// ---- SimTransport ----------------------------------------------------------------------------

SimTransport::SimTransport(Sim& sim, uint32_t tcp, int side) : sim_(sim), tcp_(tcp), side_(side) {
  RM_ASSERT(sim_.tcp(tcp).end[side] == nullptr);  // one transport per end
  sim_.tcp(tcp).end[side] = this;
}

SimTransport::~SimTransport() {
  // A transport is destroyed closed (Transport's contract), or never started: then its
  // socket closes now (a redial that arrived after its connection ended, a HELLO refused).
  RM_ASSERT(closed_ || handler_ == nullptr);
  if (handler_ == nullptr) sim_.close(tcp_, side_);
  sim_.tcp(tcp_).end[side_] = nullptr;
}

void SimTransport::start(TransportHandler& handler) noexcept {
  RM_ASSERT(handler_ == nullptr);
  handler_ = &handler;
}

void SimTransport::send(std::span<const std::byte> first, std::span<const std::byte> second,
                        std::span<const std::byte> third) noexcept {
  RM_ASSERT(usable() && !sending_);  // engine::Socket asserts the same
  RM_ASSERT(!first.empty() || !second.empty() || !third.empty());
  sending_ = true;
  for (std::span<const std::byte> part : {first, second, third}) {
    if (!part.empty()) sim_.send(tcp_, side_, part);
  }
  sim_.schedule(EventKind::send_complete, side_, sim_.random().below(sim_.plan().latency_ns + 1), tcp_);
}

void SimTransport::send_last(std::span<const std::byte> bytes) noexcept {
  if (!usable() || sending_) return;
  sim_.send(tcp_, side_, bytes);
  sim_.shutdown(tcp_, side_);
}

void SimTransport::close() noexcept {
  if (closing_) return;
  closing_ = true;
  sending_ = false;  // a send in flight is cancelled: it never reports
  sim_.close(tcp_, side_);  // socket_closed follows
}

void SimTransport::on_send_complete() {
  if (!sending_ || failed_ || closing_) return;
  sending_ = false;
  handler_->on_transport_sent();
}

void SimTransport::on_error(engine::IoError error) {
  if (handler_ == nullptr || failed_ || closing_) return;
  failed_ = true;  // once; the link closes it
  handler_->on_transport_error(error);
}

void SimTransport::on_closed() {
  RM_ASSERT(closing_ && !closed_);
  closed_ = true;
  if (handler_ != nullptr) handler_->on_transport_closed();  // may destroy this transport
}

void SimTransport::on_bytes(std::span<const std::byte> bytes) {
  if (handler_ == nullptr || failed_ || closing_) return;
  handler_->on_transport_recv(bytes);
}

// ---- SimDialer -------------------------------------------------------------------------------

void SimDialer::dial(DialHandler& handler) noexcept {
  RM_ASSERT(handler_ == nullptr);
  handler_ = &handler;
  sim_.connect();
}

void SimDialer::on_connect_done() {
  RM_ASSERT(handler_ != nullptr);
  DialHandler& handler = *std::exchange(handler_, nullptr);
  const uint32_t tcp = sim_.connect_result();
  if (tcp == no_tcp) {
    handler.on_dialed(Err{engine::IoError::refused});
    return;
  }
  handler.on_dialed(std::unique_ptr<Transport>(std::make_unique<SimTransport>(sim_, tcp, dialer)));
}

}  // namespace ringmux::mux::sim
