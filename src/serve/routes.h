// The HTTP/REST routes of `loom serve`: the Open Inference Protocol's REST API, the repository
// extension and Prometheus /metrics, translated onto the DataPlane, with the checks that come
// before any of them: the credentials (security.h), the Origin of POSTs, the Content-Type of POST
// bodies, the body limit of each route and the shared in-flight budget. Independent of the
// connection loop (http_server.cc), which calls Admit once a request's header is read and Handle
// once its body is.
//
// Thread safety: Admit and Handle may be called from any number of threads at once.
#ifndef LOOM_SERVE_ROUTES_H_
#define LOOM_SERVE_ROUTES_H_

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "serve/data_plane.h"
#include "serve/http_codec.h"
#include "serve/security.h"

namespace loom::serve {

// A request's header, as the routes need it.
struct HttpRequestHead {
  std::string method;                                     // "GET", "POST", ...
  std::string target;                                     // "/v2/models/m/infer?x"
  std::string host, content_type, origin, authorization;  // "" when absent
  std::optional<std::string> header_length;               // Inference-Header-Content-Length
  int64_t content_length = 0;
};

// Which listener a request came to: the main one, or the admin listener (repository API and
// health only, on loopback).
enum class Listener { kMain, kAdmin };

struct Route;  // routes.cc

class HttpRoutes {
 public:
  // `plane` and `access` must outlive this.
  HttpRoutes(DataPlane& plane, const Access& access, Listener listener)
      : plane_(plane), access_(access), listener_(listener) {}

  struct Admission {
    std::optional<HttpResponse> refusal;  // answered at once; the body is never read
    int64_t body_limit = 0;               // otherwise: the most body bytes this route takes
    bool health = false;                  // a health probe (answered even over the cap)
  };
  // After the header, before the body: a refusal, or the body limit. The body's bytes are added
  // to `charge` (the in-flight budget) here.
  Admission Admit(const HttpRequestHead& head, InflightBudget::Charge* charge) const;

  using Respond = std::function<void(HttpResponse)>;
  // Answers an admitted request: `respond` is called exactly once, here or later on an engine
  // worker or the admin thread. `cancelled` is set by the connection when its client goes away.
  void Handle(const HttpRequestHead& head, std::string body,
              std::shared_ptr<const std::atomic<bool>> cancelled, InflightBudget::Charge charge,
              Respond respond);

  DataPlane& plane() { return plane_; }

 private:
  HttpResponse Preflight(const HttpRequestHead& head) const;
  // Whether the request's credentials allow its route (health aside).
  absl::Status Allowed(const Route& route, const HttpRequestHead& head) const;
  void HandleInfer(const std::string& model, const std::string& version,
                   const HttpRequestHead& head, std::string body,
                   std::shared_ptr<const std::atomic<bool>> cancelled,
                   InflightBudget::Charge charge, Respond respond);
  void HandleRepository(const std::vector<std::string>& parts, const std::string& body,
                        Respond respond);
  HttpResponse HandleModel(const std::vector<std::string>& parts, size_t next);

  DataPlane& plane_;
  const Access& access_;
  const Listener listener_;
};

// One request answered synchronously, its deferred encoding done (tests and the fuzzer).
HttpResponse HandleHttp(HttpRoutes& routes, const HttpRequestHead& head, std::string body);

}  // namespace loom::serve

#endif  // LOOM_SERVE_ROUTES_H_
