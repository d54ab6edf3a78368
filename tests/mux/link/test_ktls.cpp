// The kTLS hand-over of the TLS transport (mux/link/tls.h): once the handshake is done the
// record layer moves below the transport, which then sends and receives plaintext.
//
// This machine's kernel has no `tls` ULP, so most of these tests put a model of the kernel's
// record layer under the TLS transport: KernelTlsModel seals and opens TLS 1.3 records with
// the keys the transport installs, as the kernel would (RFC 8446 5.2-5.3: the inner content
// type, the nonce from the IV and the sequence number, the header as additional data). Its
// peer is OpenSSL's own record layer or another model, so a wrong key, IV or sequence
// number, or a hand-over off a record boundary, fails the echo. Under it is a real socket
// on io_uring: the pause, the stop and the resume of the receive are the engine's. The last
// test runs the real kernel path where the kernel has the ULP (tests/check_ktls.py counts
// it as skipped elsewhere).
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <doctest/doctest.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "ringmux/mux/link/tls.h"
#include "tests/mux/link/tls_pair.h"
#include "tests/support.h"

using namespace ringmux;
using namespace ringmux::mux;
using namespace ringmux::tls_test;
using engine::IoError;
using engine::Loop;

namespace {

using Bytes = std::vector<std::byte>;

constexpr std::size_t record_header_bytes = 5;
constexpr std::size_t record_plaintext_max = 16384;  // RFC 8446 5.1
constexpr std::size_t tag_bytes = 16;
constexpr uint8_t application_data = 23;

// One direction of the model: TLS 1.3 record protection with one traffic key.
class RecordCipher {
 public:
  explicit RecordCipher(const KernelTlsKeys& keys) : keys_(keys), ctx_(EVP_CIPHER_CTX_new()) { REQUIRE(ctx_); }
  ~RecordCipher() { EVP_CIPHER_CTX_free(ctx_); }
  RecordCipher(const RecordCipher&) = delete;
  RecordCipher& operator=(const RecordCipher&) = delete;

  // Appends one record carrying `plain` (application data) to `out`.
  bool seal(std::span<const std::byte> plain, Bytes& out) {
    const std::size_t length = plain.size() + 1 + tag_bytes;
    const std::array<unsigned char, record_header_bytes> header = {
        application_data, 3, 3, static_cast<unsigned char>(length >> 8), static_cast<unsigned char>(length)};
    Bytes inner(plain.begin(), plain.end());
    inner.push_back(std::byte{application_data});
    const std::size_t at = out.size();
    out.resize(at + record_header_bytes + length);
    auto* dst = reinterpret_cast<unsigned char*>(out.data() + at);
    std::memcpy(dst, header.data(), header.size());
    int n = 0;
    bool ok = start(true) && EVP_EncryptUpdate(ctx_, nullptr, &n, header.data(), header.size()) == 1 &&
              EVP_EncryptUpdate(ctx_, dst + record_header_bytes, &n, reinterpret_cast<unsigned char*>(inner.data()),
                                static_cast<int>(inner.size())) == 1 &&
              EVP_EncryptFinal_ex(ctx_, dst + record_header_bytes + inner.size(), &n) == 1 &&
              EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_AEAD_GET_TAG, tag_bytes, dst + record_header_bytes + inner.size()) == 1;
    records_++;
    return ok;
  }

  // Opens one whole record (header included): its application data into `plain`; false if
  // it does not authenticate or is not application data (the kernel's EBADMSG and EIO).
  bool open(std::span<const std::byte> record, Bytes& plain) {
    const auto* src = reinterpret_cast<const unsigned char*>(record.data());
    const std::size_t body = record.size() - record_header_bytes;
    if (body < 1 + tag_bytes) return false;
    Bytes inner(body - tag_bytes);
    int n = 0;
    std::array<unsigned char, tag_bytes> tag{};
    std::memcpy(tag.data(), src + record.size() - tag_bytes, tag_bytes);
    const bool ok =
        start(false) && EVP_DecryptUpdate(ctx_, nullptr, &n, src, record_header_bytes) == 1 &&
        EVP_DecryptUpdate(ctx_, reinterpret_cast<unsigned char*>(inner.data()), &n, src + record_header_bytes,
                          static_cast<int>(inner.size())) == 1 &&
        EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_AEAD_SET_TAG, tag_bytes, tag.data()) == 1 &&
        EVP_DecryptFinal_ex(ctx_, reinterpret_cast<unsigned char*>(inner.data()) + inner.size(), &n) == 1;
    records_++;
    if (!ok) return false;
    while (!inner.empty() && inner.back() == std::byte{0}) inner.pop_back();  // padding
    if (inner.empty() || inner.back() != std::byte{application_data}) return false;
    inner.pop_back();
    plain.insert(plain.end(), inner.begin(), inner.end());
    return true;
  }

  const KernelTlsKeys& keys() const { return keys_; }
  uint64_t records() const { return records_; }

 private:
  // Keyed with the next record's nonce: the IV XOR the sequence number, right-aligned.
  bool start(bool encrypt) {
    const EVP_CIPHER* cipher = keys_.cipher == KernelTlsKeys::Cipher::aes_128_gcm   ? EVP_aes_128_gcm()
                               : keys_.cipher == KernelTlsKeys::Cipher::aes_256_gcm ? EVP_aes_256_gcm()
                                                                                    : EVP_chacha20_poly1305();
    std::array<unsigned char, 12> nonce{};
    std::memcpy(nonce.data(), keys_.iv.data(), nonce.size());
    const uint64_t sequence = keys_.sequence + records_;
    for (std::size_t i = 0; i < 8; i++) nonce[nonce.size() - 1 - i] ^= static_cast<unsigned char>(sequence >> (8 * i));
    const auto* key = reinterpret_cast<const unsigned char*>(keys_.key.data());
    return EVP_CipherInit_ex(ctx_, cipher, nullptr, nullptr, nullptr, encrypt ? 1 : 0) == 1 &&
           EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_AEAD_SET_IVLEN, static_cast<int>(nonce.size()), nullptr) == 1 &&
           EVP_CipherInit_ex(ctx_, nullptr, nullptr, key, nonce.data(), encrypt ? 1 : 0) == 1;
  }

  KernelTlsKeys keys_;
  EVP_CIPHER_CTX* ctx_;
  uint64_t records_ = 0;
};

// What a model saw, kept by the test: the connection destroys its transport when it ends.
struct ModelRecord {
  // What went wrong: a record that did not seal or open, keys installed at an unsafe point,
  // a byte delivered while the receive was stopped.
  int faults = 0;
  bool receive_installed = false;
  bool transmit_installed = false;
  uint64_t receive_sequence = 0;  // the first record's, as installed
  uint64_t records_opened = 0;
  uint64_t records_sealed = 0;
};

// The kernel's record layer, modelled, between a TLS transport and a socket transport.
class KernelTlsModel final : public Transport, private TransportHandler {
 public:
  KernelTlsModel(std::unique_ptr<Transport> inner, ModelRecord& record, int refuse_receive, int refuse_transmit)
      : inner_(std::move(inner)), record_(record), refuse_receive_(refuse_receive), refuse_transmit_(refuse_transmit) {}

  void start(TransportHandler& handler) noexcept override {
    const bool started = handler_ != nullptr;
    handler_ = &handler;
    if (!started) inner_->start(*this);
  }
  void send(std::span<const std::byte> first, std::span<const std::byte> second,
            std::span<const std::byte> third) noexcept override {
    if (!transmit_) {
      inner_->send(first, second, third);
      return;
    }
    Bytes plain;
    for (auto part : {first, second, third}) plain.insert(plain.end(), part.begin(), part.end());
    sealed_.clear();
    for (std::size_t at = 0; at < plain.size(); at += record_plaintext_max) {
      const std::size_t n = std::min(record_plaintext_max, plain.size() - at);
      if (!transmit_->seal(std::span(plain).subspan(at, n), sealed_)) record_.faults++;
      record_.records_sealed++;
    }
    inner_->send(sealed_, {}, {});
  }
  bool send_in_flight() const noexcept override { return inner_->send_in_flight(); }
  bool usable() const noexcept override { return inner_->usable(); }
  void send_last(std::span<const std::byte> bytes) noexcept override {
    if (!transmit_ || bytes.empty()) {
      inner_->send_last(bytes);
      return;
    }
    sealed_.clear();
    if (!transmit_->seal(bytes.first(std::min(bytes.size(), record_plaintext_max)), sealed_)) record_.faults++;
    inner_->send_last(sealed_);
  }
  void close() noexcept override { inner_->close(); }

  bool kernel_tls_capable() const noexcept override { return true; }
  void pause_recv() noexcept override {
    paused_ = true;
    inner_->pause_recv();
  }
  void resume_recv() noexcept override {
    paused_ = stopped_ = false;
    inner_->resume_recv();
  }
  int install_kernel_tls(bool transmit, const KernelTlsKeys& keys) noexcept override {
    if (inner_->send_in_flight()) record_.faults++;  // the kernel would seal what is still leaving
    if (transmit) {
      if (refuse_transmit_ != 0) return refuse_transmit_;
      transmit_ = std::make_unique<RecordCipher>(keys);
      record_.transmit_installed = true;
      return 0;
    }
    if (refuse_receive_ != 0) return refuse_receive_;
    if (!stopped_) record_.faults++;  // bytes could be on their way up: not a safe point
    receive_ = std::make_unique<RecordCipher>(keys);
    record_.receive_installed = true;
    record_.receive_sequence = keys.sequence;
    return 0;
  }

 private:
  void on_transport_recv(std::span<const std::byte> bytes) noexcept override {
    if (stopped_) record_.faults++;
    if (!receive_) {
      handler_->on_transport_recv(bytes);
      return;
    }
    received_.insert(received_.end(), bytes.begin(), bytes.end());
    std::size_t at = 0;
    Bytes plain;
    while (received_.size() - at >= record_header_bytes) {
      const auto* header = reinterpret_cast<const unsigned char*>(received_.data() + at);
      const std::size_t whole = record_header_bytes + (static_cast<std::size_t>(header[3]) << 8 | header[4]);
      if (received_.size() - at < whole) break;
      if (!receive_->open(std::span(received_).subspan(at, whole), plain)) {
        record_.faults++;
        handler_->on_transport_error(IoError::other);  // the kernel's EBADMSG or EIO
        return;
      }
      record_.records_opened++;
      at += whole;
    }
    received_.erase(received_.begin(), received_.begin() + static_cast<std::ptrdiff_t>(at));
    if (!plain.empty()) handler_->on_transport_recv(plain);
  }
  void on_transport_sent() noexcept override { handler_->on_transport_sent(); }
  void on_transport_error(IoError error) noexcept override { handler_->on_transport_error(error); }
  void on_transport_closed() noexcept override { handler_->on_transport_closed(); }
  void on_transport_recv_stopped() noexcept override {
    if (!paused_) record_.faults++;
    stopped_ = true;
    handler_->on_transport_recv_stopped();
  }

  std::unique_ptr<Transport> inner_;
  ModelRecord& record_;
  TransportHandler* handler_ = nullptr;
  int refuse_receive_;
  int refuse_transmit_;
  bool paused_ = false;
  bool stopped_ = false;
  std::unique_ptr<RecordCipher> receive_;
  std::unique_ptr<RecordCipher> transmit_;
  Bytes received_;  // ciphertext of a record not yet whole
  Bytes sealed_;    // the send in flight
};

// A TLS context of `identity` that offers only `suite`; `kernel_offload` off for a side
// that must stay in user space even where the kernel has kTLS.
std::shared_ptr<const TlsContext> context_for(const TlsOptions& identity, const char* suite,
                                              bool kernel_offload = true) {
  std::string error;
  TlsOptions options = identity;
  options.kernel_offload = identity.kernel_offload && kernel_offload;
  auto context = TlsContext::create(options, error);
  REQUIRE_MESSAGE(context != nullptr, error);
  REQUIRE(SSL_CTX_set_ciphersuites(context->native(), suite) == 1);
  return context;
}

// Wraps each side's socket in a model recording into `record` (when given), then in TLS.
Wrap tls_over_model(std::shared_ptr<const TlsContext> context, ModelRecord* record, int refuse_receive = 0,
                    int refuse_transmit = 0) {
  return [=](Loop& loop, std::unique_ptr<Transport> raw, bool dialer) {
    if (record != nullptr) raw = std::make_unique<KernelTlsModel>(std::move(raw), *record, refuse_receive, refuse_transmit);
    return make_tls_transport(loop, context, std::move(raw), dialer);
  };
}

// After the echoes: both sessions still up, each side's record layer where expected.
void check_layers(Pair& pair, RecordLayer client, RecordLayer server) {
  REQUIRE(pair.client->connected());  // the transports are alive
  REQUIRE(pair.server->connected());
  CHECK(pair.client_transport->record_layer() == client);
  CHECK(pair.server_transport->record_layer() == server);
}

}  // namespace

// Proves the hand-over for each TLS 1.3 suite the kernel takes: after the handshake both
// record layers move below the transport (into the model), 300 echoes of up to 48 KiB
// (records cut across receives, sends of many records) come back intact, and the keys were
// installed with the receive stopped and nothing of ours in flight.
TEST_CASE("tls: the record layer moves below the transport after the handshake, for every cipher suite") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Pki pki;
  for (const char* suite : {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}) {
    CAPTURE(suite);
    ModelRecord client, server;
    Pair pair(*loop, tls_over_model(context_for(pki.node_a, suite), &client),
              tls_over_model(context_for(pki.node_b, suite), &server));
    echo_calls(pair, 300, 48 * 1024, test::test_seed("ktls model"));
    check_layers(pair, RecordLayer::kernel, RecordLayer::kernel);
    for (const ModelRecord* record : {&client, &server}) {
      CHECK(record->faults == 0);
      CHECK(record->receive_installed);
      CHECK(record->transmit_installed);
      CHECK(record->records_opened > 300);  // every request (or response) went through it
      CHECK(record->records_sealed > 300);
    }
    // The exporter still works: the resume's proof does not need OpenSSL's record layer.
    std::array<std::byte, 32> a{}, b{};
    REQUIRE(pair.client_transport->export_secret("resume", a));
    REQUIRE(pair.server_transport->export_secret("resume", b));
    CHECK(a == b);
    CHECK(!pair.client_end);
    CHECK(!pair.server_end);
  }
}

// Proves the installed keys and sequence numbers are OpenSSL's own: one side's record layer
// below the transport talks to the other side's OpenSSL record layer, both ways round. A
// client in user space sends its first records with its Finished, so the server's OpenSSL
// opens those before the hand-over and the kernel's receive starts at a later sequence
// number.
TEST_CASE("tls: a record layer below the transport talks to OpenSSL's record layer both ways round") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Pki pki;
  const char* suite = "TLS_AES_128_GCM_SHA256";
  {
    ModelRecord client;
    Pair pair(*loop, tls_over_model(context_for(pki.node_a, suite), &client),
              tls_over_model(context_for(pki.node_b, suite, false), nullptr));
    echo_calls(pair, 200, 48 * 1024, test::test_seed("ktls client"));
    check_layers(pair, RecordLayer::kernel, RecordLayer::user_space);
    CHECK(client.faults == 0);
    CHECK(client.records_opened >= 200);
  }
  ModelRecord server;
  Pair pair(*loop, tls_over_model(context_for(pki.node_a, suite, false), nullptr),
            tls_over_model(context_for(pki.node_b, suite), &server));
  echo_calls(pair, 200, 48 * 1024, test::test_seed("ktls server"));
  check_layers(pair, RecordLayer::user_space, RecordLayer::kernel);
  CHECK(server.faults == 0);
  CHECK(server.records_opened >= 200);
  CHECK(server.receive_sequence >= 1);  // the client's HELLO came with its Finished
}

// Proves the fallbacks: a kernel that refuses the receive keys leaves both directions in
// user space; one that takes them but refuses the transmit keys leaves sending in user
// space. Calls work either way and the log says which record layer is in use and why.
TEST_CASE("tls: where the kernel refuses the keys, the record layer stays in user space") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Pki pki;
  const char* suite = "TLS_AES_128_GCM_SHA256";
  TlsLog log;
  {
    ModelRecord client;
    Pair pair(*loop, tls_over_model(context_for(pki.node_a, suite), &client, ENOENT, 0),
              tls_over_model(context_for(pki.node_b, suite, false), nullptr));
    echo_calls(pair, 100, 48 * 1024, test::test_seed("ktls refused rx"));
    check_layers(pair, RecordLayer::user_space, RecordLayer::user_space);
    CHECK_FALSE(client.receive_installed);
    CHECK_FALSE(client.transmit_installed);
    CHECK(log.has("client", "the kernel refused the receive keys"));
  }
  ModelRecord client, server;
  Pair pair(*loop, tls_over_model(context_for(pki.node_a, suite), &client, 0, EOPNOTSUPP),
            tls_over_model(context_for(pki.node_b, suite), &server));
  echo_calls(pair, 100, 48 * 1024, test::test_seed("ktls refused tx"));
  check_layers(pair, RecordLayer::kernel_rx, RecordLayer::kernel);
  CHECK(client.receive_installed);
  CHECK_FALSE(client.transmit_installed);
  CHECK(client.faults == 0);
  CHECK(server.faults == 0);
  CHECK(log.has("client", "the kernel refused the transmit keys"));
}

// Proves a client refused after its handshake (the server does not accept its certificate)
// still fails with handshake_failed and a cause naming the refusal when its record layer
// went into the kernel first: the kernel cannot name the server's alert, the transport does.
TEST_CASE("tls: a refusal after the hand-over is reported as a refused handshake") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Pki pki;
  TlsLog log;
  ModelRecord client;
  Pair pair(*loop, tls_over_model(context_for(pki.stranger, "TLS_AES_128_GCM_SHA256"), &client),
            tls_over_model(context_for(pki.node_b, "TLS_AES_128_GCM_SHA256", false), nullptr));
  REQUIRE(pair.both_ended());
  CHECK(pair.client_end->second == IoError::handshake_failed);
  CHECK(pair.server_end->second == IoError::handshake_failed);
  CHECK(log.has("client", "refused"));
  MESSAGE("the client's record layer was " << std::string(client.receive_installed ? "below the transport" : "in user space")
                                           << " when the refusal came");
}

// Proves kernel_offload = false keeps the record layer in user space even where the layer
// below could take it: no keys installed.
TEST_CASE("tls: kernel_offload off keeps the record layer in user space") {
  auto loop = test::make_test_loop();
  if (!loop) return;
  Pki pki;
  TlsOptions off = pki.node_a;
  off.kernel_offload = false;
  ModelRecord client;
  Pair pair(*loop, tls_over_model(context_for(off, "TLS_AES_128_GCM_SHA256"), &client),
            tls_over_model(context_for(pki.node_b, "TLS_AES_128_GCM_SHA256", false), nullptr));
  echo_calls(pair, 50, 4096, test::test_seed("ktls off"));
  check_layers(pair, RecordLayer::user_space, RecordLayer::user_space);
  CHECK_FALSE(client.receive_installed);
  CHECK_FALSE(client.transmit_installed);
}

// Proves the real thing where the kernel has the `tls` ULP: both sessions' record layers
// move into the kernel (io_uring sends and receives plaintext on the sockets) and 1,000
// echoes of up to 48 KiB come back intact. Elsewhere it says it was skipped.
TEST_CASE("tls: the kernel's record layer (kTLS) carries the session where the kernel has it") {
  if (!tls_kernel_offload_available()) {
    MESSAGE("skipped: this kernel has no tls ULP (kTLS)");
    return;
  }
  auto loop = test::make_test_loop();
  if (!loop) return;
  Pki pki;
  Pair pair(*loop, tls(pki.node_a), tls(pki.node_b));
  echo_calls(pair, 1000, 48 * 1024, test::test_seed("ktls kernel"));
  check_layers(pair, RecordLayer::kernel, RecordLayer::kernel);
  std::array<std::byte, 32> a{}, b{};
  REQUIRE(pair.client_transport->export_secret("resume", a));
  REQUIRE(pair.server_transport->export_secret("resume", b));
  CHECK(a == b);
  CHECK(!pair.client_end);
  CHECK(!pair.server_end);
}
