// The TLS options every ringmux tool takes the same way (--tls-cert, --tls-key, --tls-ca,
// --tls-peer-name) and their one check: the three files go together, since both sides
// authenticate (mux/link/tls.h). Pure: no part of the library, any thread.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace ringmux::tools {

struct TlsFiles {
  std::string cert;  // --tls-cert: our certificate chain, PEM
  std::string key;   // --tls-key: its private key, PEM
  std::string ca;    // --tls-ca: the CA a peer's certificate must chain to, PEM
  std::vector<std::string> peer_names;  // --tls-peer-name: one of them in the peer's SANs

  bool enabled() const noexcept { return !cert.empty() || !key.empty() || !ca.empty(); }
};

// Takes `key` (without its dashes) into `files` when it is a TLS option; false when it is
// not one. An empty value is an error, set in `error`.
inline bool take_tls_option(TlsFiles& files, std::string_view key, std::string_view value, std::string& error) {
  std::string* field = key == "tls-cert"  ? &files.cert
                       : key == "tls-key" ? &files.key
                       : key == "tls-ca"  ? &files.ca
                                          : nullptr;
  if (field == nullptr && key != "tls-peer-name") return false;
  if (value.empty()) {
    error = "option '--" + std::string(key) + "': '' is not " + (field != nullptr ? "a file name" : "a name");
    return true;
  }
  if (field != nullptr) {
    *field = std::string(value);
  } else {
    files.peer_names.emplace_back(value);
  }
  return true;
}

// "" when the options make sense together; otherwise what is wrong with them.
inline std::string tls_files_error(const TlsFiles& files) {
  if (!files.enabled()) {
    return files.peer_names.empty() ? "" : "option '--tls-peer-name' needs --tls-cert, --tls-key and --tls-ca";
  }
  std::string missing;
  for (const auto& [name, value] : {std::pair<const char*, const std::string*>{"--tls-cert", &files.cert},
                                    {"--tls-key", &files.key},
                                    {"--tls-ca", &files.ca}}) {
    if (!value->empty()) continue;
    missing += (missing.empty() ? "" : ", ") + std::string(name);
  }
  if (missing.empty()) return "";
  return "--tls-cert, --tls-key and --tls-ca go together (mutual TLS: each side shows a certificate and checks "
         "the other's); missing: " +
         missing;
}

}  // namespace ringmux::tools
