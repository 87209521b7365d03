// The data plane of `loom serve`: what the Open Inference Protocol asks of a server — health,
// metadata, inference, the model repository, metrics — on top of the public Engine and Pipeline
// APIs, with no transport in sight. The HTTP and gRPC front ends only translate to and from it.
//
// Models come from a repository folder (one folder per model: an .onnx file and an optional
// config.yaml with the engine's model options, or a pipeline.yaml served as one model) and from
// `--model name=path`. Every model, pipelines' included, runs on one Engine: one plan of the cores.
//
// Thread safety: every method may be called from any number of threads at once.
#ifndef LOOM_SERVE_DATA_PLANE_H_
#define LOOM_SERVE_DATA_PLANE_H_

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/histogram.h"
#include "loom/engine.h"
#include "serve/types.h"

namespace loom::serve {

class PipelineModel;  // data_plane.cc

struct DataPlaneOptions {
  std::string repository;                                      // folder of model folders (optional)
  std::vector<std::pair<std::string, std::string>> models;     // name, .onnx path
  EngineOptions engine;
  ServeLimits limits;
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
  std::string name, version, state, reason;  // state: READY, UNAVAILABLE, LOADING, UNLOADING
};

class DataPlane {
 public:
  static absl::StatusOr<std::unique_ptr<DataPlane>> Create(DataPlaneOptions options);
  ~DataPlane();

  const ServeLimits& limits() const { return options_.limits; }
  bool Ready() const;  // every model loaded at start, and not draining
  // OK if the model (and version: "" or "1") is loaded; NOT_FOUND otherwise.
  absl::Status ModelReady(const std::string& model, const std::string& version) const;
  ServerMetadata Metadata() const;
  absl::StatusOr<ModelMetadata> Metadata(const std::string& model, const std::string& version) const;

  using Done = std::function<void(absl::StatusOr<InferResponse>)>;
  // Runs `request`; `done` is called exactly once, on an engine worker or on this thread: when a
  // worker of the model is idle, the request runs here, before Infer returns (a pipeline's
  // frame may wait here for room). The request's borrowed tensors must stay valid until `done`.
  // `protocol` labels the metrics.
  void Infer(InferRequest request, const std::string& protocol, Done done);
  // Infer for a caller that waits for the answer.
  absl::StatusOr<InferResponse> InferSync(InferRequest request, const std::string& protocol);
  // Counts a request the front end refused before it reached Infer (it could not be parsed).
  void CountRejected(const std::string& model, const std::string& protocol, const absl::Status& status);

  std::vector<RepositoryEntry> Index(bool ready_only) const;
  absl::Status Load(const std::string& model);
  absl::Status Unload(const std::string& model);

  std::string Metrics() const;  // Prometheus text format

  // Draining: not ready, new requests refused (UNAVAILABLE); the accepted ones go on.
  void BeginDrain();
  bool draining() const { return draining_; }
  // Waits until no request is in flight, up to `timeout`; true if none is left.
  bool WaitIdle(std::chrono::milliseconds timeout);
  int64_t in_flight() const;
  Engine& engine() { return *engine_; }

 private:
  struct Entry;  // a loaded model or pipeline
  struct Counters {
    std::map<std::string, int64_t> outcomes;  // outcome -> answered requests
    std::shared_ptr<Histogram> duration_us = std::make_shared<Histogram>();
  };

  explicit DataPlane(DataPlaneOptions options);
  absl::Status LoadLocked(const std::string& name, const std::string& path_or_folder);
  std::shared_ptr<Entry> Find(const std::string& model) const;
  void Finish(const std::string& model, const std::string& protocol, std::chrono::steady_clock::time_point start,
              const absl::Status& status, bool known);
  using Answer = std::function<void(absl::StatusOr<InferResponse>)>;
  void InferKnown(const Entry& e, InferRequest request, const Answer& answer);

  DataPlaneOptions options_;
  std::unique_ptr<Engine> engine_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> models_;        // requires mu_
  std::map<std::string, std::string> repository_errors_;        // load failures, requires mu_
  std::map<std::pair<std::string, std::string>, Counters> counters_;  // (model, protocol), requires mu_
  std::map<std::string, int64_t> in_flight_by_protocol_;       // requires mu_
  std::mutex admin_mu_;  // one load / unload at a time
  std::atomic<bool> ready_{false};
  bool ready_computed_ = false;  // requires mu_ after Create
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> in_flight_{0};
  std::condition_variable idle_cv_;
};

}  // namespace loom::serve

#endif  // LOOM_SERVE_DATA_PLANE_H_
