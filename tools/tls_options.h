// The TLS options every ringmux tool takes the same way (--tls-cert, --tls-key, --tls-ca,
// --tls-peer-name, --tls-ktls), parsed into the library's mux::TlsOptions, and their one check: the
// three files go together, since both sides authenticate (mux/link/tls.h). Any thread.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "ringmux/mux/link/tls.h"

namespace ringmux::tools {

// Whether any of the three files was given (TLS is then on, or the options are wrong).
inline bool tls_enabled(const mux::TlsOptions& files) noexcept {
  return !files.cert_file.empty() || !files.key_file.empty() || !files.ca_file.empty();
}

// Takes `key` (without its dashes) into `files` when it is a TLS option; false when it is
// not one. An empty value is an error, set in `error`.
inline bool take_tls_option(mux::TlsOptions& files, std::string_view key, std::string_view value, std::string& error) {
  if (key == "tls-ktls") {
    if (value != "0" && value != "1") {
      error = "option '--tls-ktls': '" + std::string(value) + "' is not 0 or 1";
    } else {
      files.kernel_offload = value == "1";
    }
    return true;
  }
  std::string* field = key == "tls-cert"  ? &files.cert_file
                       : key == "tls-key" ? &files.key_file
                       : key == "tls-ca"  ? &files.ca_file
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
inline std::string tls_files_error(const mux::TlsOptions& files) {
  if (!tls_enabled(files)) {
    if (!files.peer_names.empty()) return "option '--tls-peer-name' needs --tls-cert, --tls-key and --tls-ca";
    return files.kernel_offload ? "" : "option '--tls-ktls' needs --tls-cert, --tls-key and --tls-ca";
  }
  std::string missing;
  for (const auto& [name, value] : {std::pair<const char*, const std::string*>{"--tls-cert", &files.cert_file},
                                    {"--tls-key", &files.key_file},
                                    {"--tls-ca", &files.ca_file}}) {
    if (!value->empty()) continue;
    missing += (missing.empty() ? "" : ", ") + std::string(name);
  }
  if (missing.empty()) return "";
  return "--tls-cert, --tls-key and --tls-ca go together (mutual TLS: each side shows a certificate and checks "
         "the other's); missing: " +
         missing;
}

}  // namespace ringmux::tools
