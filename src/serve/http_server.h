// The HTTP/REST front end of `loom serve`: the connection loop (Boost.Beast, asynchronous, over
// TCP or TLS through OpenSSL) around the routes of routes.h.
//
// A fixed set of threads runs the connections, each thread an io_context of its own and each
// connection on one thread (given in turn as they come): a connection waiting for a request costs a
// socket and a small buffer, not a thread, and its events are handled on the thread the kernel
// reports them to. Each connection's steps run in order: a TLS handshake, then for each request
// the first byte (within the idle timeout, or the header timeout for a new connection), the
// header (header timeout from its first byte), the route's checks (routes.h: credentials,
// Origin, Content-Type, body limit, in-flight budget — a refusal is answered before any of the
// body is read), the body (read timeout), the answer (written in place when the socket takes it).
// Deadlines are a number per connection, swept every 50 ms: no timer operation per request.
// An inference runs on the connection's thread when a worker of its model is idle (no hand-off;
// the thread's other connections wait that one run); otherwise the thread goes on with other
// connections, and the connection watches its socket meanwhile: a client that goes away has its
// queued request dropped (SubmitOptions::cancelled).
//
// At max_connections the longest-idle connection is closed to make room (a kept-alive connection
// with no request); if none is idle, a new connection is read for one request: health probes are
// answered, anything else 503. An accept that fails for want of file descriptors backs off.
//
// Lifecycle: Start → (serving) → Stop (no new connections; idle ones closed; requests being
// answered finish, within their timeouts, with `Connection: close`) → destroy.
#ifndef LOOM_SERVE_HTTP_SERVER_H_
#define LOOM_SERVE_HTTP_SERVER_H_

#include <memory>
#include <string>

#include "serve/data_plane.h"
#include "serve/routes.h"
#include "serve/security.h"

namespace loom::serve {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;     // 0: any free one
  int threads = 0;  // 0: DefaultThreads()
  Listener listener = Listener::kMain;
  bool tls = true;  // use the Access's TLS files when it has them
};

class HttpServer {
 public:
  ~HttpServer();  // Stop()
  // `plane` and `access` must outlive the server.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(DataPlane& plane, const Access& access,
                                                           const HttpServerOptions& options);
  // The usable cores (up to 16) plus 2: threads busy running a model inline leave others to
  // serve the other connections.
  static int DefaultThreads();
  int port() const;
  int connections() const;   // open now (not counting those being closed to make room)
  int64_t accepted() const;  // connections accepted since the start
  void Stop();

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace loom::serve

#endif  // LOOM_SERVE_HTTP_SERVER_H_
