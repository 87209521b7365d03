// Requests and answers: what a caller passes with an inference request and what comes back, for
// every way in (C++ Engine, Python, the KServe v2 server, pipelines).
#ifndef LOOM_INFER_H_
#define LOOM_INFER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "loom/status.h"
#include "loom/tensor.h"

namespace loom {

struct SubmitOptions {
  // Absolute deadline; a request still queued past it is answered DEADLINE_EXCEEDED without
  // running. Empty: the model's default timeout, if any.
  std::optional<std::chrono::steady_clock::time_point> deadline = std::nullopt;
  // When the model's queue is full: wait for room (until the deadline) instead of failing with
  // RESOURCE_EXHAUSTED.
  bool block_when_full = false;
  // Set to true by the caller, from any thread, to withdraw the request: if it has not started
  // it is answered CANCELLED without running (a request already running completes normally).
  std::shared_ptr<const std::atomic<bool>> cancelled = nullptr;
  // Callback Submit only: when a worker serving the model is idle and nothing is queued for it,
  // run the request on the calling thread with that worker's session, as Infer does, and call
  // `done` there before Submit returns; otherwise queue it as usual. For a caller whose thread may
  // spend one run of the model (a server's I/O thread), not one that must never block.
  bool run_inline_when_idle = false;
};

struct InferResult {
  NamedTensors outputs;    // the request's own rows of each output, in model output order
  int64_t queue_us = 0;    // time from Submit to the start of its run
  int64_t compute_us = 0;  // the run it was part of
  int batch_rows = 0;      // rows in that run (this request's and others')
  int threads = 0;         // intra-op threads (cores) the run used
};

// Called exactly once per accepted request, on a worker thread (or inline when Submit fails, or
// on the caller's thread when the engine ran the request there). It must not block for long; an
// exception it throws is dropped at the worker (and counted), never propagated.
using InferCallback = std::function<void(absl::StatusOr<InferResult>)>;

// A distribution in Prometheus' cumulative form: how many samples were <= each bound.
struct Distribution {
  std::vector<double> upper_bounds;         // ascending (seconds, or rows)
  std::vector<uint64_t> cumulative_counts;  // samples <= upper_bounds[i]
  uint64_t count = 0;                       // all samples
  double sum = 0;                           // of all samples, in the bounds' unit
};

struct ModelStats {
  int64_t requests = 0;  // accepted by Submit
  int64_t successes = 0;
  int64_t failures = 0;           // answered with an error: run failure, deadline, cancel, shutdown
  int64_t deadline_exceeded = 0;  // of the failures: expired while queued
  int64_t cancelled = 0;          // of the failures: withdrawn while queued
  int64_t rejected = 0;           // refused by Submit (queue full, bad input): not accepted
  int64_t batches = 0;            // runs
  int64_t queued = 0;             // waiting now
  int64_t running = 0;            // requests in runs now
  double mean_batch_rows = 0;
  // Microseconds, over answered requests (queue) and runs (compute); from streaming histograms
  // (exact below 16 us, within 6.25% above).
  double queue_p50_us = 0, queue_p95_us = 0, queue_p99_us = 0;
  double compute_p50_us = 0, compute_p95_us = 0, compute_p99_us = 0;
  Distribution queue_seconds, compute_seconds, batch_rows;
};

}  // namespace loom

#endif  // LOOM_INFER_H_
