// `loom serve`: the models of a repository folder (or given one by one) behind a KServe v2 /
// Open Inference Protocol server, HTTP/REST and gRPC, on one plan of the machine's cores.
//
// SIGTERM or SIGINT drains: the server stops being ready and refuses new requests (503 /
// UNAVAILABLE), answers every request it accepted, then exits 0 (or 1 if --drain-timeout passed
// with requests still in flight).
#include <pthread.h>
#include <signal.h>

#include <cstdlib>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "apps/loom/commands.h"
#include "serve/data_plane.h"
#include "serve/grpc_server.h"
#include "serve/http_server.h"

namespace loom::cli {
namespace {

struct ServeArgs {
  std::string repository;
  std::vector<std::string> models;  // name=path
  std::string host = "0.0.0.0";
  int http_port = 8000;
  int grpc_port = 8001;
  int grpc_threads = 0;  // 0: GrpcServer::DefaultThreads()
  int cores = 0;
  std::string hint = "adaptive";
  int64_t max_body_mib = 64;
  int max_connections = 256;
  int read_timeout_ms = 10000;
  int drain_timeout_s = 30;
  std::string ports_file;  // where to write the ports taken (tests: --http-port 0)
};

int Serve(const ServeArgs& a) {
  auto fail = [](const absl::Status& s) {
    std::cerr << "loom serve: " << s.message() << "\n";
    return kExitRuntimeError;
  };
  // Block the stop signals before any thread starts, so that every thread inherits the mask and
  // only sigwait below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that hangs up is an error on its socket, not the end of us

  serve::DataPlaneOptions options;
  options.repository = a.repository;
  for (const std::string& m : a.models) {
    const size_t eq = m.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == m.size()) {
      return fail(absl::InvalidArgumentError(absl::StrCat("--model '", m, "': expected NAME=PATH.onnx")));
    }
    options.models.emplace_back(m.substr(0, eq), m.substr(eq + 1));
  }
  if (options.repository.empty() && options.models.empty()) {
    return fail(absl::InvalidArgumentError("nothing to serve: give --repository DIR or --model NAME=PATH"));
  }
  options.engine.cores = a.cores;
  options.engine.hint = a.hint == "latency"      ? PlanHint::kLatency
                        : a.hint == "throughput" ? PlanHint::kThroughput
                                                 : PlanHint::kAdaptive;
  options.limits.max_body_bytes = a.max_body_mib << 20;
  options.limits.max_connections = a.max_connections;
  options.limits.read_timeout_ms = a.read_timeout_ms;

  auto plane = serve::DataPlane::Create(std::move(options));
  if (!plane.ok()) return fail(plane.status());
  auto http = serve::HttpServer::Start(**plane, a.host, a.http_port);
  if (!http.ok()) return fail(http.status());
  auto grpc = serve::GrpcServer::Start(**plane, a.host, a.grpc_port, a.grpc_threads);
  if (!grpc.ok()) return fail(grpc.status());

  std::cout << absl::StrFormat("loom serve: HTTP on %s:%d, gRPC on %s:%d (KServe v2); SIGTERM drains\n", a.host,
                               (*http)->port(), a.host, (*grpc)->port())
            << std::flush;
  if (!a.ports_file.empty()) {
    FILE* f = std::fopen(a.ports_file.c_str(), "w");
    if (f == nullptr) return fail(absl::UnavailableError(absl::StrCat("cannot write --ports-file ", a.ports_file)));
    std::fprintf(f, "%d %d\n", (*http)->port(), (*grpc)->port());
    std::fclose(f);
  }

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  std::cout << "loom serve: " << (signal_number == SIGTERM ? "SIGTERM" : "SIGINT") << ", draining "
            << (*plane)->in_flight() << " requests in flight\n"
            << std::flush;
  const auto timeout = std::chrono::seconds(a.drain_timeout_s);
  // gRPC stops taking calls at once (its listener closes and clients get GOAWAY, so a proxy or a
  // client retries elsewhere) while the calls it accepted finish; HTTP answers 503 with
  // `Connection: close` until every accepted request is answered, then closes.
  std::thread grpc_drain([&] { (*grpc)->Shutdown(std::chrono::duration_cast<std::chrono::milliseconds>(timeout)); });
  (*plane)->BeginDrain();
  const bool idle = (*plane)->WaitIdle(timeout);
  grpc_drain.join();
  if (!idle) {
    // A request still unanswered after --drain-timeout must not hold the process: say so and go.
    std::cout << "loom serve: drain timed out with " << (*plane)->in_flight() << " requests in flight; exiting"
              << std::endl;
    std::_Exit(kExitRuntimeError);
  }
  (*http)->Stop();
  std::cout << "loom serve: " << (idle ? "drained, every accepted request answered" : "drain timed out") << "\n";
  return idle ? kExitOk : kExitRuntimeError;
}

}  // namespace

CommandFn AddServeCommand(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  app.add_option("--repository", a->repository,
                 "Model repository: one folder per model (an .onnx file and an optional config.yaml, or a "
                 "pipeline.yaml served as one model)");
  app.add_option("--model", a->models, "NAME=PATH.onnx, repeatable");
  app.add_option("--host", a->host, "Address to listen on")->capture_default_str();
  app.add_option("--http-port", a->http_port, "HTTP/REST port (0: any free one)")->check(CLI::Range(0, 65535))->capture_default_str();
  app.add_option("--grpc-port", a->grpc_port, "gRPC port (0: any free one)")->check(CLI::Range(0, 65535))->capture_default_str();
  app.add_option("--grpc-threads", a->grpc_threads,
                 "gRPC completion queues, a thread each, that also run a model inline when its worker is idle "
                 "(0: the usable cores, up to 16, plus 2)")
      ->check(CLI::Range(0, 256));
  app.add_option("--cores", a->cores, "Use only the first N usable cores")->check(CLI::Range(0, 4096));
  app.add_option("--hint", a->hint, "Plan: adaptive, throughput or latency")
      ->check(CLI::IsMember({"adaptive", "throughput", "latency"}))
      ->capture_default_str();
  app.add_option("--max-body-mib", a->max_body_mib, "Largest request body (HTTP) or message (gRPC), MiB")
      ->check(CLI::Range(1, 2047))
      ->capture_default_str();
  app.add_option("--max-connections", a->max_connections, "HTTP connections at once; more are answered 503")
      ->check(CLI::Range(1, 65536))
      ->capture_default_str();
  app.add_option("--read-timeout-ms", a->read_timeout_ms, "Longest time to read one HTTP request")
      ->check(CLI::Range(100, 3600000))
      ->capture_default_str();
  app.add_option("--drain-timeout", a->drain_timeout_s, "Seconds to finish accepted requests on SIGTERM")
      ->check(CLI::Range(0, 3600))
      ->capture_default_str();
  app.add_option("--ports-file", a->ports_file, "Write 'HTTP_PORT GRPC_PORT' here once listening");
  return [a] { return Serve(*a); };
}

}  // namespace loom::cli
