// TLS 1.3 as a handshake stage of the link (mux/link/transport.h): mutual authentication by
// certificate, over any Transport, with OpenSSL 3 reading and writing through a BIO of its
// own (no socket, no memory BIO to copy through).
//
// The socket below is still engine::Socket on io_uring: ciphertext arrives in the loop's
// provided buffers and goes out by the same gather send; OpenSSL never touches the fd. A
// TlsTransport lets OpenSSL read what it receives straight from the receive's buffer, runs
// the handshake, decrypts records and hands the session plaintext only once the handshake is
// complete and the peer's certificate was accepted. A send (one writer batch) is encrypted
// whole, in full records, into the next send's buffer and leaves as one send of the
// transport below: one record sequence per batch, and the session's on_transport_sent only
// when all of its ciphertext was handed to the socket (the socket's back-pressure reaches
// the writer unchanged).
//
// Policy: TLS 1.3 only (no renegotiation exists in it), the peer must present a certificate
// of the configured CA on both sides (a server's `ca_file` requires client certificates),
// optionally with one of `peer_names` (DNS name or IP address in its SANs). A failure of the
// handshake ends the transport with IoError::handshake_failed; the cause (OpenSSL's reason,
// the verification result, the peer's alert) goes to the log hook and to failure_text().
// After the handshake the peer's KeyUpdates are budgeted (limits::tls_key_updates_free, one
// more per limits::tls_key_update_received_bytes received): over it the transport fails the
// same way, failure_text() naming the flood.
//
// kTLS: where the kernel has the `tls` ULP (tls_kernel_offload_available() probes it) and
// `kernel_offload` is on, the record layer moves into the kernel once the handshake is done:
// the TCP socket stays on io_uring, its sends and receives now carry plaintext, and the
// kernel seals and opens the records (AES-GCM or ChaCha20-Poly1305, the keys derived from
// the handshake's traffic secrets). The hand-over waits for a record boundary: receiving
// pauses until every byte taken from the socket was read by OpenSSL, and the session's first
// send waits for it. Where the kernel refuses (no module, a cipher it lacks), the transport
// stays in user space; record_layer() and the log's line per connection say which is used.
// In the kernel, a record that is not application data (the peer's KeyUpdate, an alert)
// fails the receive and so the transport: the session resumes on a new connection.
//
// Moving (Transport::release, a per-core server's hand-over): once its receive is stopped and
// nothing of it is leaving, a TlsTransport gives up its OpenSSL object (with a partial
// record OpenSSL buffered), its peer's identity and its record layer; a transport on another
// loop adopts them, open, on the same socket's fd. With the record layer in the kernel only
// the fd carries records; the OpenSSL object still serves the exporter and the identity.
//
// Threads: a TlsContext is immutable once created and may be shared by loops; a TlsTransport
// lives on its connection's loop like every Transport. A released one's OpenSSL object
// crosses to the adopting loop inside a posted task (the post is the happens-before between
// the two threads' uses; OpenSSL allows an SSL object on any thread, one at a time).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ringmux/mux/link/transport.h"

struct ssl_ctx_st;

namespace ringmux::mux {

struct TlsOptions {
  std::string cert_file;  // our certificate chain, PEM
  std::string key_file;   // its private key, PEM
  std::string ca_file;    // the CA(s) a peer's certificate must chain to, PEM
  // Names the peer's certificate must carry (one of them, as a DNS or IP SAN); empty: any
  // certificate of the CA.
  std::vector<std::string> peer_names;
  // Move the record layer into the kernel after the handshake where the kernel has kTLS.
  bool kernel_offload = true;
};

class TlsContext {
 public:
  // Loads the certificate, key and CA; nullptr and `error` (naming the file and OpenSSL's
  // reason) when it cannot. One context serves both roles: a node dials and accepts with
  // the same identity.
  static std::shared_ptr<const TlsContext> create(const TlsOptions& options, std::string& error);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  ssl_ctx_st* native() const noexcept { return ctx_; }
  const std::vector<std::string>& peer_names() const noexcept { return peer_names_; }
  bool kernel_offload() const noexcept { return kernel_offload_; }

 private:
  TlsContext(ssl_ctx_st* ctx, std::vector<std::string> peer_names, bool kernel_offload) noexcept
      : ctx_(ctx), peer_names_(std::move(peer_names)), kernel_offload_(kernel_offload) {}

  ssl_ctx_st* ctx_;
  std::vector<std::string> peer_names_;
  bool kernel_offload_;
};

// Wraps `raw` (not started): the returned transport runs the TLS handshake, as the client
// when `dialer`, before the session sees a byte.
std::unique_ptr<Transport> make_tls_transport(engine::Loop& loop, std::shared_ptr<const TlsContext> context,
                                              std::unique_ptr<Transport> raw, bool dialer);

// The TLS handshake stage: wraps every transport it is given in make_tls_transport.
std::unique_ptr<Handshake> make_tls_handshake(std::shared_ptr<const TlsContext> context);

// Whether the kernel accepts the `tls` ULP on a TCP socket (kTLS). Probed once.
bool tls_kernel_offload_available() noexcept;

}  // namespace ringmux::mux
