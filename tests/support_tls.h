// Certificates for the TLS tests, made with OpenSSL's API in a temporary directory: a CA,
// leaves it signs (with a DNS name, a validity window that may lie in the past), and a
// second CA nobody trusts. PEM files, as an operator's would be.
#pragma once

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "ringmux/mux/link/tls.h"

namespace ringmux::test {

class TestPki {
 public:
  TestPki() {
    std::string pattern = (std::filesystem::temp_directory_path() / "ringmux-tls-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    dir_ = pattern;
  }
  ~TestPki() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  TestPki(const TestPki&) = delete;
  TestPki& operator=(const TestPki&) = delete;

  // A self-signed CA named `name`: its certificate is `name`.pem, its key `name`.key.
  void make_ca(const std::string& name) {
    EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
    REQUIRE(key != nullptr);
    X509* cert = new_certificate(name, key, 0, 2 * day_s);
    add_extension(cert, cert, NID_basic_constraints, "critical,CA:TRUE");
    add_extension(cert, cert, NID_key_usage, "critical,keyCertSign,cRLSign");
    REQUIRE(X509_set_issuer_name(cert, X509_get_subject_name(cert)) == 1);
    REQUIRE(X509_sign(cert, key, EVP_sha256()) > 0);
    write(name, cert, key);
  }

  // A leaf `name` (CN and DNS SAN) signed by CA `ca`, valid from `not_before_s` to
  // `not_after_s` seconds from now.
  mux::TlsOptions make_leaf(const std::string& name, const std::string& ca, long not_before_s = -60,
                       long not_after_s = 2 * day_s) {
    EVP_PKEY* ca_key = read_key(ca);
    X509* ca_cert = read_cert(ca);
    EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
    REQUIRE(key != nullptr);
    X509* cert = new_certificate(name, key, not_before_s, not_after_s);
    add_extension(cert, ca_cert, NID_subject_alt_name, ("DNS:" + name).c_str());
    add_extension(cert, ca_cert, NID_basic_constraints, "critical,CA:FALSE");
    REQUIRE(X509_set_issuer_name(cert, X509_get_subject_name(ca_cert)) == 1);
    REQUIRE(X509_sign(cert, ca_key, EVP_sha256()) > 0);
    write(name, cert, key);
    X509_free(ca_cert);
    EVP_PKEY_free(ca_key);
    return options(name, ca);
  }

  // The files of leaf `name`, trusting CA `ca`.
  mux::TlsOptions options(const std::string& name, const std::string& ca) const {
    mux::TlsOptions o;
    o.cert_file = path(name + ".pem");
    o.key_file = path(name + ".key");
    o.ca_file = path(ca + ".pem");
    return o;
  }
  std::string path(const std::string& file) const { return (dir_ / file).string(); }

 private:
  static constexpr long day_s = 24 * 3600;

  X509* new_certificate(const std::string& name, EVP_PKEY* key, long not_before_s, long not_after_s) {
    X509* cert = X509_new();
    REQUIRE(cert != nullptr);
    REQUIRE(X509_set_version(cert, 2) == 1);
    REQUIRE(ASN1_INTEGER_set(X509_get_serialNumber(cert), ++serial_) == 1);
    REQUIRE(X509_gmtime_adj(X509_getm_notBefore(cert), not_before_s) != nullptr);
    REQUIRE(X509_gmtime_adj(X509_getm_notAfter(cert), not_after_s) != nullptr);
    REQUIRE(X509_set_pubkey(cert, key) == 1);
    X509_NAME* subject = X509_get_subject_name(cert);
    REQUIRE(X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                                       reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1, 0) == 1);
    keys_.emplace_back(key);
    return cert;
  }
  static void add_extension(X509* cert, X509* issuer, int nid, const char* value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    REQUIRE(ext != nullptr);
    REQUIRE(X509_add_ext(cert, ext, -1) == 1);
    X509_EXTENSION_free(ext);
  }
  void write(const std::string& name, X509* cert, EVP_PKEY* key) {
    FILE* c = std::fopen(path(name + ".pem").c_str(), "w");
    FILE* k = std::fopen(path(name + ".key").c_str(), "w");
    REQUIRE((c != nullptr && k != nullptr));
    REQUIRE(PEM_write_X509(c, cert) == 1);
    REQUIRE(PEM_write_PrivateKey(k, key, nullptr, nullptr, 0, nullptr, nullptr) == 1);
    std::fclose(c);
    std::fclose(k);
    X509_free(cert);
  }
  // The PEM object `name`.`extension` read by `read` (PEM_read_PrivateKey, PEM_read_X509).
  template <typename T>
  T* read_pem(const std::string& name, const char* extension, T* (*read)(FILE*, T**, pem_password_cb*, void*)) {
    FILE* f = std::fopen(path(name + extension).c_str(), "r");
    REQUIRE(f != nullptr);
    T* object = read(f, nullptr, nullptr, nullptr);
    std::fclose(f);
    REQUIRE(object != nullptr);
    return object;
  }
  EVP_PKEY* read_key(const std::string& name) { return read_pem(name, ".key", &PEM_read_PrivateKey); }
  X509* read_cert(const std::string& name) { return read_pem(name, ".pem", &PEM_read_X509); }

  struct KeyFree {
    void operator()(EVP_PKEY* key) const noexcept { EVP_PKEY_free(key); }
  };
  std::filesystem::path dir_;
  long serial_ = 0;
  std::vector<std::unique_ptr<EVP_PKEY, KeyFree>> keys_;
};

}  // namespace ringmux::test
