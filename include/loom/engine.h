// Engine: loads several models, plans the machine's cores among their instances, and answers
// inference requests through per-model queues with dynamic batching.
//
// Basic usage:
//   loom::ModelConfig face;
//   face.name = "face";
//   face.path = "models/face_detection_back_256x256_barracuda.onnx";
//   auto engine = loom::Engine::Create({face});          // plan: auto, throughput
//   if (!engine.ok()) { ... }
//   std::cout << (*engine)->DescribePlan();
//   auto future = (*engine)->Submit("face", {{"input:0", image}});
//   absl::StatusOr<loom::InferResult> result = future.get();
//   (*engine)->Shutdown();  // answers every accepted request, then stops
//
// Workers: the plan makes a set of workers, each owning a disjoint set of cores. A worker runs one
// inference at a time on its cores (its thread plus the session's intra-op threads, all pinned), so
// the threads busy at any moment never outnumber the usable cores. A model with explicit
// `instances`/`threads` gets that many dedicated workers; every other model is served by the
// shared workers, which get the remaining cores. Each worker holds its own session per model it
// serves: a session is never run by two threads at once.
//
// Guarantees: every accepted request is answered exactly once — its outputs, or a status saying
// why (DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INVALID_ARGUMENT, UNAVAILABLE after Shutdown, or the
// backend's error for the batch it ran in). A request that cannot be accepted fails at Submit.
//
// Thread safety: all methods may be called from any number of threads at once.
#ifndef LOOM_ENGINE_H_
#define LOOM_ENGINE_H_

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "loom/plan.h"
#include "loom/session.h"
#include "loom/status.h"
#include "loom/tensor.h"

namespace loom {

// Per-model configuration. Optional fields left empty mean `auto`.
struct ModelConfig {
  std::string name;  // how requests address the model
  std::string path;  // ONNX file
  Backend backend = Backend::kOnnxRuntime;

  // Dedicated workers for this model and intra-op threads for each. Both empty: the model is
  // served by the shared workers, sized by the plan. Setting either makes the model's workers
  // dedicated (the other defaults to 1).
  std::optional<int> instances = std::nullopt;
  std::optional<int> threads = std::nullopt;

  // Dynamic batching (models whose dim 0 is dynamic only; others always run batches of 1).
  // max_batch_size: most rows in one run. Empty (auto): measured at load — 8 if a batch of 4
  // costs at most 0.8x per row what single rows do on the model's workers, else 1 (on CPU, many
  // convolutional models gain nothing from batching and lose memory locality).
  std::optional<int> max_batch_size = std::nullopt;
  // Batch sizes worth waiting for: a batch that reaches one of them runs at once. Empty: run as
  // soon as max_batch_size rows are queued or the delay passes.
  std::vector<int> preferred_batch_sizes = {};
  // How long the oldest queued request may wait for others to join its batch. 0 (the default, as
  // Triton's): batch only what queued while the workers were busy — no added latency, and full
  // batches whenever the load exceeds what the workers can run one by one. Longer: bigger batches
  // on light load, at the cost of latency.
  std::optional<int64_t> max_queue_delay_us = std::nullopt;

  // Most requests waiting in the queue; a Submit beyond it fails with RESOURCE_EXHAUSTED (or
  // blocks, if the caller asks). Empty: 1024.
  std::optional<int> queue_capacity = std::nullopt;
  // Timeout applied to requests that do not give a deadline. Empty: none.
  std::optional<int64_t> default_timeout_us = std::nullopt;

  // Share of the expected request mix, for the auto plan (default: equal).
  double weight = 1.0;

  // A representative request (Triton's model warm-up): the auto plan measures the model's cost on
  // it, and every worker session runs it once at load so that no real request pays a cold start.
  // Empty: random values at batch 1, dynamic image dims 320x320.
  NamedTensors warmup_inputs = {};
};


struct EngineOptions {
  // Cores to use, from those sched_getaffinity allows (taskset / container limits). 0 = all of
  // them; more than allowed is an error.
  int cores = 0;
  PlanHint hint = PlanHint::kThroughput;
  // Runs per thread count when measuring a model's cost for the auto plan (after one warm-up run).
  int measure_runs = 3;
  // A fixed layout for the shared workers (both set): that many workers with that many threads
  // each, instead of the hint's choice; nothing is measured.
  std::optional<int> shared_workers = std::nullopt;
  std::optional<int> shared_threads = std::nullopt;
  // Spinning of idle intra-op threads. Empty: on only for a worker with several threads serving
  // a single model (its cores are its own); off wherever threads could wait on a shared core.
  std::optional<bool> allow_spinning = std::nullopt;
};

struct SubmitOptions {
  // Absolute deadline; a request still queued past it is answered DEADLINE_EXCEEDED without
  // running. Empty: the model's default timeout, if any.
  std::optional<std::chrono::steady_clock::time_point> deadline = std::nullopt;
  // When the model's queue is full: wait for room (until the deadline) instead of failing with
  // RESOURCE_EXHAUSTED.
  bool block_when_full = false;
};

struct InferResult {
  NamedTensors outputs;     // the request's own rows of each output, in model output order
  int64_t queue_us = 0;     // time from Submit to the start of its run
  int64_t compute_us = 0;   // the run it was part of
  int batch_rows = 0;       // rows in that run (this request's and others')
};

using InferCallback = std::function<void(absl::StatusOr<InferResult>)>;

struct ModelStats {
  int64_t requests = 0;    // accepted by Submit
  int64_t successes = 0;
  int64_t failures = 0;    // answered with an error (deadline, run failure, shutdown)
  int64_t rejected = 0;    // refused by Submit (queue full, bad input): not accepted
  int64_t batches = 0;     // runs
  double mean_batch_rows = 0;
  // Microseconds, over answered requests (queue) and runs (compute).
  double queue_p50_us = 0, queue_p95_us = 0, queue_p99_us = 0;
  double compute_p50_us = 0, compute_p95_us = 0, compute_p99_us = 0;
};

class Engine {
 public:
  // Loads every model on every worker that serves it, measures (auto plan) and starts the
  // workers. Errors name the model and the cause (bad file, a plan that needs more cores than
  // usable, duplicate name).
  static absl::StatusOr<std::unique_ptr<Engine>> Create(std::vector<ModelConfig> models,
                                                        EngineOptions options = {});
  // Shuts down (see Shutdown) and joins the workers.
  ~Engine();

  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a request. Inputs are checked against the model at once: an unknown model, a bad
  // input, a full queue (unless block_when_full) or a shut-down engine fail here, synchronously,
  // and the request is not accepted. Input buffers are referenced, not copied: keep borrowed ones
  // alive until the answer.
  std::future<absl::StatusOr<InferResult>> Submit(const std::string& model, NamedTensors inputs,
                                                  const SubmitOptions& options = {});
  // Callback form: `done` is called exactly once, on a worker thread, or inline when Submit
  // fails. It must not block for long, nor throw (an exception is dropped at the worker).
  void Submit(const std::string& model, NamedTensors inputs, const SubmitOptions& options,
              InferCallback done);
  // Synchronous form.
  absl::StatusOr<InferResult> Infer(const std::string& model, NamedTensors inputs,
                                    const SubmitOptions& options = {});

  absl::StatusOr<ModelStats> Stats(const std::string& model) const;
  const ModelInfo* FindModel(const std::string& model) const;
  const EnginePlan& plan() const;
  std::string DescribePlan() const { return plan().Describe(); }

  // Stops accepting requests (later Submits fail with UNAVAILABLE), runs or answers every request
  // already accepted, then stops the workers. Idempotent; returns when all are answered.
  void Shutdown();

 private:
  class Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Reads models and engine options from a YAML or JSON file:
//   cores: 0                 # optional
//   hint: throughput         # or latency
//   models:
//     - name: face
//       path: models/face_detection_back_256x256_barracuda.onnx
//       instances: auto      # or a number (likewise threads, max_batch_size, ...)
//       max_batch_size: 8
//       preferred_batch_sizes: [4, 8]
//       max_queue_delay_us: 500
//       queue_capacity: 256
//       default_timeout_us: 100000
// Relative model paths are resolved against the file's directory. Errors give the line and key.
struct EngineConfig {
  std::vector<ModelConfig> models;
  EngineOptions options;
};
absl::StatusOr<EngineConfig> LoadEngineConfig(const std::string& path);

}  // namespace loom

#endif  // LOOM_ENGINE_H_
