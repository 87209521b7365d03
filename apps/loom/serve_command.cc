// `loom serve`: the models of a repository folder (or given one by one) behind a KServe v2 /
// Open Inference Protocol server, HTTP/REST and gRPC, on one plan of the machine's cores.
//
// Safe by default: it listens on 127.0.0.1, the repository API is off (--model-control none), and
// every limit is on. docs/serving.md says how to expose it: TLS, tokens, model control.
//
// SIGTERM or SIGINT drains: with --drain-delay-s the server first reports not ready while it goes
// on answering (load balancers move away); then it refuses new requests (503 / UNAVAILABLE),
// answers every request it accepted, and exits 0 (or 1 if --drain-timeout-s passed with requests
// still in flight).
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>

#include <cstdlib>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "apps/loom/commands.h"
#include "apps/loom/options.h"
#include "serve/data_plane.h"
#include "serve/grpc_server.h"
#include "serve/http_server.h"
#include "serve/security.h"

namespace loom::cli {
namespace {

struct ServeArgs {
  std::string repository;
  std::vector<std::string> models;  // name=path
  std::string host = "127.0.0.1";
  int http_port = 8000;
  int grpc_port = 8001;
  int admin_port = -1;   // -1: no admin listener
  int http_threads = 0;  // 0: HttpServer::DefaultThreads()
  int grpc_threads = 0;  // 0: GrpcServer::DefaultThreads()
  int cores = 0;
  std::string hint = "adaptive";
  std::string model_control = "none";
  serve::SecurityOptions security;
  int64_t max_body_mib = 64;
  int64_t max_inflight_mib = 512;
  int max_connections = 1024;
  int read_timeout_ms = 10000;
  int header_timeout_ms = 5000;
  int idle_timeout_s = 60;
  int drain_timeout_s = 30;
  int drain_delay_s = 0;
  std::string ports_file;  // where to write the ports taken (tests: --http-port 0)
};

int Fail(const absl::Status& s) {
  std::cerr << "loom serve: " << s.message() << "\n";
  return kExitRuntimeError;
}

// The file descriptor limit raised as far as allowed; the connection cap kept under it.
int FitConnections(int wanted) {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) return wanted;
  if (r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
    getrlimit(RLIMIT_NOFILE, &r);
  }
  constexpr rlim_t kReserve = 256;  // models, gRPC connections, logs
  const rlim_t room = r.rlim_cur > 2 * kReserve ? r.rlim_cur - kReserve : r.rlim_cur / 2;
  if (static_cast<rlim_t>(wanted) <= room) return wanted;
  std::cerr << "loom serve: --max-connections " << wanted << " lowered to " << room
            << " (the file descriptor limit is " << r.rlim_cur << ")\n";
  return static_cast<int>(room);
}

absl::StatusOr<serve::DataPlaneOptions> PlaneOptions(const ServeArgs& a) {
  serve::DataPlaneOptions options;
  options.repository = a.repository;
  for (const std::string& m : a.models) {
    LOOM_ASSIGN_OR_RETURN(auto name_path, ParseNamePath("--model", m, "NAME=PATH.onnx"));
    options.models.push_back(std::move(name_path));
  }
  if (options.repository.empty() && options.models.empty()) {
    return absl::InvalidArgumentError(
        "nothing to serve: give --repository DIR or --model NAME=PATH");
  }
  options.engine.cores = a.cores;
  options.engine.hint = a.hint == "latency"      ? PlanHint::kLatency
                        : a.hint == "throughput" ? PlanHint::kThroughput
                                                 : PlanHint::kAdaptive;
  options.model_control =
      a.model_control == "explicit" ? serve::ModelControl::kExplicit : serve::ModelControl::kNone;
  if (options.model_control == serve::ModelControl::kExplicit &&
      a.security.admin_token_file.empty() && a.admin_port < 0) {
    return absl::InvalidArgumentError(
        "--model-control explicit needs an admin credential: --admin-token-file FILE, or "
        "--admin-port PORT (a listener on 127.0.0.1 for the repository API)");
  }
  serve::ServeLimits& l = options.limits;
  l.max_body_bytes = a.max_body_mib << 20;
  l.max_inflight_bytes = a.max_inflight_mib << 20;
  l.max_connections = FitConnections(a.max_connections);
  l.read_timeout_ms = a.read_timeout_ms;
  l.header_timeout_ms = a.header_timeout_ms;
  l.idle_timeout_ms = int64_t{a.idle_timeout_s} * 1000;
  return options;
}

struct Servers {
  std::unique_ptr<serve::HttpServer> http, admin;
  std::unique_ptr<serve::GrpcServer> grpc;
};

absl::Status StartServers(serve::DataPlane& plane, const serve::Access& access, const ServeArgs& a,
                          Servers& s) {
  serve::HttpServerOptions http;
  http.host = a.host;
  http.port = a.http_port;
  http.threads = a.http_threads;
  LOOM_ASSIGN_OR_RETURN(s.http, serve::HttpServer::Start(plane, access, http));
  if (a.admin_port >= 0) {
    serve::HttpServerOptions admin;
    admin.host = "127.0.0.1";  // loopback only, whatever --host says
    admin.port = a.admin_port;
    admin.threads = 2;
    admin.listener = serve::Listener::kAdmin;
    admin.tls = false;
    LOOM_ASSIGN_OR_RETURN(s.admin, serve::HttpServer::Start(plane, access, admin));
  }
  serve::GrpcServerOptions grpc;
  grpc.host = a.host;
  grpc.port = a.grpc_port;
  grpc.threads = a.grpc_threads;
  LOOM_ASSIGN_OR_RETURN(s.grpc, serve::GrpcServer::Start(plane, access, grpc));
  return absl::OkStatus();
}

void Announce(const ServeArgs& a, const serve::Access& access, const Servers& s) {
  const char* scheme = access.tls().enabled() ? "https" : "http";
  std::cout << absl::StrFormat("loom serve: HTTP on %s://%s:%d, gRPC on %s:%d%s (KServe v2)",
                               scheme, a.host, s.http->port(), a.host, s.grpc->port(),
                               access.tls().enabled() ? " with TLS" : "");
  if (s.admin) std::cout << ", repository API on http://127.0.0.1:" << s.admin->port();
  std::cout << "; model control " << a.model_control << "; SIGTERM drains\n" << std::flush;
  const bool loopback = a.host == "127.0.0.1" || a.host == "::1" || a.host == "localhost";
  if (!loopback && (!access.tls().enabled() || !access.inference_token())) {
    std::cout << "loom serve: warning: listening on " << a.host << " without "
              << (access.tls().enabled() ? "an inference token (--auth-token-file)"
                                         : "TLS (--tls-cert, --tls-key)")
              << ": anyone who can reach this port can use it (see docs/serving.md)\n"
              << std::flush;
  }
}

// After SIGTERM: not ready for --drain-delay-s (a second signal cuts it short), then no new
// requests; every accepted one is answered. True if all were, within --drain-timeout-s.
bool Drain(serve::DataPlane& plane, Servers& s, const ServeArgs& a, const sigset_t& signals) {
  if (a.drain_delay_s > 0) {
    plane.AnnounceDrain();
    std::cout << "loom serve: not ready; still serving for " << a.drain_delay_s << " s\n"
              << std::flush;
    const timespec delay{a.drain_delay_s, 0};
    sigtimedwait(&signals, nullptr, &delay);
  }
  std::cout << "loom serve: draining " << plane.in_flight() << " requests in flight\n"
            << std::flush;
  const auto timeout = std::chrono::seconds(a.drain_timeout_s);
  // gRPC stops taking calls at once (its listener closes and clients get GOAWAY, so a proxy or a
  // client retries elsewhere) while the calls it accepted finish; HTTP answers 503 with
  // `Connection: close` until every accepted request is answered, then closes.
  std::thread grpc_drain(
      [&] { s.grpc->Shutdown(std::chrono::duration_cast<std::chrono::milliseconds>(timeout)); });
  plane.BeginDrain();
  const bool idle = plane.WaitIdle(timeout);
  grpc_drain.join();
  return idle;
}

int Serve(const ServeArgs& a) {
  // Block the stop signals before any thread starts, so that every thread inherits the mask and
  // only sigwait below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that hangs up is an error on its socket, not the end of us

  auto options = PlaneOptions(a);
  if (!options.ok()) return Fail(options.status());
  auto security = a.security;
  security.admin_listener = a.admin_port >= 0;
  auto access = serve::Access::Create(security);
  if (!access.ok()) return Fail(access.status());
  auto plane = serve::DataPlane::Create(std::move(*options));
  if (!plane.ok()) return Fail(plane.status());
  Servers servers;
  if (absl::Status s = StartServers(**plane, *access, a, servers); !s.ok()) return Fail(s);
  Announce(a, *access, servers);
  if (!a.ports_file.empty()) {
    FILE* f = std::fopen(a.ports_file.c_str(), "w");
    if (f == nullptr) {
      return Fail(absl::UnavailableError(absl::StrCat("cannot write --ports-file ", a.ports_file)));
    }
    std::fprintf(f, "%d %d", servers.http->port(), servers.grpc->port());
    if (servers.admin) std::fprintf(f, " %d", servers.admin->port());
    std::fprintf(f, "\n");
    std::fclose(f);
  }
  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  std::cout << "loom serve: " << (signal_number == SIGTERM ? "SIGTERM" : "SIGINT") << "\n"
            << std::flush;
  if (!Drain(**plane, servers, a, stop_signals)) {
    // A request still unanswered after --drain-timeout-s must not hold the process: say so and go.
    std::cout << "loom serve: drain timed out with " << (*plane)->in_flight()
              << " requests in flight; exiting" << std::endl;
    std::_Exit(kExitRuntimeError);
  }
  if (servers.admin) servers.admin->Stop();
  servers.http->Stop();
  std::cout << "loom serve: drained, every accepted request answered\n";
  return kExitOk;
}

void AddSecurityOptions(CLI::App& app, ServeArgs& a) {
  app.add_option("--model-control", a.model_control,
                 "none: the repository API is refused (403); explicit: load and unload with the "
                 "admin credential")
      ->check(CLI::IsMember({"none", "explicit"}))
      ->capture_default_str();
  app.add_option("--admin-token-file", a.security.admin_token_file,
                 "File holding the token for the repository API (Authorization: Bearer ...)");
  app.add_option("--admin-port", a.admin_port,
                 "Serve the repository API on this port of 127.0.0.1 (0: any free one)")
      ->check(CLI::Range(0, 65535));
  app.add_option("--auth-token-file", a.security.auth_token_file,
                 "File holding the token every request needs, health checks aside");
  app.add_option("--allow-origin", a.security.allow_origins,
                 "A browser origin allowed to POST (repeatable; others are refused)");
  app.add_option("--allow-host", a.security.allow_hosts,
                 "A name the Host header may give (repeatable; others are refused; default: any)");
  app.add_option("--tls-cert", a.security.tls.cert,
                 "PEM certificate chain: serve HTTPS and TLS gRPC");
  app.add_option("--tls-key", a.security.tls.key, "PEM private key of --tls-cert");
  app.add_option("--tls-client-ca", a.security.tls.client_ca,
                 "PEM CA bundle: clients must present a certificate it signed (mTLS)");
}

void AddLimitOptions(CLI::App& app, ServeArgs& a) {
  app.add_option("--max-body-mib", a.max_body_mib,
                 "Largest inference body (HTTP) or message (gRPC), MiB")
      ->check(CLI::Range(1, 2047))
      ->capture_default_str();
  app.add_option("--max-inflight-mib", a.max_inflight_mib,
                 "Bytes of requests held at once, both protocols; beyond: 503 / RESOURCE_EXHAUSTED")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  app.add_option("--max-connections", a.max_connections,
                 "HTTP connections at once; beyond, the longest idle one is closed")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  app.add_option("--header-timeout-ms", a.header_timeout_ms,
                 "Longest time for a request's header (and a TLS handshake)")
      ->check(CLI::Range(100, 600000))
      ->capture_default_str();
  app.add_option("--read-timeout-ms", a.read_timeout_ms, "Longest time to read a request's body")
      ->check(CLI::Range(100, 3600000))
      ->capture_default_str();
  app.add_option("--idle-timeout-s", a.idle_timeout_s, "A kept-alive connection with no request")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
  app.add_option("--drain-delay-s", a.drain_delay_s,
                 "Seconds to answer while reporting not ready, on SIGTERM, before refusing")
      ->check(CLI::Range(0, 3600))
      ->capture_default_str();
  HiddenAlias(app, "--drain-delay", a.drain_delay_s)->check(NamedRange("--drain-delay", 0, 3600));
  app.add_option("--drain-timeout-s", a.drain_timeout_s,
                 "Seconds to finish accepted requests on SIGTERM")
      ->check(CLI::Range(0, 3600))
      ->capture_default_str();
  HiddenAlias(app, "--drain-timeout", a.drain_timeout_s)
      ->check(NamedRange("--drain-timeout", 0, 3600));
}

}  // namespace

CommandFn AddServeCommand(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  app.add_option("--repository", a->repository,
                 "Model repository: one folder per model (an .onnx file and an optional "
                 "config.yaml, or a pipeline.yaml served as one model)");
  app.add_option("--model", a->models, "NAME=PATH.onnx, repeatable");
  app.add_option("--host", a->host, "Address to listen on (0.0.0.0: every interface)")
      ->capture_default_str();
  app.add_option("--http-port", a->http_port, "HTTP/REST port (0: any free one)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  app.add_option("--grpc-port", a->grpc_port, "gRPC port (0: any free one)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  app.add_option("--http-threads", a->http_threads,
                 "HTTP threads, which also run a model inline when its worker is idle (0: the "
                 "usable cores, up to 16, plus 2)")
      ->check(CLI::Range(0, 256));
  app.add_option("--grpc-threads", a->grpc_threads,
                 "gRPC completion queues, a thread each, that also run a model inline when its "
                 "worker is idle (0: the usable cores, up to 16, plus 2)")
      ->check(CLI::Range(0, 256));
  app.add_option("--cores", a->cores, "Use only the first N usable cores")
      ->check(CLI::Range(0, 4096));
  app.add_option("--hint", a->hint, "Plan: adaptive, throughput or latency")
      ->check(CLI::IsMember({"adaptive", "throughput", "latency"}))
      ->capture_default_str();
  AddSecurityOptions(app, *a);
  AddLimitOptions(app, *a);
  app.add_option("--ports-file", a->ports_file,
                 "Write 'HTTP_PORT GRPC_PORT [ADMIN_PORT]' here once listening");
  return [a] { return Serve(*a); };
}

}  // namespace loom::cli
