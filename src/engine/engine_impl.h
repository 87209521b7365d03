// The engine's internals (include/loom/engine.h is the contract), private to src/engine/:
// Engine::Impl, the loaded models' entries, and the helpers its files share.
//
// Files: engine.cc (creation, the request path, statistics, leases, trace), config_check.cc
// (checking a model's configuration and the engine's options), session_factory.cc (session
// options, making and caching sessions, the scheduler's layout), measure.cc (Plan, which hands
// the core planner a cost function that measures what is not known yet; the batch-size probe),
// replan.cc (adding and removing models, re-planning the cores).
//
// Locking: `models_mu` guards `models` (the request path takes it shared); `admin_mu` serialises
// AddModel / RemoveModel and guards `costs` and `sessions`; `plan_mu` guards `plan` and `events`.
// Order: admin_mu, then models_mu or plan_mu (never both at once).
#ifndef LOOM_ENGINE_ENGINE_IMPL_H_
#define LOOM_ENGINE_ENGINE_IMPL_H_

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "core/clock.h"
#include "loom/engine.h"
#include "sched/scheduler.h"

namespace loom {
namespace engine_internal {

inline constexpr int kDefaultMaxBatch = 8;
inline constexpr int kDefaultQueueCapacity = 1024;
inline constexpr int kBatchProbeRows = 4;
inline constexpr double kBatchWorthIt = 0.8;  // per-row cost at the probe batch vs single rows

// A loaded model. Immutable once published (readers hold a shared_ptr).
struct ModelEntry {
  int id = -1;  // the scheduler's
  ModelConfig config;
  ModelInfo info;
  bool batchable = false;
  int max_batch_size = 1;
  std::chrono::microseconds default_timeout{0};
  bool dedicated = false;
};

using SessionMap = std::map<std::string, std::shared_ptr<Session>>;  // by SessionKey
using Entries = std::vector<std::shared_ptr<const ModelEntry>>;

// Helpers the files share. session_factory.cc: RunPinned, Serves. measure.cc: TimeRuns,
// MaxBatchSizeFor. config_check.cc: CheckEngineOptions.
//
// Runs `fn` on a thread pinned to `cpus` (the caller's affinity is left alone); any exception
// becomes a status.
absl::Status RunPinned(const std::vector<int>& cpus, const std::function<absl::Status()>& fn);
// Median milliseconds per run of `inputs` on `session` (one warm-up run first), on the calling
// thread.
absl::StatusOr<double> TimeRuns(Session& session, const NamedTensors& inputs, int runs);
// The auto max_batch_size a batch-size probe calls for: kDefaultMaxBatch when a batch of
// kBatchProbeRows costs at most kBatchWorthIt of single rows per row, else 1.
int MaxBatchSizeFor(double ms_per_row_at_1, double ms_per_row_at_probe);
// Whether a worker of the plan serves `model`.
bool Serves(const WorkerPlan& w, const std::string& model);
// Checks the options Create takes (not the models'): INVALID_ARGUMENT naming the option.
absl::Status CheckEngineOptions(const EngineOptions& options);
// The cpus the engine plans: the usable ones (affinity), the first `options.cores` of them if set.
absl::StatusOr<std::vector<int>> PlannedCpus(const EngineOptions& options);

}  // namespace engine_internal

class Engine::Impl {
 public:
  using ModelEntry = engine_internal::ModelEntry;
  using SessionMap = engine_internal::SessionMap;
  using Entries = engine_internal::Entries;

  EngineOptions options;
  std::vector<int> cpus;
  TimePoint started = Clock::now();
  std::shared_ptr<sched::Scheduler> scheduler;

  mutable std::shared_mutex models_mu;
  std::map<std::string, std::shared_ptr<const ModelEntry>> models;  // requires models_mu

  std::mutex admin_mu;  // one AddModel / RemoveModel at a time
  mutable std::mutex plan_mu;
  EnginePlan plan;                         // requires plan_mu
  std::vector<PlanEvent> events;           // requires plan_mu
  std::map<std::string, ModelCost> costs;  // measured, for re-plans; requires admin_mu
  // Sessions of the current layout, by SessionKey, so that a re-plan reuses unchanged ones.
  SessionMap sessions;  // requires admin_mu

  // ---- engine.cc ----
  absl::StatusOr<std::shared_ptr<const ModelEntry>> Find(const std::string& model) const;
  // FAILED_PRECONDITION when called on a worker (inside a completion callback): `what` waits for
  // workers, this one among them, which is busy with the callback.
  absl::Status RefuseOnWorker(const char* what) const;
  // The loaded models, by id.
  Entries LoadedEntries() const;
  // Records a change of the plan in its history (and the log).
  void Note(const std::string& what);
  // Puts inputs in model order, validates them and works out the rows (dim 0).
  absl::StatusOr<std::unique_ptr<sched::Request>> MakeRequest(const ModelEntry& m,
                                                              NamedTensors inputs) const;

  // ---- config_check.cc ----
  // Checks a config and reads its model's metadata.
  absl::StatusOr<std::shared_ptr<ModelEntry>> Prepare(ModelConfig config) const;
  // Prepare for each of Create's models, ids in order; names must be unique.
  absl::StatusOr<std::vector<std::shared_ptr<ModelEntry>>> PrepareAll(
      std::vector<ModelConfig> models) const;

  // ---- session_factory.cc ----
  // Warm-up inputs of an entry: the configured ones or random ones.
  absl::StatusOr<NamedTensors> WarmupInputs(const ModelEntry& m, int rows = 1) const;
  // Makes (or reuses from `made`, then `sessions`) the session for `m` on `cpus`, warmed up, and
  // records it in `made`.
  absl::StatusOr<std::shared_ptr<Session>> SessionFor(const ModelEntry& m,
                                                      const std::vector<int>& cpus, bool spin,
                                                      bool wide, SessionMap& made);
  // The full layout for `plan` (every model's narrow and wide sessions), reusing sessions.
  absl::StatusOr<sched::Scheduler::Layout> BuildLayout(const EnginePlan& plan,
                                                       const Entries& entries, SessionMap& made);

  // ---- measure.cc ----
  // Plans the cores for `entries`; measures what is not known yet (the cores must be free).
  absl::StatusOr<EnginePlan> Plan(const Entries& entries, SessionMap& made);
  // Auto max_batch_size of a batchable entry, measured on `cpus` with its session there.
  absl::Status ChooseBatchSize(ModelEntry& m, const std::vector<int>& cpus, bool spin,
                               SessionMap& made, std::vector<BatchChoice>& choices);
  // Median ms per run of `m`'s warm-up request on `session`, timed on a thread pinned to `cpus`;
  // `input_elements`: that request's.
  absl::StatusOr<double> MeasureCost(const ModelEntry& m, Session& session,
                                     const std::vector<int>& cpus, int64_t& input_elements) const;
  // Copies the measured costs into the plan's.
  void CopyCosts(EnginePlan& plan) const;

  // ---- replan.cc ----
  // The scheduler's spec of `m` under `plan` and `layout`: batching, sessions, priors.
  sched::ModelSpec SpecFor(const ModelEntry& m, const EnginePlan& plan,
                           const sched::Scheduler::Layout& layout) const;
  // Re-plans every core for `entries` while the workers are paused.
  absl::Status Replan(Entries entries, const std::string& why);
  // AddModel's two ways: a re-plan (dedicated, or no shared worker), or sessions on the shared
  // workers (each pauses in turn). Both leave the entry unpublished.
  absl::Status AddByReplan(const std::shared_ptr<ModelEntry>& m);
  absl::Status AddShared(const std::shared_ptr<ModelEntry>& m, const EnginePlan& plan,
                         const std::vector<int>& shared_workers);
  // AddShared's sessions for `m`: a narrow one on each shared worker (the first also probes the
  // batch size and measures the cost) and a wide one per group (the first measures), into
  // `layout` as model 0. Each worker or group is paused only while its session is made.
  absl::Status MakeSharedSessions(ModelEntry& m, const EnginePlan& plan,
                                  const std::vector<int>& shared_workers, SessionMap& made,
                                  sched::Scheduler::Layout& layout, ModelCost& cost,
                                  std::vector<BatchChoice>& choices);
  // The workers of `plan` that serve shared models (not a dedicated model's).
  std::vector<int> SharedWorkers(const EnginePlan& plan) const;
};

}  // namespace loom

#endif  // LOOM_ENGINE_ENGINE_IMPL_H_
