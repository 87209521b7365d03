// The HTTP/REST front end of `loom serve` (Boost.Beast): the Open Inference Protocol's REST
// routes, JSON tensors and Triton's binary tensor data extension, the repository extension and
// Prometheus /metrics — translated onto the DataPlane, nothing more.
//
// Each connection is served by its own thread with blocking reads bounded by a timeout (a slow or
// silent client holds a connection thread, never an engine worker); beyond max_connections a
// connection is answered 503 and closed. Request headers and bodies are bounded before they are
// read.
//
// Lifecycle: Start → (serving) → Stop (no new connections; idle ones closed; requests being
// answered finish) → destroy.
#ifndef LOOM_SERVE_HTTP_SERVER_H_
#define LOOM_SERVE_HTTP_SERVER_H_

#include <memory>
#include <string>

#include "serve/data_plane.h"

namespace loom::serve {

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  int64_t header_length = -1;  // Inference-Header-Content-Length, when >= 0
};

// One request, routed: method, target ("/v2/models/m/infer?x"), the header's value of
// Inference-Header-Content-Length (or nullopt) and the body. Exposed for the fuzzer and tests.
HttpResponse HandleHttp(DataPlane& plane, const std::string& method, const std::string& target,
                        std::optional<std::string> header_length, const std::string& body);

class HttpServer {
 public:
  ~HttpServer();  // Stop()
  // Listens on host:port (port 0: any free one).
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(DataPlane& plane, const std::string& host, int port);
  int port() const;
  void Stop();

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace loom::serve

#endif  // LOOM_SERVE_HTTP_SERVER_H_
