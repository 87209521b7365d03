#include "serve/security.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace loom::serve {
namespace {

constexpr size_t kMinTokenLength = 16;
constexpr int64_t kMaxSecretFile = 1 << 20;

std::array<unsigned char, 32> Sha256(std::string_view data) {
  std::array<unsigned char, 32> digest{};
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), digest.data(), &length, EVP_sha256(), nullptr);
  return digest;
}

absl::StatusOr<std::array<unsigned char, 32>> ReadToken(const std::string& path,
                                                        const std::string& flag) {
  LOOM_ASSIGN_OR_RETURN(std::string text, ReadSecretFile(path, flag));
  std::string token(absl::StripAsciiWhitespace(text.substr(0, text.find('\n'))));
  if (token.size() < kMinTokenLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, " ", path, ": the token has ", token.size(), " characters; use at least ",
        kMinTokenLength, " (e.g. openssl rand -hex 32)"));
  }
  for (char c : token) {
    if (static_cast<unsigned char>(c) < 0x21 || static_cast<unsigned char>(c) > 0x7e) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, " ", path, ": the token must be printable ASCII without spaces"));
    }
  }
  return Sha256(token);
}

}  // namespace

absl::StatusOr<std::string> ReadSecretFile(const std::string& path, const std::string& flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(flag, " ", path, ": cannot read the file"));
  std::string text;
  char buffer[4096];
  while (in.read(buffer, sizeof(buffer)) || in.gcount() > 0) {
    text.append(buffer, static_cast<size_t>(in.gcount()));
    if (static_cast<int64_t>(text.size()) > kMaxSecretFile) {
      return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": over 1 MiB"));
    }
  }
  return text;
}

absl::StatusOr<Access> Access::Create(const SecurityOptions& options) {
  Access a;
  if (!options.auth_token_file.empty()) {
    LOOM_ASSIGN_OR_RETURN(a.auth_, ReadToken(options.auth_token_file, "--auth-token-file"));
  }
  if (!options.admin_token_file.empty()) {
    LOOM_ASSIGN_OR_RETURN(a.admin_, ReadToken(options.admin_token_file, "--admin-token-file"));
  }
  a.origins_ = options.allow_origins;
  for (const std::string& h : options.allow_hosts) a.hosts_.push_back(absl::AsciiStrToLower(h));
  a.admin_listener_ = options.admin_listener;
  a.tls_ = options.tls;
  if (a.tls_.cert.empty() != a.tls_.key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (!a.tls_.client_ca.empty() && !a.tls_.enabled()) {
    return absl::InvalidArgumentError("--tls-client-ca needs --tls-cert and --tls-key");
  }
  const std::vector<std::pair<std::string, std::string>> files = {
      {a.tls_.cert, "--tls-cert"},
      {a.tls_.key, "--tls-key"},
      {a.tls_.client_ca, "--tls-client-ca"}};
  for (const auto& [file, flag] : files) {
    if (!file.empty()) LOOM_RETURN_IF_ERROR(ReadSecretFile(file, flag).status());
  }
  return a;
}

bool Access::Matches(std::string_view authorization, const Digest& token) {
  constexpr std::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(absl::string_view(authorization.data(), kScheme.size()),
                              absl::string_view(kScheme.data(), kScheme.size()))) {
    return false;
  }
  std::string_view presented = authorization.substr(kScheme.size());
  while (!presented.empty() && presented.front() == ' ') presented.remove_prefix(1);
  const Digest digest = Sha256(presented);
  return CRYPTO_memcmp(digest.data(), token.data(), digest.size()) == 0;
}

absl::Status Access::CheckInference(std::string_view authorization) const {
  if (!auth_ || Matches(authorization, *auth_)) return absl::OkStatus();
  // The admin token may do whatever the inference token may.
  if (admin_ && Matches(authorization, *admin_)) return absl::OkStatus();
  return absl::UnauthenticatedError(authorization.empty()
                                        ? "this server needs a token: Authorization: Bearer <token>"
                                        : "the token is not this server's");
}

absl::Status Access::CheckAdmin(std::string_view authorization, bool on_admin_listener) const {
  if (on_admin_listener) return absl::OkStatus();
  if (admin_) {
    if (Matches(authorization, *admin_)) return absl::OkStatus();
    return absl::UnauthenticatedError(
        authorization.empty()
            ? "the repository API needs the admin token: Authorization: Bearer <token>"
            : "the token is not this server's admin token");
  }
  return absl::PermissionDeniedError(
      admin_listener_ ? "the repository API is served on the admin listener only (--admin-port)"
                      : "the repository API needs --admin-token-file or --admin-port");
}

bool Access::OriginAllowed(std::string_view origin) const {
  return std::any_of(origins_.begin(), origins_.end(),
                     [&](const std::string& o) { return o == "*" || o == origin; });
}

bool Access::HostAllowed(std::string_view host) const {
  if (hosts_.empty()) return true;
  // "name", "name:port", "[v6]", "[v6]:port": the name, lower case; anything else (no Host,
  // a port that is not a number) is refused.
  std::string_view name = host, port;
  if (!host.empty() && host.front() == '[') {
    const size_t close = host.find(']');
    if (close == std::string_view::npos) return false;
    name = host.substr(0, close + 1);
    const std::string_view rest = host.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':' || rest.size() == 1) return false;
      port = rest.substr(1);
    }
  } else if (const size_t colon = host.find(':'); colon != std::string_view::npos) {
    name = host.substr(0, colon);
    port = host.substr(colon + 1);
    if (port.empty()) return false;
  }
  if (name.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return false;
  }
  const std::string lower = absl::AsciiStrToLower(std::string(name));
  return std::find(hosts_.begin(), hosts_.end(), lower) != hosts_.end();
}

}  // namespace loom::serve
