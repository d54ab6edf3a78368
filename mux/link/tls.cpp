// TLS 1.3 over a Transport, OpenSSL reading and writing through the transport's own BIO
// (mux/link/tls.h).
#include "ringmux/mux/link/tls.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "ringmux/base/assert.h"
#include "ringmux/base/limits.h"
#include "ringmux/base/log.h"
#include "ringmux/engine/loop.h"
#include "ringmux/engine/timer.h"

namespace ringmux::mux {

namespace {

// OpenSSL's queued errors of this thread as one line (and the queue emptied).
std::string take_openssl_errors() {
  std::string text;
  while (const unsigned long code = ERR_get_error()) {
    std::array<char, 256> line{};
    ERR_error_string_n(code, line.data(), line.size());
    if (!text.empty()) text += "; ";
    text += line.data();
  }
  return text.empty() ? std::string("no reason given by OpenSSL") : text;
}

std::string file_error(const char* what, const std::string& path) {
  return std::string(what) + " '" + path + "': " + take_openssl_errors();
}

std::string hex(std::span<const unsigned char> bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string text;
  text.reserve(bytes.size() * 2);
  for (const unsigned char b : bytes) {
    text += digits[b >> 4];
    text += digits[b & 15];
  }
  return text;
}

// Counts the TLS records in a byte stream (5-byte headers, each followed by its body) and
// says whether the stream ends between records: what the kTLS hand-over needs to know of
// the ciphertext OpenSSL consumed and produced, without relying on OpenSSL's internals.
class RecordCounter {
 public:
  void feed(std::span<const std::byte> bytes) noexcept {
    while (!bytes.empty()) {
      if (body_left_ > 0) {
        const std::size_t take = std::min<std::size_t>(body_left_, bytes.size());
        body_left_ -= static_cast<uint32_t>(take);
        bytes = bytes.subspan(take);
        if (body_left_ == 0) records_++;
        continue;
      }
      header_[header_have_++] = static_cast<uint8_t>(bytes.front());
      bytes = bytes.subspan(1);
      if (header_have_ < header_.size()) continue;
      header_have_ = 0;
      body_left_ = static_cast<uint32_t>(header_[3]) << 8 | header_[4];
      if (body_left_ == 0) records_++;
    }
  }
  uint64_t records() const noexcept { return records_; }
  bool at_boundary() const noexcept { return header_have_ == 0 && body_left_ == 0; }

 private:
  std::array<uint8_t, 5> header_{};  // type, version (2), length (2)
  std::size_t header_have_ = 0;
  uint32_t body_left_ = 0;
  uint64_t records_ = 0;
};

// HKDF-Expand-Label of TLS 1.3 (RFC 8446, 7.1) with an empty context: `out` from `secret`.
bool hkdf_expand_label(const EVP_MD* digest, std::span<const unsigned char> secret, std::string_view label,
                       std::span<std::byte> out) noexcept {
  static EVP_KDF* const hkdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  constexpr std::string_view prefix = "tls13 ";
  std::array<unsigned char, 2 + 1 + 32 + 1> info{};  // length, label<7..255>, context<0..255>
  if (hkdf == nullptr || prefix.size() + label.size() > 32) return false;
  std::size_t n = 0;
  info[n++] = static_cast<unsigned char>(out.size() >> 8);
  info[n++] = static_cast<unsigned char>(out.size());
  info[n++] = static_cast<unsigned char>(prefix.size() + label.size());
  for (const char c : prefix) info[n++] = static_cast<unsigned char>(c);
  for (const char c : label) info[n++] = static_cast<unsigned char>(c);
  info[n++] = 0;  // no context
  EVP_KDF_CTX* ctx = EVP_KDF_CTX_new(hkdf);
  if (ctx == nullptr) return false;
  int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, const_cast<char*>(EVP_MD_get0_name(digest)), 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<unsigned char*>(secret.data()), secret.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), n),
      OSSL_PARAM_construct_end(),
  };
  const bool ok = EVP_KDF_derive(ctx, reinterpret_cast<unsigned char*>(out.data()), out.size(), params) == 1;
  EVP_KDF_CTX_free(ctx);
  return ok;
}

// The record keys of one direction from its application traffic secret (RFC 8446, 7.3),
// for the connection's cipher suite; false for a suite the kernel cannot take.
bool derive_kernel_keys(const SSL* ssl, std::span<const unsigned char> secret, uint64_t sequence,
                        KernelTlsKeys& keys) noexcept {
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl);
  if (cipher == nullptr || secret.empty()) return false;
  switch (SSL_CIPHER_get_id(cipher)) {
    case TLS1_3_CK_AES_128_GCM_SHA256:
      keys.cipher = KernelTlsKeys::Cipher::aes_128_gcm;
      break;
    case TLS1_3_CK_AES_256_GCM_SHA384:
      keys.cipher = KernelTlsKeys::Cipher::aes_256_gcm;
      break;
    case TLS1_3_CK_CHACHA20_POLY1305_SHA256:
      keys.cipher = KernelTlsKeys::Cipher::chacha20_poly1305;
      break;
    default:
      return false;
  }
  const EVP_MD* digest = SSL_CIPHER_get_handshake_digest(cipher);
  keys.sequence = sequence;
  return digest != nullptr && hkdf_expand_label(digest, secret, "key", std::span(keys.key).first(keys.key_bytes())) &&
         hkdf_expand_label(digest, secret, "iv", keys.iv);
}

// The label of the exported keying material that TlsTransport::export_secret prefixes: a
// secret exported for the session can never equal one another protocol derives.
constexpr std::string_view exporter_prefix = "EXPORTER-ringmux-";

class TlsTransport final : public Transport, private TransportHandler {
  friend class ringmux::mux::TlsContext;  // installs on_keylog

 public:
  TlsTransport(engine::Loop& loop, std::shared_ptr<const TlsContext> context, std::unique_ptr<Transport> raw,
               bool dialer) noexcept
      : loop_(loop), context_(std::move(context)), raw_(std::move(raw)), dialer_(dialer) {
    timer_.set_callback(&TlsTransport::on_handshake_timeout, this);
  }
  ~TlsTransport() override {
    loop_.timer_cancel(timer_);
    loop_.cancel_deferred(closed_notice_);
    if (ssl_ != nullptr) SSL_free(ssl_);  // frees both BIOs
    forget_secrets();
  }

  void start(TransportHandler& handler) noexcept override {
    const bool started = handler_ != nullptr;
    handler_ = &handler;
    if (started) return;  // taken over: the handshake ran (or runs) already
    if (state_ == State::open) {  // adopted from another loop, where the handshake ran
      raw_->start(*this);
      return;
    }
    state_ = State::handshaking;
    if (!make_ssl()) {
      // OpenSSL out of memory: reported like a failed handshake, from the timer, so that no
      // error is reported inside start().
      setup_failure_ = "cannot set up the TLS connection: " + take_openssl_errors();
      loop_.timer_start(timer_, 0);
      raw_->start(*this);
      return;
    }
    loop_.timer_start(timer_, limits::handshake_timeout_ns);
    raw_->start(*this);
    if (dialer_) advance_handshake();  // the ClientHello: into the write BIO, sent below
  }

  void send(std::span<const std::byte> first, std::span<const std::byte> second,
            std::span<const std::byte> third) noexcept override {
    RM_ASSERT(!app_send_active_);
    app_send_active_ = true;
    if (state_ == State::handshaking || offload_pending_) {
      held_ = {first, second, third};  // they stay valid until on_transport_sent
      holding_ = true;
      return;
    }
    if (state_ != State::open) return;  // failed: on_transport_error was reported
    send_app({first, second, third});
  }
  bool send_in_flight() const noexcept override { return app_send_active_; }
  bool usable() const noexcept override {
    return handler_ != nullptr && (state_ == State::handshaking || state_ == State::open) && raw_->usable();
  }
  void send_last(std::span<const std::byte> bytes) noexcept override {
    if (state_ != State::open || app_send_active_ || raw_->send_in_flight()) return;
    if (layer_ == RecordLayer::kernel) {  // the kernel seals them (no close_notify from it)
      raw_->send_last(bytes);
      return;
    }
    std::size_t written = 0;
    if (!bytes.empty()) (void)SSL_write_ex(ssl_, bytes.data(), bytes.size(), &written);
    (void)SSL_shutdown(ssl_);  // close_notify after the last words
    take_encrypted();
    raw_->send_last(sending_);
  }
  void close() noexcept override {
    forget_secrets();
    loop_.timer_cancel(timer_);
    if (state_ != State::closed) state_ = State::closing;
    raw_->close();
  }

  std::string peer_identity() const override { return state_ == State::open ? identity_ : std::string(); }
  bool export_secret(std::string_view label, std::span<std::byte> out) const noexcept override {
    if (state_ != State::open) return false;
    std::string full(exporter_prefix);
    full += label;
    return SSL_export_keying_material(ssl_, reinterpret_cast<unsigned char*>(out.data()), out.size(), full.data(),
                                      full.size(), nullptr, 0, 0) == 1;
  }
  std::string failure_text() const override { return failure_; }
  bool authenticates_bytes() const noexcept override { return true; }
  RecordLayer record_layer() const noexcept override { return layer_; }

  // ---- moving to another loop ----
  // The handler's pause (the acceptor's, before a hand-over): reported once receiving has
  // stopped, OpenSSL has read and delivered every byte taken from the socket and nothing
  // of ours is leaving (a handshake flight; a kTLS hand-over under way finishes first).
  void pause_recv() noexcept override {
    if (stop_wanted_) return;
    stop_wanted_ = true;
    if (recv_stopped_) return report_stopped();  // stopped for the kTLS hand-over already
    raw_->pause_recv();
  }
  void resume_recv() noexcept override {
    if (!stop_wanted_) return;
    stop_wanted_ = false;
    stop_reported_ = false;
    if (offload_pending_) return;  // try_offload resumes receiving
    recv_stopped_ = false;
    raw_->resume_recv();
  }
  bool can_release() const noexcept override { return raw_->can_release(); }
  std::unique_ptr<ReleasedTransport> release() noexcept override;
  // What a released transport knew of its connection besides the OpenSSL object.
  struct Carried {
    std::string identity;
    RecordLayer layer = RecordLayer::user_space;
    uint64_t received_bytes = 0;
    uint64_t key_updates_received = 0;
    bool records_received = false;
  };
  // Makes this (unstarted) transport the one a release() gave up on another loop: open,
  // with the OpenSSL object `ssl` and what `carried` says; the BIO and OpenSSL's callbacks
  // are pointed at this object.
  void adopt(SSL* ssl, const Carried& carried) noexcept {
    RM_ASSERT(state_ == State::idle && ssl_ == nullptr);
    ssl_ = ssl;
    BIO_set_data(SSL_get_rbio(ssl_), this);  // one BIO both ways (make_ssl)
    SSL_set_msg_callback_arg(ssl_, this);
    SSL_set_app_data(ssl_, this);
    state_ = State::open;
    identity_ = carried.identity;
    layer_ = carried.layer;
    received_bytes_ = carried.received_bytes;
    key_updates_received_ = carried.key_updates_received;
    records_received_ = carried.records_received;
  }

 private:
  enum class State : uint8_t { idle, handshaking, open, failed, closing, closed };

  bool make_ssl() noexcept {
    ssl_ = SSL_new(context_->native());
    if (ssl_ == nullptr) return false;
    const BIO_METHOD* method = transport_bio_method();
    BIO* bio = method != nullptr ? BIO_new(method) : nullptr;
    if (bio == nullptr) return false;
    BIO_set_data(bio, this);
    BIO_set_init(bio, 1);
    SSL_set_bio(ssl_, bio, bio);  // one BIO both ways: ssl_ holds one reference
    SSL_set_msg_callback(ssl_, &TlsTransport::on_tls_message);
    SSL_set_msg_callback_arg(ssl_, this);
    SSL_set_app_data(ssl_, this);  // for on_keylog
    counting_ = context_->kernel_offload() && raw_->kernel_tls_capable();
    // The hand-over counts the records OpenSSL pulled through the BIO as the records it
    // processed: true only while it reads no further ahead than it needs (the default).
    RM_ASSERT(SSL_get_read_ahead(ssl_) == 0);
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    for (const std::string& name : context_->peer_names()) {
      if (X509_VERIFY_PARAM_add1_host(param, name.c_str(), name.size()) != 1) return false;
    }
    if (dialer_) {
      SSL_set_connect_state(ssl_);
    } else {
      SSL_set_accept_state(ssl_);
    }
    return true;
  }

  // ---- from the transport below ----

  void on_transport_recv(std::span<const std::byte> bytes) noexcept override {
    if ((state_ != State::handshaking && state_ != State::open) || ssl_ == nullptr) return;
    received_bytes_ += bytes.size();
    if (layer_ != RecordLayer::user_space) {  // the kernel opened the records
      records_received_ = true;
      handler_->on_transport_recv(bytes);
      return report_stopped();
    }
    // OpenSSL reads the bytes straight from here (bio_read) until it wants more: a record
    // cut by the end of the receive waits in OpenSSL's read buffer for the next one.
    input_ = bytes;
    receiving_ = true;
    if (state_ != State::handshaking || advance_handshake()) read_records();
    receiving_ = false;
    input_ = {};  // lent for this call only; what a failure left unread is dropped
    try_offload();
    report_stopped();
  }
  void on_transport_sent() noexcept override {
    const bool app_done = sending_app_;
    sending_app_ = false;
    flush();
    if (app_done && state_ == State::open) {
      app_send_active_ = false;
      handler_->on_transport_sent();
    }
    try_offload();
    report_stopped();
  }
  void on_transport_recv_stopped() noexcept override {
    recv_stopped_ = true;
    try_offload();
    report_stopped();
  }
  // The handler's pause is complete (pause_recv): it hears so once.
  void report_stopped() noexcept {
    if (!stop_wanted_ || stop_reported_ || !recv_stopped_ || receiving_ || offload_pending_) return;
    if (state_ != State::open || raw_->send_in_flight() || !encrypted_.empty()) return;  // on_transport_sent comes back
    stop_reported_ = true;
    handler_->on_transport_recv_stopped();
  }
  void on_transport_error(engine::IoError error) noexcept override {
    if (state_ != State::handshaking && state_ != State::open) return;  // ours was reported
    forget_secrets();
    if (state_ == State::handshaking) {
      // The peer gave up on the handshake: it refused our certificate or does not speak TLS.
      fail(std::string("the peer ended the connection during the TLS handshake (") + engine::describe(error) +
           "): it refused our certificate, or it does not speak TLS");
      return;
    }
    if (layer_ != RecordLayer::user_space && error == engine::IoError::other) {
      // The kernel fails a receive (EIO, EBADMSG) on a record that is not application data
      // or does not authenticate; it cannot say which. First thing after a TLS 1.3
      // handshake that is the server's alert refusing our certificate, which OpenSSL would
      // have named.
      if (!records_received_) {
        fail("TLS connection ended by a record that is not data before the first one (the kernel's record layer "
             "reads no alerts): the peer refused it after the handshake with an alert, likely our certificate, or "
             "sent a KeyUpdate");
        return;
      }
      RM_LOG(LogSeverity::warning, LogSubsystem::link, 0, 0, 0,
             "TLS %s: the kernel's record layer failed a receive: the peer sent an alert, a KeyUpdate or a "
             "close_notify (kTLS reads none of them), or a damaged record",
             dialer_ ? "client" : "server");
    }
    state_ = State::failed;
    handler_->on_transport_error(error);
  }
  void on_transport_closed() noexcept override {
    state_ = State::closed;
    // On the next turn: the session destroys its transport when it hears this, and this
    // may run inside our own calls into it (an error it answers with close()).
    if (handler_ != nullptr) loop_.defer(closed_notice_);
  }
  static void on_closed_turn(engine::Deferred& deferred) noexcept {
    auto& self = *static_cast<TlsTransport*>(deferred.context());
    self.handler_->on_transport_closed();
  }

  // ---- the TLS state machine ----

  // Runs the handshake as far as the received bytes allow; true once it is complete.
  bool advance_handshake() noexcept {
    const int rc = SSL_do_handshake(ssl_);
    if (rc == 1) {
      loop_.timer_cancel(timer_);
      state_ = State::open;
      identity_ = certificate_fingerprint();
      RM_LOG(LogSeverity::info, LogSubsystem::link, 0, 0, 0, "TLS %s: %s %s, peer %s", dialer_ ? "client" : "server",
             SSL_get_version(ssl_), SSL_get_cipher_name(ssl_), identity_.c_str());
      if (counting_) {
        // The kTLS hand-over: stop receiving, let OpenSSL read what was taken from the
        // socket and the client's last flight leave; try_offload then installs the keys.
        records_read_at_open_ = read_records_.records();
        records_written_at_open_ = written_records_.records();
        offload_pending_ = true;
        flush();
        raw_->pause_recv();
      } else {
        release_held();  // in the same send as the client's last flight
        flush();
      }
      return state_ == State::open;
    }
    if (SSL_get_error(ssl_, rc) == SSL_ERROR_WANT_READ) {
      flush();
      return false;
    }
    fail(ssl_failure(peer_alerted() ? "TLS handshake refused by the peer" : "TLS handshake failed"));
    return false;
  }

  // The session's send held during the handshake (and the hand-over) goes now.
  void release_held() noexcept {
    if (!holding_ || state_ != State::open) return;
    holding_ = false;
    send_app(held_);
  }

  void send_app(const std::array<std::span<const std::byte>, 3>& parts) noexcept {
    if (layer_ == RecordLayer::kernel) {
      sending_app_ = true;
      raw_->send(parts[0], parts[1], parts[2]);
      return;
    }
    encrypt(parts);
  }

  // Installs the kernel's record layer once receiving has stopped, OpenSSL has read every
  // byte taken from the socket and nothing of ours is leaving; either way the transport
  // then receives again and the held send goes.
  void try_offload() noexcept {
    if (!offload_pending_ || !recv_stopped_ || receiving_ || state_ != State::open) return;
    if (raw_->send_in_flight() || !encrypted_.empty()) return;  // on_transport_sent comes back here
    offload_pending_ = false;
    counting_ = false;
    const std::string refused = install_kernel_record_layer();
    forget_secrets();
    if (refused.empty()) {
      // OpenSSL seals and opens nothing more: its record buffers (~34 KiB) can go. The SSL
      // stays for the exporter (the resume's proof) and the peer's identity.
      (void)SSL_free_buffers(ssl_);
      RM_LOG(LogSeverity::info, LogSubsystem::link, 0, 0, 0, "TLS %s: record layer in the kernel (kTLS)",
             dialer_ ? "client" : "server");
    } else {
      RM_LOG(LogSeverity::info, LogSubsystem::link, 0, 0, 0, "TLS %s: record layer: %s (%s)",
             dialer_ ? "client" : "server", describe(layer_), refused.c_str());
    }
    if (!stop_wanted_) {  // else receiving stays stopped for the handler (report_stopped)
      recv_stopped_ = false;
      raw_->resume_recv();
    }
    release_held();
  }

  // Empty when both directions moved into the kernel, else why not (layer_ says how far).
  std::string install_kernel_record_layer() noexcept {
    if (key_updates_received_ > 0) return "the peer updated its keys before the hand-over";
    if (!read_records_.at_boundary() || SSL_has_pending(ssl_) == 1) return "a received record was cut";
    if (client_secret_bytes_ == 0 || server_secret_bytes_ == 0) return "no traffic secrets";
    const std::span<const unsigned char> client_secret(client_secret_.data(), client_secret_bytes_);
    const std::span<const unsigned char> server_secret(server_secret_.data(), server_secret_bytes_);
    KernelTlsKeys receive, transmit;
    const bool derived =
        derive_kernel_keys(ssl_, dialer_ ? server_secret : client_secret,
                           read_records_.records() - records_read_at_open_, receive) &&
        derive_kernel_keys(ssl_, dialer_ ? client_secret : server_secret,
                           written_records_.records() - records_written_at_open_, transmit);
    std::string refused;
    if (!derived) {
      refused = std::string("no kernel keys for ") + SSL_get_cipher_name(ssl_);
    } else if (const int error = raw_->install_kernel_tls(false, receive); error != 0) {
      refused = std::string("the kernel refused the receive keys: ") + std::strerror(error);
    } else {
      layer_ = RecordLayer::kernel_rx;
      if (const int tx_error = raw_->install_kernel_tls(true, transmit); tx_error != 0) {
        refused = std::string("the kernel refused the transmit keys: ") + std::strerror(tx_error);
      } else {
        layer_ = RecordLayer::kernel;
      }
    }
    OPENSSL_cleanse(&receive, sizeof(receive));
    OPENSSL_cleanse(&transmit, sizeof(transmit));
    return refused;
  }

  void forget_secrets() noexcept {
    OPENSSL_cleanse(client_secret_.data(), client_secret_.size());
    OPENSSL_cleanse(server_secret_.data(), server_secret_.size());
    client_secret_bytes_ = server_secret_bytes_ = 0;
  }

  // OpenSSL's key log, one line per secret ("LABEL <client random> <secret>", hex): the
  // application traffic secrets are kept for the hand-over, nothing else.
  static void on_keylog(const SSL* ssl, const char* line) noexcept {
    auto* self = static_cast<TlsTransport*>(SSL_get_app_data(ssl));
    if (self == nullptr || !self->counting_) return;
    const std::string_view text(line);
    const std::size_t label_end = text.find(' ');
    const std::size_t random_end = label_end == std::string_view::npos ? label_end : text.find(' ', label_end + 1);
    if (random_end == std::string_view::npos) return;
    const std::string_view label = text.substr(0, label_end);
    const std::string_view secret = text.substr(random_end + 1);
    if (label == "CLIENT_TRAFFIC_SECRET_0") {
      self->client_secret_bytes_ = from_hex(secret, self->client_secret_);
    } else if (label == "SERVER_TRAFFIC_SECRET_0") {
      self->server_secret_bytes_ = from_hex(secret, self->server_secret_);
    }
  }
  // `text` (hex) into `out`: the byte count, 0 if it is not hex or does not fit.
  static std::size_t from_hex(std::string_view text, std::array<unsigned char, EVP_MAX_MD_SIZE>& out) noexcept {
    auto nibble = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    if (text.size() % 2 != 0 || text.size() / 2 > out.size()) return 0;
    for (std::size_t i = 0; i < text.size() / 2; i++) {
      const int high = nibble(text[2 * i]);
      const int low = nibble(text[2 * i + 1]);
      if (high < 0 || low < 0) return 0;
      out[i] = static_cast<unsigned char>(high << 4 | low);
    }
    return text.size() / 2;
  }

  // Whether OpenSSL's first queued error is an alert the peer sent (its refusal), not one
  // of ours.
  static bool peer_alerted() noexcept {
    const unsigned long first = ERR_peek_error();
    return ERR_GET_LIB(first) == ERR_LIB_SSL && ERR_GET_REASON(first) >= SSL_AD_REASON_OFFSET;
  }

  void read_records() noexcept {
    // One record's plaintext at a time, lent to the session for the call. Shared by the
    // loop's TLS transports: a delivery never starts another one on this thread.
    thread_local std::array<std::byte, limits::tls_record_plaintext_bytes> plain;
    while (state_ == State::open) {
      std::size_t n = 0;
      const int rc = SSL_read_ex(ssl_, plain.data(), plain.size(), &n);
      if (key_updates_over_) {
        fail(key_update_failure());
        return;
      }
      if (rc == 1) {
        records_received_ = true;
        handler_->on_transport_recv({plain.data(), n});
        continue;
      }
      const int error = SSL_get_error(ssl_, rc);
      if (error == SSL_ERROR_WANT_READ) break;
      if (error == SSL_ERROR_ZERO_RETURN) {  // the peer's close_notify: closed in order
        state_ = State::failed;
        handler_->on_transport_error(engine::IoError::closed);
        return;
      }
      // TLS 1.3: a client's handshake is complete before the server has checked the
      // client's certificate, so the server's refusal arrives as an alert, first thing.
      const bool refused = !records_received_ && peer_alerted();
      fail(ssl_failure(refused ? "TLS handshake refused by the peer (it did not accept our certificate)"
                               : "TLS record layer failed"));
      return;
    }
    flush();  // what reading produced: a KeyUpdate's answer, an alert
  }

  // Encrypts the parts as one record sequence: every record full (tls_record_plaintext_bytes)
  // but the last, whatever the part boundaries. A part boundary inside a record costs a
  // copy of at most one record's plaintext into `staged`; a whole record of a part is
  // encrypted in place. A batch of small frames (a W1 call: the link's frames and the held
  // ones) is one record, not one per part: one encryption here, one decryption and one
  // delivery on the peer.
  void encrypt(const std::array<std::span<const std::byte>, 3>& parts) noexcept {
    // Shared by the loop's TLS transports: emptied before encrypt returns.
    thread_local std::array<std::byte, limits::tls_record_plaintext_bytes> staged;
    constexpr std::size_t record_bytes = limits::tls_record_plaintext_bytes;
    std::size_t staged_bytes = 0;
    for (std::span<const std::byte> part : parts) {
      while (!part.empty()) {
        if (staged_bytes == 0 && part.size() >= record_bytes) {
          const std::size_t whole = part.size() - part.size() % record_bytes;
          if (!write_plaintext(part.first(whole))) return;
          part = part.subspan(whole);
          continue;
        }
        const std::size_t take = std::min(record_bytes - staged_bytes, part.size());
        std::memcpy(staged.data() + staged_bytes, part.data(), take);
        staged_bytes += take;
        part = part.subspan(take);
        if (staged_bytes == record_bytes) {
          if (!write_plaintext(staged)) return;
          staged_bytes = 0;
        }
      }
    }
    if (staged_bytes > 0 && !write_plaintext({staged.data(), staged_bytes})) return;
    app_unsent_ = true;
    flush();
  }

  // Encrypts `plain` into the write BIO; false (the transport failed) when OpenSSL cannot.
  bool write_plaintext(std::span<const std::byte> plain) noexcept {
    std::size_t written = 0;
    if (SSL_write_ex(ssl_, plain.data(), plain.size(), &written) == 1 && written == plain.size()) return true;
    fail(ssl_failure("TLS encryption failed"));
    return false;
  }

  // Sends what the write BIO holds, unless the transport below is busy (then its
  // completion sends it). One send carries every record encrypted since the last one.
  void flush() noexcept {
    if (raw_->send_in_flight() || !raw_->usable() || encrypted_.empty()) return;
    take_encrypted();
    sending_app_ = app_unsent_;
    app_unsent_ = false;
    raw_->send(sending_, {}, {});
  }

  // The ciphertext encrypted since the last send becomes the next one (no send is in
  // flight); both buffers keep their capacity.
  void take_encrypted() noexcept {
    sending_.swap(encrypted_);
    encrypted_.clear();
  }

  // ---- the BIO between OpenSSL and the transport: no copy through a memory BIO ----

  static const BIO_METHOD* transport_bio_method() noexcept {
    static BIO_METHOD* const method = [] {
      BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ringmux TLS transport");
      if (m == nullptr) return m;
      BIO_meth_set_read_ex(m, &TlsTransport::bio_read);
      BIO_meth_set_write_ex(m, &TlsTransport::bio_write);
      BIO_meth_set_ctrl(m, &TlsTransport::bio_ctrl);
      return m;
    }();
    return method;
  }
  // What the current receive still holds; none: "retry" (OpenSSL answers WANT_READ).
  static int bio_read(BIO* bio, char* out, std::size_t size, std::size_t* read) noexcept {
    auto& self = *static_cast<TlsTransport*>(BIO_get_data(bio));
    BIO_clear_retry_flags(bio);
    if (self.input_.empty()) {
      BIO_set_retry_read(bio);
      *read = 0;
      return 0;
    }
    const std::size_t n = std::min(size, self.input_.size());
    std::memcpy(out, self.input_.data(), n);
    if (self.counting_) self.read_records_.feed(self.input_.first(n));
    self.input_ = self.input_.subspan(n);
    *read = n;
    return 1;
  }
  // Ciphertext (records, alerts, handshake flights) is appended to the next send.
  static int bio_write(BIO* bio, const char* in, std::size_t size, std::size_t* written) noexcept {
    auto& self = *static_cast<TlsTransport*>(BIO_get_data(bio));
    BIO_clear_retry_flags(bio);
    const auto* bytes = reinterpret_cast<const std::byte*>(in);
    if (self.counting_) self.written_records_.feed({bytes, size});
    self.encrypted_.insert(self.encrypted_.end(), bytes, bytes + size);
    *written = size;
    return 1;
  }
  static long bio_ctrl(BIO*, int command, long, void*) noexcept {
    return command == BIO_CTRL_FLUSH ? 1 : 0;  // flushed by flush(), once per turn of work
  }

  // OpenSSL's trace of each protocol message: counts the peer's KeyUpdates against their
  // budget (limits::tls_key_updates_free, one more per tls_key_update_received_bytes).
  // Runs inside SSL_read: the verdict is acted on when it returns.
  static void on_tls_message(int write_p, int, int content_type, const void* buf, std::size_t len, SSL*,
                             void* arg) noexcept {
    if (write_p != 0 || content_type != SSL3_RT_HANDSHAKE || len == 0) return;
    if (*static_cast<const unsigned char*>(buf) != SSL3_MT_KEY_UPDATE) return;
    auto& self = *static_cast<TlsTransport*>(arg);
    self.key_updates_received_++;
    if (self.key_updates_received_ > key_updates_allowed(self.received_bytes_)) self.key_updates_over_ = true;
  }
  static uint64_t key_updates_allowed(uint64_t received_bytes) noexcept {
    return limits::tls_key_updates_free + received_bytes / limits::tls_key_update_received_bytes;
  }
  std::string key_update_failure() const {
    return "TLS KeyUpdate flood: the peer sent " + std::to_string(key_updates_received_) + " KeyUpdates with " +
           std::to_string(received_bytes_) + " bytes, over the limit of " +
           std::to_string(limits::tls_key_updates_free) + " plus one per " +
           std::to_string(limits::tls_key_update_received_bytes) + " bytes received";
  }

  std::string ssl_failure(const char* what) {
    std::string text = what;
    // A first record that is not TLS at all: say so, not only OpenSSL's reason.
    const unsigned long first = ERR_peek_error();
    if (state_ == State::handshaking && ERR_GET_LIB(first) == ERR_LIB_SSL) {
      const int reason = ERR_GET_REASON(first);
      if (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_HTTP_REQUEST || reason == SSL_R_HTTPS_PROXY_REQUEST ||
          reason == SSL_R_PACKET_LENGTH_TOO_LONG || reason == SSL_R_RECORD_LENGTH_MISMATCH) {
        text += ": the peer does not speak TLS";
      }
    }
    const long verify = SSL_get_verify_result(ssl_);
    if (verify != X509_V_OK) {
      text += ": peer certificate not accepted: ";
      text += X509_verify_cert_error_string(verify);
    }
    text += ": ";
    text += take_openssl_errors();
    return text;
  }

  // Ends the transport: the alert OpenSSL queued goes out as our last words (best effort),
  // and the session hears handshake_failed once.
  void fail(std::string text) noexcept {
    forget_secrets();
    loop_.timer_cancel(timer_);
    state_ = State::failed;
    failure_ = std::move(text);
    RM_LOG(LogSeverity::warning, LogSubsystem::link, 0, 0, 0, "TLS %s: %s", dialer_ ? "client" : "server",
           failure_.c_str());
    if (!encrypted_.empty() && raw_->usable() && !raw_->send_in_flight()) {
      take_encrypted();
      raw_->send_last(sending_);
    }
    handler_->on_transport_error(engine::IoError::handshake_failed);
  }

  static void on_handshake_timeout(engine::Timer& timer) noexcept {
    auto& self = *static_cast<TlsTransport*>(timer.context());
    if (self.state_ != State::handshaking) return;
    self.fail(!self.setup_failure_.empty() ? self.setup_failure_
                                           : std::string("TLS handshake not complete within the handshake timeout"));
  }

  std::string certificate_fingerprint() const {
    X509* peer = SSL_get0_peer_certificate(ssl_);
    if (peer == nullptr) return {};
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int length = 0;
    if (X509_digest(peer, EVP_sha256(), digest.data(), &length) != 1) return {};
    return "sha256:" + hex({digest.data(), length});
  }

  engine::Loop& loop_;
  std::shared_ptr<const TlsContext> context_;
  std::unique_ptr<Transport> raw_;
  bool dialer_;
  State state_ = State::idle;
  TransportHandler* handler_ = nullptr;
  SSL* ssl_ = nullptr;
  std::span<const std::byte> input_;  // the receive being read (bio_read), during on_transport_recv
  engine::Timer timer_;  // the handshake's deadline
  engine::Deferred closed_notice_{&TlsTransport::on_closed_turn, this};
  // The session's send: held during the handshake, then encrypted; done once every byte of
  // its ciphertext was handed to the transport below.
  std::array<std::span<const std::byte>, 3> held_{};
  bool holding_ = false;
  bool app_send_active_ = false;
  bool app_unsent_ = false;   // the session's ciphertext is still in the write BIO
  bool sending_app_ = false;  // ...or in the send in flight below
  std::vector<std::byte> encrypted_;  // ciphertext not yet sent (bio_write appends)
  std::vector<std::byte> sending_;    // the ciphertext of the send in flight below
  uint64_t received_bytes_ = 0;       // ciphertext received, the KeyUpdate budget's base
  uint64_t key_updates_received_ = 0;
  bool key_updates_over_ = false;  // the peer's KeyUpdates passed their budget: it fails
  bool records_received_ = false;  // application data has arrived since the handshake
  std::string identity_;
  std::string failure_;
  std::string setup_failure_;
  // The kTLS hand-over (try_offload).
  RecordLayer layer_ = RecordLayer::user_space;
  bool counting_ = false;          // the hand-over is wanted: records and secrets are kept
  bool offload_pending_ = false;   // the handshake is done, the hand-over is not yet
  bool recv_stopped_ = false;      // the transport below delivers nothing until resumed
  bool receiving_ = false;         // inside on_transport_recv
  RecordCounter read_records_;     // the ciphertext OpenSSL read...
  RecordCounter written_records_;  // ...and wrote
  bool stop_wanted_ = false;       // the handler paused receiving (pause_recv)...
  bool stop_reported_ = false;     // ...and heard that it stopped
  uint64_t records_read_at_open_ = 0;  // the handshake's: sequence numbers count from there
  uint64_t records_written_at_open_ = 0;
  std::array<unsigned char, EVP_MAX_MD_SIZE> client_secret_{};  // application traffic secrets
  std::array<unsigned char, EVP_MAX_MD_SIZE> server_secret_{};
  std::size_t client_secret_bytes_ = 0;
  std::size_t server_secret_bytes_ = 0;
};

// A TLS transport between two loops: its OpenSSL object (a partial record it buffered stays
// inside), the transport below, and what the released one knew of the connection. The
// kTLS bookkeeping does not move: the hand-over into the kernel, if any, finished before
// the release (report_stopped waits for it), and an adopted transport attempts none.
class ReleasedTls final : public ReleasedTransport {
 public:
  ReleasedTls(std::shared_ptr<const TlsContext> context, bool dialer, SSL* ssl, std::unique_ptr<ReleasedTransport> raw,
              TlsTransport::Carried carried) noexcept
      : context_(std::move(context)), dialer_(dialer), ssl_(ssl), raw_(std::move(raw)), carried_(std::move(carried)) {}
  ~ReleasedTls() override {
    if (ssl_ != nullptr) SSL_free(ssl_);  // never adopted: frees both BIOs
  }
  std::unique_ptr<Transport> adopt(engine::Loop& loop) override {
    RM_ASSERT(ssl_ != nullptr);
    auto transport = std::make_unique<TlsTransport>(loop, context_, raw_->adopt(loop), dialer_);
    transport->adopt(ssl_, carried_);
    ssl_ = nullptr;
    return transport;
  }

 private:
  std::shared_ptr<const TlsContext> context_;
  bool dialer_;
  SSL* ssl_;
  std::unique_ptr<ReleasedTransport> raw_;
  TlsTransport::Carried carried_;
};

std::unique_ptr<ReleasedTransport> TlsTransport::release() noexcept {
  RM_ASSERT(state_ == State::open && stop_reported_ && !receiving_ && !app_send_active_ && !holding_);
  RM_ASSERT(!raw_->send_in_flight() && encrypted_.empty());
  loop_.timer_cancel(timer_);
  std::unique_ptr<ReleasedTransport> raw = raw_->release();
  RM_ASSERT(raw != nullptr);  // can_release() said the layer below can move
  // OpenSSL's callbacks point at nobody until the adopting transport takes the object.
  BIO_set_data(SSL_get_rbio(ssl_), nullptr);
  SSL_set_msg_callback_arg(ssl_, nullptr);
  SSL_set_app_data(ssl_, nullptr);
  Carried carried{identity_, layer_, received_bytes_, key_updates_received_, records_received_};
  auto released = std::make_unique<ReleasedTls>(context_, dialer_, ssl_, std::move(raw), std::move(carried));
  ssl_ = nullptr;
  state_ = State::closed;
  handler_ = nullptr;
  return released;
}

class TlsHandshake final : public Handshake {
 public:
  explicit TlsHandshake(std::shared_ptr<const TlsContext> context) noexcept : context_(std::move(context)) {}
  std::unique_ptr<Transport> wrap(engine::Loop& loop, std::unique_ptr<Transport> raw, bool dialer) override {
    return make_tls_transport(loop, context_, std::move(raw), dialer);
  }

 private:
  std::shared_ptr<const TlsContext> context_;
};

}  // namespace

std::shared_ptr<const TlsContext> TlsContext::create(const TlsOptions& options, std::string& error) {
  if (options.cert_file.empty() || options.key_file.empty() || options.ca_file.empty()) {
    error = "TLS needs a certificate, its key and a CA file (both sides authenticate)";
    return nullptr;
  }
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_method());
  if (ctx == nullptr) {
    error = "cannot create a TLS context: " + take_openssl_errors();
    return nullptr;
  }
  auto fail = [ctx, &error](std::string text) -> std::shared_ptr<const TlsContext> {
    SSL_CTX_free(ctx);
    error = std::move(text);
    return nullptr;
  };
  // TLS 1.3 only: no renegotiation, forward secrecy, AEAD ciphers. No tickets and no
  // session cache: the session layer resumes, not TLS.
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  // AES-128-GCM first (OpenSSL's default list starts with AES-256-GCM): 10 AES rounds
  // instead of 14 for every byte of bulk traffic, with AES-NI on x86. Both ends use this
  // list, so it is what they negotiate; a peer without it still gets the others.
  if (SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256") != 1) {
    return fail("cannot set the TLS 1.3 cipher suites: " + take_openssl_errors());
  }
  // SSL_MODE_RELEASE_BUFFERS stays off: with it OpenSSL frees its read and write record
  // buffers (~17 KiB each) whenever they are empty, which on a ping-pong connection is
  // after every record, and allocates them again for the next: two allocations and frees
  // per message each way. Kept, they cost ~34 KiB per connection (34 MiB per thousand).
  if (SSL_CTX_use_certificate_chain_file(ctx, options.cert_file.c_str()) != 1) {
    return fail(file_error("cannot load the certificate", options.cert_file));
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, options.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    return fail(file_error("cannot load the private key", options.key_file));
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return fail("the key '" + options.key_file + "' does not belong to the certificate '" + options.cert_file +
                "': " + take_openssl_errors());
  }
  if (SSL_CTX_load_verify_locations(ctx, options.ca_file.c_str(), nullptr) != 1) {
    return fail(file_error("cannot load the CA file", options.ca_file));
  }
  // Both roles require the peer's certificate: mutual authentication.
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  // The kTLS hand-over needs the application traffic secrets; OpenSSL 3.0 gives them to
  // its key log only (kept by the transport until the keys are installed, then wiped).
  if (options.kernel_offload) SSL_CTX_set_keylog_callback(ctx, &TlsTransport::on_keylog);
  return std::shared_ptr<const TlsContext>(new TlsContext(ctx, options.peer_names, options.kernel_offload));
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

std::unique_ptr<Transport> make_tls_transport(engine::Loop& loop, std::shared_ptr<const TlsContext> context,
                                              std::unique_ptr<Transport> raw, bool dialer) {
  return std::make_unique<TlsTransport>(loop, std::move(context), std::move(raw), dialer);
}

std::unique_ptr<Handshake> make_tls_handshake(std::shared_ptr<const TlsContext> context) {
  return std::make_unique<TlsHandshake>(std::move(context));
}

bool tls_kernel_offload_available() noexcept {
  static const bool available = [] {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    // The ULP is looked up before the socket's state is checked: ENOENT means the kernel
    // has no `tls` module; ENOTCONN (an unconnected socket) means it has one.
    const int rc = ::setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls"));
    const int err = rc == 0 ? 0 : errno;
    ::close(fd);
    return rc == 0 || err == ENOTCONN;
  }();
  return available;
}

}  // namespace ringmux::mux
