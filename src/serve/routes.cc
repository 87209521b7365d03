#include "serve/routes.h"

#include <cctype>
#include <future>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/log.h"
#include "serve/json_tensors.h"

namespace loom::serve {

// A request's route, as parsed from its method and target.
struct Route {
  enum Kind {
    kNotFound,
    kWrongMethod,
    kPreflight,
    kMetrics,
    kServer,
    kLive,
    kReady,
    kIndex,
    kLoad,
    kUnload,
    kModel,  // metadata, ready or infer of parts[2]
  } kind = kNotFound;
  std::string path;
  std::vector<std::string> parts;
  bool repository() const { return kind == kIndex || kind == kLoad || kind == kUnload; }
};

namespace {

using json = nlohmann::json;

// Names from a request may be any bytes: invalid UTF-8 is replaced, never thrown over.
HttpResponse Json(int status, const json& body) {
  HttpResponse r;
  r.status = status;
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

int HexDigit(char c) {
  return std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : std::tolower(c) - 'a' + 10;
}

std::string PercentDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(HexDigit(s[i + 1]) * 16 + HexDigit(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// The route of a request; kModel routes are told apart by HandleModel.
Route ParseRoute(const std::string& method, const std::string& target) {
  Route r;
  r.path = PercentDecode(std::string_view(target).substr(0, target.find('?')));
  r.parts = absl::StrSplit(r.path, '/', absl::SkipEmpty());
  const auto& p = r.parts;
  const bool get = method == "GET", post = method == "POST";
  auto want = [&](bool ok, Route::Kind kind) {
    r.kind = ok ? kind : Route::kWrongMethod;
    return r;
  };
  if (method == "OPTIONS") return want(true, Route::kPreflight);
  if (p.size() == 1 && p[0] == "metrics") return want(get, Route::kMetrics);
  if (p.empty() || p[0] != "v2") return r;
  if (p.size() == 1) return want(get, Route::kServer);
  if (p.size() == 3 && p[1] == "health" && p[2] == "live") return want(get, Route::kLive);
  if (p.size() == 3 && p[1] == "health" && p[2] == "ready") return want(get, Route::kReady);
  if (p[1] == "repository") {
    if (p.size() == 3 && p[2] == "index") return want(post, Route::kIndex);
    if (p.size() == 5 && p[2] == "models" && p[4] == "load") return want(post, Route::kLoad);
    if (p.size() == 5 && p[2] == "models" && p[4] == "unload") return want(post, Route::kUnload);
    return r;
  }
  if (p.size() >= 3 && p[1] == "models") {
    const size_t next = p.size() >= 5 && p[3] == "versions" ? 5 : 3;
    if (p.size() == next) return want(get, Route::kModel);
    if (p.size() == next + 1 && p[next] == "ready") return want(get, Route::kModel);
    if (p.size() == next + 1 && p[next] == "infer") return want(post, Route::kModel);
  }
  return r;
}

// A POST body's Content-Type must be JSON or binary tensors: a browser cannot send either
// across origins without asking first (CORS preflight), which this server answers only for the
// origins it allows.
bool AcceptedContentType(const std::string& field) {
  absl::string_view type(field);
  type = absl::StripAsciiWhitespace(type.substr(0, type.find(';')));
  return absl::EqualsIgnoreCase(type, "application/json") ||
         absl::EqualsIgnoreCase(type, "application/octet-stream") ||
         absl::EqualsIgnoreCase(type, "application/vnd.sagemaker-triton.binary+json");
}

void AddCors(HttpResponse& r, const std::string& origin) {
  r.headers.emplace_back("Access-Control-Allow-Origin", origin);
  r.headers.emplace_back("Vary", "Origin");
}

}  // namespace

HttpResponse HttpRoutes::Preflight(const HttpRequestHead& head) const {
  if (head.origin.empty() || !access_.OriginAllowed(head.origin)) {
    return ErrorResponse(403, "this origin is not allowed (--allow-origin)");
  }
  HttpResponse r;
  r.status = 204;
  AddCors(r, head.origin);
  r.headers.emplace_back("Access-Control-Allow-Methods", "GET, POST");
  r.headers.emplace_back("Access-Control-Allow-Headers",
                         "Authorization, Content-Type, Inference-Header-Content-Length");
  r.headers.emplace_back("Access-Control-Max-Age", "600");
  return r;
}

absl::Status HttpRoutes::Allowed(const Route& route, const HttpRequestHead& head) const {
  if (route.repository()) {
    if (plane_.model_control() == ModelControl::kNone) {
      return absl::PermissionDeniedError(
          "the model repository API is off: start the server with --model-control explicit");
    }
    return access_.CheckAdmin(head.authorization, listener_ == Listener::kAdmin);
  }
  if (listener_ == Listener::kAdmin) {
    return absl::NotFoundError("the admin listener serves the repository API and health only");
  }
  return access_.CheckInference(head.authorization);
}

HttpRoutes::Admission HttpRoutes::Admit(const HttpRequestHead& head,
                                        InflightBudget::Charge* charge) const {
  Admission a;
  const Route route = ParseRoute(head.method, head.target);
  a.health = route.kind == Route::kLive || route.kind == Route::kReady;
  const bool cross_origin = !head.origin.empty();
  if (route.kind == Route::kPreflight) {
    a.refusal = Preflight(head);
    return a;
  }
  if (!a.health && !access_.HostAllowed(head.host)) {
    a.refusal = ErrorResponse(403, "this server does not answer to that name (--allow-host)");
    return a;
  }
  if (head.method == "POST" && cross_origin && !access_.OriginAllowed(head.origin)) {
    a.refusal = ErrorResponse(403,
                              "cross-origin requests are refused: the origin is not "
                              "allowed (--allow-origin)");
    return a;
  }
  if (route.kind == Route::kNotFound) {
    a.refusal = ErrorResponse(404, absl::StrCat("no route ", route.path.substr(0, 300),
                                                " (this is a KServe v2 server: /v2/...)"));
    return a;
  }
  if (route.kind == Route::kWrongMethod) {
    a.refusal = ErrorResponse(405, absl::StrCat("method ", head.method.substr(0, 16),
                                                " is not allowed on ", route.path.substr(0, 300)));
    return a;
  }
  const absl::Status allowed = a.health ? absl::OkStatus() : Allowed(route, head);
  if (!allowed.ok()) {
    a.refusal = ErrorResponse(allowed);
    if (allowed.code() == absl::StatusCode::kUnauthenticated) {
      a.refusal->headers.emplace_back("WWW-Authenticate", "Bearer");
    }
    return a;
  }
  // (A chunked body, content_length -1, is a body too.)
  if (head.method == "POST" && head.content_length != 0 &&
      !AcceptedContentType(head.content_type)) {
    a.refusal = ErrorResponse(415,
                              "a POST body must be application/json or "
                              "application/octet-stream (binary tensors)");
    return a;
  }
  const bool infer = route.kind == Route::kModel && head.method == "POST";
  a.body_limit = infer ? plane_.limits().max_body_bytes : plane_.limits().max_admin_body_bytes;
  if (head.content_length > a.body_limit) {
    a.refusal = ErrorResponse(
        413, absl::StrCat("the request body is over the limit of ", a.body_limit, " bytes (",
                          infer ? "max_body_bytes" : "max_admin_body_bytes", ")"));
    return a;
  }
  const int64_t body = head.content_length >= 0 ? head.content_length : a.body_limit;
  if (absl::Status s = charge->Take(body); !s.ok()) a.refusal = ErrorResponse(s);
  return a;
}

void HttpRoutes::Handle(const HttpRequestHead& head, std::string body,
                        std::shared_ptr<const std::atomic<bool>> cancelled,
                        InflightBudget::Charge charge, Respond respond) {
  if (!head.origin.empty()) {  // admitted, so allowed: tell the browser so
    respond = [respond = std::move(respond), origin = head.origin](HttpResponse r) {
      AddCors(r, origin);
      respond(std::move(r));
    };
  }
  const Route route = ParseRoute(head.method, head.target);
  switch (route.kind) {
    case Route::kMetrics: {
      HttpResponse r;
      r.content_type = "text/plain; version=0.0.4";
      r.body = plane_.Metrics();
      return respond(std::move(r));
    }
    case Route::kServer: {
      const ServerMetadata m = plane_.Metadata();
      return respond(
          Json(200, {{"name", m.name}, {"version", m.version}, {"extensions", m.extensions}}));
    }
    case Route::kLive:
      if (!plane_.Live()) return respond(Json(503, {{"live", false}, {"error", plane_.Broken()}}));
      return respond(Json(200, {{"live", true}}));
    case Route::kReady: {
      const bool ready = plane_.Ready();
      return respond(Json(ready ? 200 : 503, {{"ready", ready}}));
    }
    case Route::kIndex:
    case Route::kLoad:
    case Route::kUnload:
      return HandleRepository(route.parts, body, std::move(respond));
    case Route::kModel: {
      const size_t next = route.parts.size() >= 5 && route.parts[3] == "versions" ? 5 : 3;
      if (route.parts.size() == next + 1 && route.parts[next] == "infer") {
        return HandleInfer(route.parts[2], next == 5 ? route.parts[4] : "", head, std::move(body),
                           std::move(cancelled), std::move(charge), std::move(respond));
      }
      return respond(HandleModel(route.parts, next));
    }
    default:
      return respond(ErrorResponse(404, "no route"));  // refused by Admit
  }
}

HttpResponse HttpRoutes::HandleModel(const std::vector<std::string>& parts, size_t next) {
  const std::string& model = parts[2];
  const std::string version = next == 5 ? parts[4] : "";
  if (parts.size() == next) {
    auto m = plane_.Metadata(model, version);
    if (!m.ok()) return ErrorResponse(m.status());
    auto tensors = [](const std::vector<TensorMetadata>& ts) {
      json out = json::array();
      for (const TensorMetadata& t : ts) {
        out.push_back({{"name", t.name}, {"datatype", WireTypeName(t.type)}, {"shape", t.shape}});
      }
      return out;
    };
    return Json(200, {{"name", m->name},
                      {"versions", m->versions},
                      {"platform", m->platform},
                      {"inputs", tensors(m->inputs)},
                      {"outputs", tensors(m->outputs)}});
  }
  const absl::Status s = plane_.ModelReady(model, version);
  if (s.code() == absl::StatusCode::kNotFound || s.code() == absl::StatusCode::kInvalidArgument) {
    return ErrorResponse(s);
  }
  return Json(s.ok() ? 200 : 503, {{"name", model}, {"ready", s.ok()}});
}

void HttpRoutes::HandleRepository(const std::vector<std::string>& parts, const std::string& body,
                                  Respond respond) {
  if (parts[2] == "index") {
    bool ready_only = false;
    if (!body.empty()) {  // small (max_admin_body_bytes), read with the same bounds as requests
      InflightBudget::Charge unused = plane_.budget().Open();
      auto parsed = ParseJsonRequest(body, plane_.limits(), &unused);
      if (!parsed.ok() || !parsed->header.is_object()) {
        return respond(ErrorResponse(400, "the index request is not a JSON object"));
      }
      const json& j = parsed->header;
      if (j.contains("ready")) {
        if (!j["ready"].is_boolean())
          return respond(ErrorResponse(400, "'ready' must be true or false"));
        ready_only = j["ready"].get<bool>();
      }
    }
    auto index = plane_.Index(ready_only);
    if (!index.ok()) return respond(ErrorResponse(index.status()));
    json out = json::array();
    for (const RepositoryEntry& e : *index) {
      json entry = {{"name", e.name}, {"state", e.state}};
      if (!e.version.empty()) entry["version"] = e.version;
      if (!e.reason.empty()) entry["reason"] = e.reason;
      out.push_back(std::move(entry));
    }
    return respond(Json(200, out));
  }
  const auto op = parts[4] == "load" ? DataPlane::AdminOp::kLoad : DataPlane::AdminOp::kUnload;
  plane_.SubmitAdmin(op, parts[3], [respond = std::move(respond)](absl::Status s) {
    respond(s.ok() ? Json(200, json::object()) : ErrorResponse(s));
  });
}

void HttpRoutes::HandleInfer(const std::string& model, const std::string& version,
                             const HttpRequestHead& head, std::string body,
                             std::shared_ptr<const std::atomic<bool>> cancelled,
                             InflightBudget::Charge charge, Respond respond) {
  // An unknown model is named before anything of the body is read.
  if (absl::Status s = plane_.ModelReady(model, version);
      s.code() == absl::StatusCode::kNotFound || s.code() == absl::StatusCode::kInvalidArgument) {
    return respond(ErrorResponse(s));
  }
  // The text lives where the binary inputs borrow it from until the answer; JSON-only requests
  // free it as soon as their tensors are decoded.
  auto text = std::make_shared<std::string>(std::move(body));
  bool borrows = false;
  auto request =
      ParseHttpInfer(model, version, *text, head.header_length, plane_.limits(), &charge, &borrows);
  if (!request.ok()) {
    plane_.CountRejected(model, "http", request.status());
    return respond(ErrorResponse(request.status()));
  }
  if (!borrows) text.reset();
  request->cancelled = std::move(cancelled);
  auto held = std::make_shared<InflightBudget::Charge>(std::move(charge));
  plane_.Infer(std::move(*request), "http",
               [respond = std::move(respond), text, held](absl::StatusOr<InferResponse> r) mutable {
                 HttpResponse out;
                 text.reset();
                 held->Release();  // the request's bytes are no longer held
                 if (r.ok()) {
                   // The answer's tensors are charged in their place until they are written
                   // (over the budget they are still written: they exist already, and new
                   // requests wait for them to go).
                   held->Hold(ResponseBytes(*r));
                   out.infer = std::make_shared<const InferResponse>(std::move(*r));
                   out.hold = std::move(held);
                 } else {
                   out = ErrorResponse(r.status());
                 }
                 respond(std::move(out));
               });
}

HttpResponse HandleHttp(HttpRoutes& routes, const HttpRequestHead& head_in, std::string body) {
  HttpRequestHead head = head_in;
  head.content_length = static_cast<int64_t>(body.size());
  InflightBudget::Charge charge = routes.plane().budget().Open();
  HttpRoutes::Admission a = routes.Admit(head, &charge);
  if (a.refusal) return std::move(*a.refusal);
  std::promise<HttpResponse> answer;
  std::future<HttpResponse> result = answer.get_future();
  routes.Handle(head, std::move(body), nullptr, std::move(charge),
                [&answer](HttpResponse r) { answer.set_value(std::move(r)); });
  HttpResponse r = result.get();
  EncodeDeferred(r);
  return r;
}

}  // namespace loom::serve
