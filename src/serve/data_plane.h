// The data plane of `loom serve`: what the Open Inference Protocol asks of a server — health,
// metadata, inference, the model repository, metrics — on top of the public Engine and Pipeline
// APIs, with no transport in sight. The HTTP and gRPC front ends only translate to and from it.
//
// Models come from a repository folder (one folder per model: an .onnx file and an optional
// config.yaml with the engine's model options, or a pipeline.yaml served as one model) and from
// `--model name=path`. Every model, pipelines' included, runs on one Engine: one plan of the cores.
//
// Model control: with ModelControl::kNone (the default) the repository API is refused
// (PERMISSION_DENIED naming --model-control). With kExplicit, loads and unloads run one at a time
// on the plane's admin thread, fed by a bounded queue. A load of a served model builds the new
// copy beside the old one (in the engine under an internal name) and then routes requests to it:
// no request finds the model missing during a reload. A failed load leaves the served models and
// the readiness as they were. Errors name models by their served names, never by file paths.
//
// Thread safety: every method may be called from any number of threads at once.
// Lifecycle: Create → serving → (AnnounceDrain → BeginDrain → WaitIdle) → destroy; the admin
// thread lives from Create to destruction.
#ifndef LOOM_SERVE_DATA_PLANE_H_
#define LOOM_SERVE_DATA_PLANE_H_

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/histogram.h"
#include "loom/engine.h"
#include "serve/types.h"

namespace loom::serve {

enum class ModelControl { kNone, kExplicit };

struct DataPlaneOptions {
  std::string repository;                                   // folder of model folders (optional)
  std::vector<std::pair<std::string, std::string>> models;  // name, .onnx path
  EngineOptions engine;
  ServeLimits limits;
  ModelControl model_control = ModelControl::kNone;
  int admin_queue = 16;  // repository operations waiting at once; more are refused UNAVAILABLE
};

struct ServerMetadata {
  std::string name, version;
  std::vector<std::string> extensions;
};

struct TensorMetadata {
  std::string name;
  WireType type = WireType::kFp32;
  std::vector<int64_t> shape;  // -1 for a dynamic dim
};

struct ModelMetadata {
  std::string name;
  std::vector<std::string> versions;
  std::string platform;
  std::vector<TensorMetadata> inputs, outputs;
};

struct RepositoryEntry {
  std::string name, version, state, reason;  // state: READY, UNAVAILABLE
};

class DataPlane {
 public:
  static absl::StatusOr<std::unique_ptr<DataPlane>> Create(DataPlaneOptions options);
  ~DataPlane();

  const ServeLimits& limits() const { return options_.limits; }
  ModelControl model_control() const { return options_.model_control; }
  InflightBudget& budget() { return budget_; }
  // Every model of the start loaded (or loaded since), and no drain announced.
  bool Ready() const;
  // False once a front end has failed for good (why: Broken()): the process should be restarted,
  // and its liveness probe says so.
  bool Live() const { return !broken_; }
  void MarkBroken(std::string why);
  std::string Broken() const;
  // From any thread: HTTP accepting paused once for want of descriptors or memory
  // (loom_http_accept_pauses_total).
  void CountAcceptPause() { accept_pauses_.fetch_add(1, std::memory_order_relaxed); }
  // From any thread: a call's client cancelled it, or its deadline passed, or its connection
  // closed, before its answer went out (loom_calls_abandoned_total); its request is marked
  // cancelled, so the engine drops it if it is still queued. `grpc`: the protocol.
  void CountAbandoned(bool grpc) {
    (grpc ? abandoned_grpc_ : abandoned_http_).fetch_add(1, std::memory_order_relaxed);
  }
  int64_t abandoned(bool grpc) const {
    return (grpc ? abandoned_grpc_ : abandoned_http_).load(std::memory_order_relaxed);
  }
  // OK if the model (and version: "" or "1") is served; NOT_FOUND otherwise.
  absl::Status ModelReady(const std::string& model, const std::string& version) const;
  ServerMetadata Metadata() const;
  absl::StatusOr<ModelMetadata> Metadata(const std::string& model,
                                         const std::string& version) const;
  std::vector<std::string> ModelNames() const;  // served, sorted

  using Done = std::function<void(absl::StatusOr<InferResponse>)>;
  // Runs `request`; `done` is called exactly once, on an engine worker or on this thread: when a
  // worker of the model is idle, the request runs here, before Infer returns (a pipeline's
  // frame may wait here for room). The request's borrowed tensors must stay valid until `done`.
  // `protocol` labels the metrics.
  void Infer(InferRequest request, const std::string& protocol, Done done);
  // Infer for a caller that waits for the answer.
  absl::StatusOr<InferResponse> InferSync(InferRequest request, const std::string& protocol);
  // Counts a request the front end refused before it reached Infer (it could not be parsed).
  void CountRejected(const std::string& model, const std::string& protocol,
                     const absl::Status& status);

  // The repository (PERMISSION_DENIED with ModelControl::kNone). Load and Unload run on the
  // calling thread, one at a time; front ends use SubmitAdmin instead.
  absl::StatusOr<std::vector<RepositoryEntry>> Index(bool ready_only) const;
  absl::Status Load(const std::string& model);
  absl::Status Unload(const std::string& model);
  enum class AdminOp { kLoad, kUnload };
  // Queues a load or unload for the admin thread; `done` is called exactly once, there, or here
  // when the operation is refused at once (model control off, a bad name, the queue full,
  // draining). `done` must not block for long.
  void SubmitAdmin(AdminOp op, std::string model, std::function<void(absl::Status)> done);

  std::string Metrics() const;  // Prometheus text format

  // Drain, step 1: not ready (load balancers move away) while requests are still served.
  void AnnounceDrain();
  // Step 2: new requests refused (UNAVAILABLE); the accepted ones go on.
  void BeginDrain();
  bool draining() const { return draining_; }
  // Waits until no request is in flight, up to `timeout`; true if none is left.
  bool WaitIdle(std::chrono::milliseconds timeout);
  int64_t in_flight() const;
  Engine& engine() { return *engine_; }

 private:
  struct Entry;  // a served model or pipeline
  class EntryUse;
  struct Counters {
    std::map<std::string, int64_t> outcomes;  // outcome -> answered requests
    std::shared_ptr<Histogram> duration_us = std::make_shared<Histogram>();
  };
  struct AdminTask {
    AdminOp op;
    std::string model;
    std::function<void(absl::Status)> done;
  };

  explicit DataPlane(DataPlaneOptions options);
  absl::Status LoadPlainModels(const std::vector<std::pair<std::string, std::string>>& sources,
                               std::vector<std::pair<std::string, std::string>>& pipelines);
  // A new entry for `name` from `where`, in the engine under `engine_name`.
  absl::StatusOr<std::shared_ptr<Entry>> MakeEntry(const std::string& name,
                                                   const std::string& where,
                                                   const std::string& engine_name);
  absl::Status LoadChecked(const std::string& model);
  std::string FreeEngineName(const std::string& name) const;
  // Routes no new request to `e`, waits for those that found it to be submitted, then removes it
  // from the engine (which answers what it accepted).
  absl::Status Retire(const std::shared_ptr<Entry>& e);
  std::string Scrub(std::string message) const;  // file paths → served names
  std::shared_ptr<Entry> Find(const std::string& model) const;
  void Finish(const std::string& model, const std::string& protocol,
              std::chrono::steady_clock::time_point start, const absl::Status& status, bool known);
  using Answer = std::function<void(absl::StatusOr<InferResponse>)>;
  void InferKnown(const Entry& e, InferRequest request, const Answer& answer);
  void InferPipeline(const Entry& e, InferRequest request, const Answer& answer);
  void AdminLoop();

  DataPlaneOptions options_;
  InflightBudget budget_;
  std::unique_ptr<Engine> engine_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> models_;  // served name → entry; requires mu_
  std::map<std::string, std::string> load_errors_;        // last load failure; requires mu_
  std::set<std::string> start_failures_;  // failed at start, not loaded since; requires mu_
  std::map<std::pair<std::string, std::string>, Counters> counters_;  // (model, protocol); mu_
  std::map<std::string, int64_t> in_flight_by_protocol_;              // requires mu_
  int64_t reloads_ = 0;                                               // requires admin_mu_
  std::mutex admin_mu_;                                               // one load / unload at a time
  std::atomic<bool> announced_{false};
  std::atomic<bool> draining_{false};
  std::atomic<bool> broken_{false};
  std::string broken_why_;  // requires mu_
  std::atomic<int64_t> in_flight_{0};
  std::atomic<int64_t> accept_pauses_{0};
  std::atomic<int64_t> abandoned_http_{0}, abandoned_grpc_{0};
  std::condition_variable idle_cv_;
  // The admin thread and its queue.
  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<AdminTask> queue_;  // requires queue_mu_
  bool stopping_ = false;        // requires queue_mu_
  std::thread admin_thread_;
};

}  // namespace loom::serve

#endif  // LOOM_SERVE_DATA_PLANE_H_
