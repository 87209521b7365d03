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
// serves: a session is never run by two threads at once. With the adaptive hint (the default),
// shared workers also form wide groups, and each batch runs on one worker ("narrow") or on a
// whole group ("wide"), whichever the moment calls for (see PlanHint::kAdaptive).
//
// Guarantees: every accepted request is answered exactly once — its outputs, or a status saying
// why (DEADLINE_EXCEEDED, CANCELLED, RESOURCE_EXHAUSTED, INVALID_ARGUMENT, UNAVAILABLE after
// Shutdown or while its model is removed, or the backend's error for the batch it ran in). A
// request that cannot be accepted fails at Submit. No exception leaves the engine: a backend or
// callback that throws fails only its own batch or is dropped.
//
// Thread safety: all methods may be called from any number of threads at once. From inside a
// completion callback (on a worker): Submit, Infer (which then runs on that worker), the
// read-only methods (Stats, Workers, ModelNames, plan, ...) and Shutdown (which then only stops
// accepting and returns). AddModel, RemoveModel and LeaseCores wait for workers, so from a
// callback they return FAILED_PRECONDITION. The Engine must not be destroyed from its own
// callback.
#ifndef LOOM_ENGINE_H_
#define LOOM_ENGINE_H_

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "loom/infer.h"
#include "loom/plan.h"
#include "loom/session.h"
#include "loom/status.h"
#include "loom/tensor.h"

namespace loom {

// Makes a model's sessions instead of the backend named by ModelConfig::backend: a custom backend,
// or a test double. Called with the options the plan chose, on a short-lived thread pinned to the
// cores the session will run on: for each worker and wide group, for the planner's cost probes,
// and again at each re-plan.
using SessionFactory =
    std::function<absl::StatusOr<std::unique_ptr<Session>>(const SessionOptions& options)>;

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
  // max_batch_size: most rows in one run, and in one request (a request with more rows is refused
  // with INVALID_ARGUMENT, unless max_request_rows allows it). Empty (auto): measured at load — 8
  // if a batch of 4 costs at most 0.8x per row what single rows do on the model's workers, else 1
  // (on CPU, many convolutional models gain nothing from batching and lose memory locality).
  std::optional<int> max_batch_size = std::nullopt;
  // Most rows one request may carry, when more than max_batch_size: such a request runs alone, as
  // one run (a pipeline sets max_batch_size 1 so that frames never share a run, and sends a
  // frame's own rows together where that was measured to pay). Empty: max_batch_size.
  std::optional<int> max_request_rows = std::nullopt;
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

  // Custom sessions (see SessionFactory); empty: the backend above.
  SessionFactory session_factory = nullptr;
};

struct EngineOptions {
  // Cores to use, from those sched_getaffinity allows (taskset / container limits). 0 = all of
  // them; more than allowed is an error.
  int cores = 0;
  PlanHint hint = PlanHint::kAdaptive;
  // Runs per thread count when measuring a model's cost for the auto plan (after one warm-up run).
  int measure_runs = 3;
  // A fixed layout for the shared workers (both set): that many workers with that many threads
  // each, instead of the hint's choice; nothing is measured.
  std::optional<int> shared_workers = std::nullopt;
  std::optional<int> shared_threads = std::nullopt;
  // Spinning of idle intra-op threads. Empty: on only for a worker with several threads serving
  // a single model (its cores are its own); off wherever threads could wait on a shared core.
  std::optional<bool> allow_spinning = std::nullopt;
  // Sizes every request input is checked against before anything is computed from it.
  TensorLimits limits = {};
  // Most bytes of input one request may carry (all its tensors together).
  int64_t max_request_bytes = int64_t{2} << 30;
  // Adaptive plan: n narrow/wide decisions after its last try, the other width is tried again, to
  // keep its measurement current when the machine changes (another process, thermal limits); n
  // grows with how much worse that width measured (up to 8x) and doubles with each try (up to
  // 32x) until the choice switches or the plan is remade. 0: never.
  int explore_every = 50;
};

// One worker of the plan as it runs: its cores, and how busy it has been.
struct WorkerStats {
  std::vector<int> cpus;
  int group = -1;           // wide group, or -1
  double busy_seconds = 0;  // running batches (narrow, or leading a wide run)
  int64_t runs = 0;
  int thread_id = 0;  // the worker thread's Linux thread id (/proc/self/task/ID)
};

class Engine;

// A lease of one idle worker's cores for the caller's own CPU work (a pipeline's decoding and
// pre/post-processing, a user's preprocessing): while it is held, the worker takes no model work,
// the calling thread is pinned to those cores and the engine counts them busy, so Loom's own
// threads stay inside the core plan. Release (or destruction) restores the thread's affinity.
// Held by one thread; movable, not copyable.
class CoreLease {
 public:
  CoreLease() = default;
  CoreLease(CoreLease&& other) noexcept;
  CoreLease& operator=(CoreLease&& other) noexcept;
  ~CoreLease();
  void Release();
  bool held() const { return worker_ >= 0; }
  const std::vector<int>& cpus() const { return cpus_; }

 private:
  friend class Engine;
  std::shared_ptr<void> scheduler_;  // keeps the scheduler alive while held
  int worker_ = -1;
  std::vector<int> cpus_;
  std::vector<int> previous_;  // the thread's affinity before
};

class Engine {
 public:
  // Loads every model on every worker that serves it, measures (auto plan) and starts the
  // workers. Errors name the model and the cause (bad file, a plan that needs more cores than
  // usable, duplicate name). No model is allowed: the first AddModel then plans the cores.
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
  // Callback form: `done` is called exactly once: on a worker thread; on the calling thread,
  // before Submit returns, when Submit fails or when `run_inline_when_idle` ran the request there.
  // It must not block for long, nor throw (an exception is dropped at the worker).
  void Submit(const std::string& model, NamedTensors inputs, const SubmitOptions& options,
              InferCallback done);
  // Synchronous form. When a worker serving the model is idle and nothing is queued for it, the
  // request runs on the calling thread with that worker's session (its cores are claimed for the
  // run): no hand-off, the same work the worker would have done.
  absl::StatusOr<InferResult> Infer(const std::string& model, NamedTensors inputs,
                                    const SubmitOptions& options = {});

  // Loads a model while the engine runs. A shared model (no instances/threads) gets a session on
  // every shared worker (and wide group), made and measured on each worker's cores in turn, which
  // pauses that worker alone; a model with dedicated instances re-plans the cores (dedicated
  // workers take cores from the shared pool), which pauses every worker while the new sessions
  // are made. No request for another model is failed or lost; queued ones wait.
  absl::Status AddModel(ModelConfig config);
  // Refuses new requests for the model at once (NOT_FOUND: it is not listed from then on; one
  // that found it just before gets UNAVAILABLE), runs every accepted one, then unloads it; a
  // dedicated model's cores return to the shared pool. Returns once it is unloaded.
  absl::Status RemoveModel(const std::string& model);
  std::vector<std::string> ModelNames() const;

  absl::StatusOr<ModelStats> Stats(const std::string& model) const;
  std::vector<WorkerStats> Workers() const;
  // The engine's own accounting of the threads running its work now, and the most ever at once:
  // never more than the usable cores.
  int BusyThreads() const;
  int MaxBusyThreads() const;
  // Most rows the engine puts in one run of requests it combines: its max_batch_size, as configured
  // or measured; 1 for a model without a dynamic batch dim. (A single request may carry up to
  // ModelConfig::max_request_rows.)
  absl::StatusOr<int> MaxBatchSize(const std::string& model) const;
  // The model's metadata; null for an unknown model. Valid until the model is removed.
  const ModelInfo* FindModel(const std::string& model) const;
  // The plan as it is now (a copy: it changes with AddModel/RemoveModel and adaptation).
  EnginePlan plan() const;
  std::string DescribePlan() const { return plan().Describe(); }

  // Leases one idle worker's cores for the calling thread (see CoreLease); waits until one is
  // free. UNAVAILABLE after Shutdown, DEADLINE_EXCEEDED at the deadline.
  absl::StatusOr<CoreLease> LeaseCores(
      std::optional<std::chrono::steady_clock::time_point> deadline = std::nullopt);

  // Tracing: StartTrace begins recording every run (worker, model, rows, threads) and every
  // request's queue wait; StopTrace returns them as Chrome trace-event JSON (Perfetto,
  // chrome://tracing) and stops. Timestamps are std::chrono::steady_clock's, in microseconds.
  void StartTrace();
  std::string StopTrace();

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
//   hint: adaptive           # or throughput, latency
//   models:
//     - name: face
//       path: models/face_detection_back_256x256_barracuda.onnx
//       instances: auto      # or a number (likewise threads, max_batch_size, ...)
//       max_batch_size: 8
//       preferred_batch_sizes: [4, 8]
//       max_queue_delay_us: 500
//       queue_capacity: 256
//       default_timeout_us: 100000
// Relative model paths are resolved against the file's directory. Every value is checked (type,
// range); an unknown key is an error that suggests the nearest known one. Errors give the file,
// line, column and key.
struct EngineConfig {
  std::vector<ModelConfig> models;
  EngineOptions options;
};
absl::StatusOr<EngineConfig> LoadEngineConfig(const std::string& path);

}  // namespace loom

#endif  // LOOM_ENGINE_H_
