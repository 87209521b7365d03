// `loom bench serve`: perf_analyzer's job, Loom's way. Closed-loop clients (a concurrency sweep)
// against a KServe v2 server — one it starts in this process, or a running one — over HTTP
// (binary or JSON tensors) and gRPC (raw tensors); per level and mode: throughput and
// p50/p90/p99 latency, with the server's own queue/compute split read from its /metrics. When it
// started the server, the same workload runs in process (Engine::Infer from as many threads) in
// the same run, so that the server's cost is a ratio and a difference of medians.
#ifndef LOOM_SERVE_SERVE_BENCH_H_
#define LOOM_SERVE_SERVE_BENCH_H_

#include <string>
#include <vector>

#include "loom/status.h"

namespace loom::serve {

struct ServeBenchOptions {
  // A server to start here (models as `loom serve` takes them), or a running one's addresses.
  std::string repository;
  std::vector<std::pair<std::string, std::string>> models;  // name, path
  int cores = 0;
  std::string http_address;  // host:port of a running server (then no in-process runs)
  std::string grpc_address;  // host:port of its gRPC endpoint ("" = not measured)

  std::string
      model;  // the model(s) to call, comma-separated, clients spread over them ("" = the first)
  std::vector<int> concurrency = {1, 2, 4, 8};
  // inprocess, http-binary, http-json, grpc; http-live and grpc-live time an empty round trip
  // (the health endpoints): each transport's own floor on this machine.
  std::vector<std::string> modes = {"inprocess", "http-binary", "http-json", "grpc"};
  double seconds = 2.0;  // per run
  int repeats = 3;       // runs per (mode, level), interleaved; medians reported
  int batch = 1;         // rows per request for a dynamic batch dim
};

struct ServeBenchRow {
  std::string mode;
  int concurrency = 0;
  int64_t requests = 0, errors = 0;
  double throughput = 0;                      // requests/s, median of repeats
  double p50_us = 0, p90_us = 0, p99_us = 0;  // medians of repeats
  double server_queue_us = 0;                 // the engine's mean wait per request, from /metrics
  double server_compute_us = 0;  // its mean time per run (a batch of requests), from /metrics
  // The load generator's own cost (not in-process, where the clients run the models): its
  // threads' CPU time per answered request, and as a share of the cores this process may use.
  // On a small machine the clients take cores the server would otherwise have.
  double client_cpu_us = 0, client_cpu_share = 0;
};

struct ServeBenchReport {
  std::string model, plan;
  std::vector<ServeBenchRow> rows;
  std::string Format() const;  // a table, with ratios to in-process at each level
  std::string Json() const;
};

absl::StatusOr<ServeBenchReport> RunServeBench(const ServeBenchOptions& options);

}  // namespace loom::serve

#endif  // LOOM_SERVE_SERVE_BENCH_H_
