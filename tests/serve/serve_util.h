// Helpers of the server's tests: raw HTTP over loopback sockets, request heads for the routes,
// and the process's own resource counts.
#ifndef LOOM_TESTS_SERVE_SERVE_UTIL_H_
#define LOOM_TESTS_SERVE_SERVE_UTIL_H_

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "serve/routes.h"

namespace loom::serve::testing {

// A connected loopback socket to `port` (-1 on failure).
inline int Connect(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Reads what comes back on `fd` until the server closes it or `timeout_s` passes with nothing.
inline std::string ReadAll(int fd, int timeout_s = 5) {
  timeval timeout{timeout_s, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  std::string out;
  char buffer[4096];
  for (;;) {
    const ssize_t r = ::recv(fd, buffer, sizeof(buffer), 0);
    if (r < 0) out += "<no answer, not closed>";  // the receive timeout
    if (r <= 0) break;
    out.append(buffer, static_cast<size_t>(r));
  }
  return out;
}

// Sends raw bytes over a fresh connection (in `chunk`-byte pieces, `pause_ms` apart) and returns
// what came back. With `half_close`, the client says it is done sending.
inline std::string RawHttp(int port, const std::string& bytes, int chunk = 0, int pause_ms = 0,
                           bool half_close = false) {
  const int fd = Connect(port);
  if (fd < 0) return "<connect failed>";
  size_t sent = 0;
  while (sent < bytes.size()) {
    const size_t n = chunk > 0 ? std::min<size_t>(chunk, bytes.size() - sent) : bytes.size() - sent;
    const ssize_t w = ::send(fd, bytes.data() + sent, n, MSG_NOSIGNAL);
    if (w <= 0) break;
    sent += static_cast<size_t>(w);
    if (pause_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
  }
  if (half_close) ::shutdown(fd, SHUT_WR);
  std::string out = ReadAll(fd);
  ::close(fd);
  return out;
}

// A request head as a client sends it: JSON bodies for POSTs.
inline HttpRequestHead Head(const std::string& method, const std::string& target,
                            const std::string& content_type = "application/json") {
  HttpRequestHead h;
  h.method = method;
  h.target = target;
  if (method == "POST") h.content_type = content_type;
  return h;
}

// Threads of this process now.
inline int ThreadCount() {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) n += e.exists();
  return n;
}

}  // namespace loom::serve::testing

#endif  // LOOM_TESTS_SERVE_SERVE_UTIL_H_
