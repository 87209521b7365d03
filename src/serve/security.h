// Who may use `loom serve`, shared by the HTTP and gRPC front ends: an optional inference token,
// the admin credential for the repository API (a token, or a separate admin listener on
// loopback), the browser origins allowed to POST, and the TLS files.
//
// Tokens come from files (never the command line, where `ps` shows them) and are compared in
// constant time (OpenSSL's CRYPTO_memcmp over SHA-256 digests, so neither the content nor the
// length leaks through timing). Health endpoints are always open, for probes.
//
// Thread safety: an Access is immutable after Create; every method may be called concurrently.
#ifndef LOOM_SERVE_SECURITY_H_
#define LOOM_SERVE_SECURITY_H_

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "loom/status.h"

namespace loom::serve {

struct TlsFiles {
  std::string cert, key;  // PEM: the server's certificate chain and private key
  std::string client_ca;  // PEM: CAs of client certificates; set: clients must present one (mTLS)
  bool enabled() const { return !cert.empty(); }
};

struct SecurityOptions {
  std::string auth_token_file;             // inference token; "": none
  std::string admin_token_file;            // repository API token; "": none
  std::vector<std::string> allow_origins;  // origins whose POSTs are accepted ("*": any)
  std::vector<std::string> allow_hosts;    // names the Host header may give (empty: any)
  bool admin_listener = false;  // the repository API is also served on the admin listener
  TlsFiles tls;
};

class Access {
 public:
  // Reads the token files (the first line, surrounding whitespace removed; 16 characters at
  // least) and checks the TLS files are readable. Errors name the flag.
  static absl::StatusOr<Access> Create(const SecurityOptions& options);
  // No token, no origin allowed: what a server without security flags does.
  Access() = default;

  // `authorization` is the request's Authorization header (gRPC: `authorization` metadata), or
  // "" when absent. OK, or UNAUTHENTICATED.
  absl::Status CheckInference(std::string_view authorization) const;
  // The repository API (with model control explicit): OK on the admin listener; elsewhere the
  // admin token is needed (UNAUTHENTICATED without it), or PERMISSION_DENIED when the API is only
  // served on the admin listener.
  absl::Status CheckAdmin(std::string_view authorization, bool on_admin_listener) const;
  // Whether a POST carrying `origin` (the Origin header) is accepted.
  bool OriginAllowed(std::string_view origin) const;
  // Whether a request's Host header (port aside) is one the server answers to: any, unless
  // --allow-host names some (a page whose own name resolves to this server, DNS rebinding, is
  // then refused).
  bool HostAllowed(std::string_view host) const;
  bool inference_token() const { return auth_.has_value(); }
  const TlsFiles& tls() const { return tls_; }

 private:
  using Digest = std::array<unsigned char, 32>;
  static bool Matches(std::string_view authorization, const Digest& token);

  std::optional<Digest> auth_, admin_;
  std::vector<std::string> origins_, hosts_;
  bool admin_listener_ = false;
  TlsFiles tls_;
};

// The contents of a file named by `flag` (TLS PEM files, tokens), or an error naming the flag.
absl::StatusOr<std::string> ReadSecretFile(const std::string& path, const std::string& flag);

}  // namespace loom::serve

#endif  // LOOM_SERVE_SECURITY_H_
