// The handshake stage the tools build from their TLS options (tools/tls_options.h), and the
// line each prints to say which TLS path it uses. Called from a tool's main thread before
// its loops start.
#pragma once

#include <memory>
#include <string>

#include "ringmux/mux/link/tls.h"
#include "tools/tls_options.h"

namespace ringmux::tools {

// The TLS stage of `files` (nullptr without TLS options); nullptr and `error` naming the
// file and OpenSSL's reason when the files cannot make a context.
inline std::shared_ptr<mux::Handshake> tls_stage(const mux::TlsOptions& files, std::string& error) {
  if (!tls_enabled(files)) return nullptr;
  std::shared_ptr<const mux::TlsContext> context = mux::TlsContext::create(files, error);
  if (!context) return nullptr;
  return mux::make_tls_handshake(std::move(context));
}

// "TLS 1.3, mutual certificates, user-space record layer (OpenSSL; no kTLS in this
// kernel)": which path the tool's connections take with `files`.
inline std::string tls_path_text(bool server, const mux::TlsOptions& files) {
  std::string text = "TLS 1.3, mutual certificates";
  text += server ? " (clients must present one of --tls-ca)" : "";
  if (!files.kernel_offload) return text + ", user-space record layer (OpenSSL; kTLS turned off by --tls-ktls=0)";
  text += mux::tls_kernel_offload_available()
              ? ", record layer in the kernel (kTLS) after each handshake; in user space (OpenSSL) for a "
                "connection whose keys the kernel refuses (logged)"
              : ", user-space record layer (OpenSSL; no kTLS in this kernel)";
  return text;
}

}  // namespace ringmux::tools
