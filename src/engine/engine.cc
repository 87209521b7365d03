#include "loom/engine.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <shared_mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/cpu_set.h"
#include "core/log.h"
#include "core/stats.h"
#include "core/tensor_rows.h"
#include "engine/trace.h"
#include "runtime/warmup_inputs.h"
#include "sched/batcher.h"
#include "sched/core_planner.h"
#include "sched/scheduler.h"

namespace loom {
namespace {

constexpr int kDefaultMaxBatch = 8;
constexpr int kDefaultQueueCapacity = 1024;
constexpr int kBatchProbeRows = 4;
constexpr double kBatchWorthIt = 0.8;  // per-row cost at the probe batch vs single rows

// Bounds on configured numbers (each a mistake beyond them; all keep arithmetic far from overflow).
constexpr int kMaxQueueCapacity = 1 << 20;
constexpr int kMaxBatchRows = 1 << 16;
constexpr int64_t kMaxDelayUs = int64_t{3600} * 1'000'000;  // an hour

// Options of a session that a worker runs on `cpus`: its thread on cpus[0], intra-op thread i on
// cpus[i + 1].
SessionOptions NarrowOptions(const ModelConfig& config, const std::vector<int>& cpus, bool spin) {
  SessionOptions options;
  options.backend = config.backend;
  options.intra_op_threads = static_cast<int>(cpus.size());
  options.allow_spinning = spin;
  for (size_t i = 1; i < cpus.size(); ++i) options.thread_affinities.push_back({cpus[i]});
  return options;
}

// A wide session spans a group's cpus; whichever worker of the group runs it, its intra-op
// threads may use any of the group's cores (the runner's own thread stays on its cores), and
// they spin only while it runs.
SessionOptions WideOptions(const ModelConfig& config, const std::vector<int>& cpus) {
  SessionOptions options;
  options.backend = config.backend;
  options.intra_op_threads = static_cast<int>(cpus.size());
  options.allow_spinning = true;
  options.stop_spinning_after_run = true;
  for (size_t i = 1; i < cpus.size(); ++i) options.thread_affinities.push_back(cpus);
  return options;
}

absl::StatusOr<std::unique_ptr<Session>> MakeSession(const ModelConfig& config,
                                                     const SessionOptions& options) {
  absl::StatusOr<std::unique_ptr<Session>> session = absl::InternalError("no session");
  try {
    session = config.session_factory ? config.session_factory(options)
                                     : CreateSession(config.path, options);
  } catch (const std::exception& e) {
    session = absl::InternalError(absl::StrCat("making a session threw: ", e.what()));
  } catch (...) {
    session = absl::InternalError("making a session threw");
  }
  if (session.ok() && !*session) session = absl::InternalError("the session factory returned null");
  if (!session.ok()) {
    return absl::Status(session.status().code(),
                        absl::StrCat("model '", config.name, "': ", session.status().message()));
  }
  return session;
}

// Runs `fn` on a thread pinned to `cpus` (the caller's affinity is left alone); any exception
// becomes a status.
absl::Status RunPinned(const std::vector<int>& cpus, const std::function<absl::Status()>& fn) {
  absl::Status status;
  std::thread probe([&] {
    try {
      status = PinCurrentThread(cpus);
      if (status.ok()) status = fn();
    } catch (const std::bad_alloc&) {
      status = absl::ResourceExhaustedError("out of memory");
    } catch (const std::exception& e) {
      status = absl::InternalError(e.what());
    } catch (...) {
      status = absl::InternalError("unknown exception");
    }
  });
  probe.join();
  return status;
}

// Median milliseconds per run of `inputs` on `session` (one warm-up run first), on the calling
// thread.
absl::StatusOr<double> TimeRuns(Session& session, const NamedTensors& inputs, int runs) {
  LOOM_RETURN_IF_ERROR(session.Run(inputs).status());  // warm-up
  std::vector<double> ms;
  for (int i = 0; i < std::max(runs, 1); ++i) {
    const auto start = Clock::now();
    LOOM_RETURN_IF_ERROR(session.Run(inputs).status());
    ms.push_back(MillisecondsSince(start));
  }
  return Median(ms);
}

std::string Quote(const std::string& s) { return "'" + s + "'"; }

}  // namespace

// ------------------------------------------------------------------------------------------------
// CoreLease

CoreLease::CoreLease(CoreLease&& other) noexcept { *this = std::move(other); }

CoreLease& CoreLease::operator=(CoreLease&& other) noexcept {
  if (this != &other) {
    Release();
    scheduler_ = std::move(other.scheduler_);
    worker_ = std::exchange(other.worker_, -1);
    cpus_ = std::move(other.cpus_);
    previous_ = std::move(other.previous_);
  }
  return *this;
}

CoreLease::~CoreLease() { Release(); }

void CoreLease::Release() {
  if (worker_ < 0) return;
  if (!previous_.empty()) (void)PinCurrentThread(previous_);
  static_cast<sched::Scheduler*>(scheduler_.get())->ReleaseLease(worker_);
  worker_ = -1;
  scheduler_.reset();
}

// ------------------------------------------------------------------------------------------------
// Engine

namespace {

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

}  // namespace

class Engine::Impl {
 public:
  EngineOptions options;
  std::vector<int> cpus;
  TimePoint started = Clock::now();
  std::shared_ptr<sched::Scheduler> scheduler;

  mutable std::shared_mutex models_mu;  // guards `models` (the request path takes it shared)
  std::map<std::string, std::shared_ptr<const ModelEntry>> models;

  std::mutex admin_mu;  // one AddModel / RemoveModel at a time
  mutable std::mutex plan_mu;
  EnginePlan plan;                               // requires plan_mu
  std::vector<PlanEvent> events;                 // requires plan_mu
  std::map<std::string, ModelCost> costs;        // measured, for re-plans; requires admin_mu
  // Sessions of the current layout, by SessionKey, so that a re-plan reuses unchanged ones.
  std::map<std::string, std::shared_ptr<Session>> sessions;  // requires admin_mu

  absl::StatusOr<std::shared_ptr<const ModelEntry>> Find(const std::string& model) const {
    std::shared_lock<std::shared_mutex> lock(models_mu);
    auto it = models.find(model);
    if (it != models.end()) return it->second;
    std::vector<std::pair<int, std::string>> ids;
    for (const auto& [name, entry] : models) ids.emplace_back(entry->id, name);
    std::sort(ids.begin(), ids.end());
    std::vector<std::string> names;
    for (const auto& [id, name] : ids) names.push_back(Quote(name));
    return absl::NotFoundError(absl::StrCat("no model '", model, "' in the engine (models: ",
                                            names.empty() ? "none" : absl::StrJoin(names, ", "), ")"));
  }

  void Note(const std::string& what) {
    std::lock_guard<std::mutex> lock(plan_mu);
    events.push_back({std::chrono::duration<double>(Clock::now() - started).count(), what});
    Log().info("plan: {}", what);
  }

  // Puts inputs in model order, validates them and works out the rows (dim 0).
  absl::StatusOr<std::unique_ptr<sched::Request>> MakeRequest(const ModelEntry& m,
                                                              NamedTensors inputs) const {
    const ModelInfo& info = m.info;
    LOOM_RETURN_IF_ERROR(ValidateInputs(info, inputs, options.limits));
    int64_t bytes = 0;
    for (const NamedTensor& in : inputs) bytes += static_cast<int64_t>(in.tensor.byte_size());
    if (bytes > options.max_request_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("model '", m.config.name, "': the request carries ",
                                                     bytes, " bytes of input, over the limit of ",
                                                     options.max_request_bytes, " (max_request_bytes)"));
    }
    auto request = std::make_unique<sched::Request>();
    request->inputs.resize(info.inputs.size());
    for (NamedTensor& in : inputs) {
      request->inputs[static_cast<size_t>(info.FindInput(in.name))] = std::move(in);
    }
    request->rows = 1;
    if (m.batchable) {
      const NamedTensor& first = request->inputs[0];
      request->rows = first.tensor.dim(0);
      for (const NamedTensor& in : request->inputs) {
        if (in.tensor.dim(0) != request->rows) {
          return absl::InvalidArgumentError(absl::StrCat(
              "model '", m.config.name, "': inputs disagree on dim 0 (the batch): '", first.name,
              "' has ", request->rows, ", '", in.name, "' has ", in.tensor.dim(0)));
        }
      }
      if (request->rows < 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("model '", m.config.name, "': a request needs at least one row"));
      }
      if (request->rows > std::max(m.max_batch_size, m.config.max_request_rows.value_or(0))) {
        return absl::InvalidArgumentError(absl::StrCat(
            "model '", m.config.name, "': the request has ", request->rows,
            " rows, more than the model's max_batch_size ", m.max_batch_size,
            m.config.max_request_rows ? absl::StrCat(" and max_request_rows ", *m.config.max_request_rows) : "",
            " (split it, or raise max_batch_size)"));
      }
      request->batch_key = sched::BatchKey(request->inputs);
    }
    return request;
  }

  // Checks a config and reads its model's metadata.
  absl::StatusOr<std::shared_ptr<ModelEntry>> Prepare(ModelConfig config) const;
  // Warm-up inputs of an entry: the configured ones or random ones.
  absl::StatusOr<NamedTensors> WarmupInputs(const ModelEntry& m, int rows = 1) const;
  // Makes (or reuses from `sessions`) the session `key` describes, on `cpus`, warmed up.
  absl::StatusOr<std::shared_ptr<Session>> SessionFor(const ModelEntry& m, const std::vector<int>& cpus,
                                                      bool spin, bool wide,
                                                      std::map<std::string, std::shared_ptr<Session>>& made);
  // The full layout for `plan` (every model's narrow and wide sessions), reusing sessions.
  absl::StatusOr<sched::Scheduler::Layout> BuildLayout(
      const EnginePlan& plan, const std::vector<std::shared_ptr<const ModelEntry>>& entries,
      std::map<std::string, std::shared_ptr<Session>>& made);
  // Plans the cores for `entries`; measures what is not known yet (the cores must be free).
  absl::StatusOr<EnginePlan> Plan(const std::vector<std::shared_ptr<const ModelEntry>>& entries,
                                  std::map<std::string, std::shared_ptr<Session>>& made);
  // Auto max_batch_size of a batchable entry, measured on `cpus` with its session there.
  absl::Status ChooseBatchSize(ModelEntry& m, const std::vector<int>& cpus, bool spin,
                               std::map<std::string, std::shared_ptr<Session>>& made,
                               std::vector<BatchChoice>& choices);
  sched::ModelSpec SpecFor(const ModelEntry& m, const EnginePlan& plan,
                           const sched::Scheduler::Layout& layout) const;
  absl::Status Replan(std::vector<std::shared_ptr<const ModelEntry>> entries, const std::string& why);
  std::vector<std::shared_ptr<const ModelEntry>> Entries() const {
    std::shared_lock<std::shared_mutex> lock(models_mu);
    std::vector<std::shared_ptr<const ModelEntry>> out;
    for (const auto& [name, e] : models) out.push_back(e);
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a->id < b->id; });
    return out;
  }
};

namespace {

std::string SessionKey(const std::string& model, const std::vector<int>& cpus, bool spin, bool wide) {
  return absl::StrCat(model, "|", FormatCpuList(cpus), "|", spin ? "spin" : "nospin", "|",
                      wide ? "wide" : "narrow");
}

bool Serves(const WorkerPlan& w, const std::string& model) {
  return std::find(w.models.begin(), w.models.end(), model) != w.models.end();
}

}  // namespace

absl::StatusOr<std::shared_ptr<ModelEntry>> Engine::Impl::Prepare(ModelConfig config) const {
  if (config.name.empty()) config.name = std::filesystem::path(config.path).stem().string();
  const std::string who = absl::StrCat("model '", config.name, "': ");
  auto info = ReadModelInfo(config.path);
  if (!info.ok()) return absl::Status(info.status().code(), who + std::string(info.status().message()));
  auto m = std::make_shared<ModelEntry>();
  m->batchable = info->dynamic_batch;
  m->dedicated = config.instances.has_value() || config.threads.has_value();
  for (const auto& [what, value] : {std::pair{"instances", config.instances}, std::pair{"threads", config.threads}}) {
    if (value && (*value < 1 || *value > sched::kMaxPlannedCount)) {
      return absl::InvalidArgumentError(absl::StrCat(who, what, " must be in [1, ", sched::kMaxPlannedCount,
                                                     "], got ", *value));
    }
  }
  if (config.max_batch_size) {
    const int b = *config.max_batch_size;
    if (b < 1 || b > kMaxBatchRows) {
      return absl::InvalidArgumentError(absl::StrCat(who, "max_batch_size must be in [1, ", kMaxBatchRows, "], got ", b));
    }
    if (!m->batchable && b > 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          who, "max_batch_size ", b, " needs a dynamic dim 0, but input '", info->inputs[0].name,
          "' is ", info->inputs[0].Describe(), ": use instances for parallelism, or max_batch_size: 1"));
    }
  }
  if (config.max_request_rows && (*config.max_request_rows < 1 || *config.max_request_rows > kMaxBatchRows)) {
    return absl::InvalidArgumentError(
        absl::StrCat(who, "max_request_rows must be in [1, ", kMaxBatchRows, "], got ", *config.max_request_rows));
  }
  for (int size : config.preferred_batch_sizes) {
    if (size < 1 || size > kMaxBatchRows) {
      return absl::InvalidArgumentError(absl::StrCat(who, "preferred_batch_sizes entries must be in [1, ",
                                                     kMaxBatchRows, "], got ", size));
    }
  }
  if (config.max_queue_delay_us && (*config.max_queue_delay_us < 0 || *config.max_queue_delay_us > kMaxDelayUs)) {
    return absl::InvalidArgumentError(absl::StrCat(who, "max_queue_delay_us must be in [0, ", kMaxDelayUs, "]"));
  }
  if (config.default_timeout_us && (*config.default_timeout_us < 1 || *config.default_timeout_us > kMaxDelayUs)) {
    return absl::InvalidArgumentError(absl::StrCat(who, "default_timeout_us must be in [1, ", kMaxDelayUs, "]"));
  }
  if (config.queue_capacity && (*config.queue_capacity < 1 || *config.queue_capacity > kMaxQueueCapacity)) {
    return absl::InvalidArgumentError(absl::StrCat(who, "queue_capacity must be in [1, ", kMaxQueueCapacity,
                                                   "], got ", *config.queue_capacity));
  }
  if (!(config.weight > 0) || config.weight > 1e6) {
    return absl::InvalidArgumentError(absl::StrCat(who, "weight must be in (0, 1e6]"));
  }
  if (!config.warmup_inputs.empty()) {
    if (absl::Status s = ValidateInputs(*info, config.warmup_inputs, options.limits); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat(who, "warm-up: ", s.message()));
    }
  }
  m->max_batch_size = m->batchable ? config.max_batch_size.value_or(kDefaultMaxBatch) : 1;
  m->default_timeout = std::chrono::microseconds(config.default_timeout_us.value_or(0));
  m->info = std::move(*info);
  m->config = std::move(config);
  return m;
}

absl::StatusOr<NamedTensors> Engine::Impl::WarmupInputs(const ModelEntry& m, int rows) const {
  NamedTensors one;
  if (!m.config.warmup_inputs.empty()) {
    one = m.config.warmup_inputs;
  } else {
    auto random = RandomInputs(m.info, ShapeSpec{}, 1, options.limits);
    if (!random.ok()) {
      return absl::Status(random.status().code(), absl::StrCat("model '", m.config.name,
                                                               "': warm-up: ", random.status().message()));
    }
    one = std::move(*random);
  }
  if (rows == 1) return one;
  const std::vector<const NamedTensors*> parts(static_cast<size_t>(rows), &one);
  return ConcatRows(parts, options.limits);
}

absl::StatusOr<std::shared_ptr<Session>> Engine::Impl::SessionFor(
    const ModelEntry& m, const std::vector<int>& cpus, bool spin, bool wide,
    std::map<std::string, std::shared_ptr<Session>>& made) {
  const std::string key = SessionKey(m.config.name, cpus, spin, wide);
  if (auto it = made.find(key); it != made.end()) return it->second;
  if (auto it = sessions.find(key); it != sessions.end()) {
    made[key] = it->second;
    return it->second;
  }
  std::shared_ptr<Session> session;
  // Made and warmed up on its own cores: the first runs allocate the memory arena and are several
  // times slower than the rest; that is paid here, not by a request.
  absl::Status status = RunPinned(cpus, [&]() -> absl::Status {
    LOOM_ASSIGN_OR_RETURN(auto s, MakeSession(m.config, wide ? WideOptions(m.config, cpus)
                                                             : NarrowOptions(m.config, cpus, spin)));
    LOOM_ASSIGN_OR_RETURN(NamedTensors inputs, WarmupInputs(m));
    if (absl::Status warm = s->Run(inputs).status(); !warm.ok()) {
      return absl::Status(warm.code(), absl::StrCat("model '", m.config.name, "': warm-up: ", warm.message()));
    }
    session = std::move(s);
    return absl::OkStatus();
  });
  LOOM_RETURN_IF_ERROR(status);
  made[key] = session;
  return session;
}

absl::StatusOr<EnginePlan> Engine::Impl::Plan(const std::vector<std::shared_ptr<const ModelEntry>>& entries,
                                              std::map<std::string, std::shared_ptr<Session>>& made) {
  std::vector<sched::PlannerModel> planner_models;
  std::map<std::string, const ModelEntry*> by_name;
  int shared = 0;
  for (const auto& e : entries) {
    planner_models.push_back({e->config.name, e->config.instances, e->config.threads, e->config.weight});
    by_name[e->config.name] = e.get();
    shared += e->dedicated ? 0 : 1;
  }
  const sched::CostFn cost = [&](const std::string& model, int threads,
                                 const std::vector<int>& probe_cpus) -> absl::StatusOr<double> {
    if (auto it = costs.find(model); it != costs.end()) {
      for (const auto& [t, ms] : it->second.ms_by_threads) {
        if (t == threads) return ms;
      }
    }
    const ModelEntry& m = *by_name.at(model);
    // Spinning as the plan will set it for a worker of this size (see PlanCores).
    const bool spin = options.allow_spinning.value_or(threads > 1 && shared == 1);
    LOOM_ASSIGN_OR_RETURN(std::shared_ptr<Session> session, SessionFor(m, probe_cpus, spin, false, made));
    LOOM_ASSIGN_OR_RETURN(NamedTensors inputs, WarmupInputs(m));
    absl::StatusOr<double> ms = absl::InternalError("not measured");
    LOOM_RETURN_IF_ERROR(RunPinned(probe_cpus, [&]() -> absl::Status {
      ms = TimeRuns(*session, inputs, options.measure_runs);
      return ms.status();
    }));
    if (!ms.ok()) {
      return absl::Status(ms.status().code(), absl::StrCat("measuring model '", model, "': ", ms.status().message()));
    }
    costs[model].model = model;
    costs[model].input_elements = ElementCount(inputs);
    costs[model].ms_by_threads.emplace_back(threads, *ms);
    std::sort(costs[model].ms_by_threads.begin(), costs[model].ms_by_threads.end());
    return *ms;
  };
  std::optional<sched::FixedLayout> fixed;
  if (options.shared_workers || options.shared_threads) {
    fixed = sched::FixedLayout{options.shared_workers.value_or(1), options.shared_threads.value_or(1)};
  }
  return sched::PlanCores(cpus, options.hint, planner_models, options.allow_spinning, cost, fixed);
}

absl::Status Engine::Impl::ChooseBatchSize(ModelEntry& m, const std::vector<int>& cpus, bool spin,
                                           std::map<std::string, std::shared_ptr<Session>>& made,
                                           std::vector<BatchChoice>& choices) {
  if (!m.batchable || m.config.max_batch_size) return absl::OkStatus();
  LOOM_ASSIGN_OR_RETURN(std::shared_ptr<Session> session, SessionFor(m, cpus, spin, false, made));
  LOOM_ASSIGN_OR_RETURN(NamedTensors one, WarmupInputs(m));
  LOOM_ASSIGN_OR_RETURN(NamedTensors batch, WarmupInputs(m, kBatchProbeRows));
  BatchChoice choice{m.config.name, kBatchProbeRows};
  double batch_ms = 0;
  LOOM_RETURN_IF_ERROR(RunPinned(cpus, [&]() -> absl::Status {
    LOOM_ASSIGN_OR_RETURN(choice.ms_per_row_at_1, TimeRuns(*session, one, options.measure_runs));
    LOOM_ASSIGN_OR_RETURN(batch_ms, TimeRuns(*session, batch, options.measure_runs));
    return absl::OkStatus();
  }));
  choice.ms_per_row_at_probe = batch_ms / kBatchProbeRows;
  choice.max_batch_size =
      choice.ms_per_row_at_probe <= kBatchWorthIt * choice.ms_per_row_at_1 ? kDefaultMaxBatch : 1;
  m.max_batch_size = choice.max_batch_size;
  choices.push_back(choice);
  return absl::OkStatus();
}

absl::StatusOr<sched::Scheduler::Layout> Engine::Impl::BuildLayout(
    const EnginePlan& plan, const std::vector<std::shared_ptr<const ModelEntry>>& entries,
    std::map<std::string, std::shared_ptr<Session>>& made) {
  sched::Scheduler::Layout layout;
  for (const WorkerPlan& w : plan.workers) layout.workers.push_back({w.cpus, w.group});
  for (const WideGroupPlan& g : plan.groups) layout.groups.push_back({g.workers});
  int max_id = -1;
  for (const auto& e : entries) max_id = std::max(max_id, e->id);
  layout.narrow.resize(static_cast<size_t>(max_id + 1));
  layout.wide.resize(static_cast<size_t>(max_id + 1));
  for (const auto& e : entries) {
    auto& narrow = layout.narrow[static_cast<size_t>(e->id)];
    auto& wide = layout.wide[static_cast<size_t>(e->id)];
    narrow.resize(plan.workers.size());
    wide.resize(plan.groups.size());
    for (size_t w = 0; w < plan.workers.size(); ++w) {
      const WorkerPlan& wp = plan.workers[w];
      if (!Serves(wp, e->config.name)) continue;
      LOOM_ASSIGN_OR_RETURN(narrow[w], SessionFor(*e, wp.cpus, wp.allow_spinning, false, made));
    }
    if (e->dedicated) continue;
    for (size_t g = 0; g < plan.groups.size(); ++g) {
      LOOM_ASSIGN_OR_RETURN(wide[g], SessionFor(*e, plan.groups[g].cpus, true, true, made));
    }
  }
  return layout;
}

sched::ModelSpec Engine::Impl::SpecFor(const ModelEntry& m, const EnginePlan& plan,
                                       const sched::Scheduler::Layout& layout) const {
  sched::ModelSpec spec;
  spec.name = m.config.name;
  spec.batching.max_batch_size = m.max_batch_size;
  spec.batching.preferred_batch_sizes = m.config.preferred_batch_sizes;
  spec.batching.max_queue_delay = std::chrono::microseconds(m.config.max_queue_delay_us.value_or(0));
  spec.capacity = m.config.queue_capacity.value_or(kDefaultQueueCapacity);
  if (static_cast<size_t>(m.id) < layout.narrow.size()) spec.narrow = layout.narrow[static_cast<size_t>(m.id)];
  if (static_cast<size_t>(m.id) < layout.wide.size()) spec.wide = layout.wide[static_cast<size_t>(m.id)];
  // Priors for the narrow/wide choice (and where inline runs happen): the measured costs.
  if (auto it = costs.find(m.config.name); it != costs.end()) {
    int narrow_threads = 0;
    for (const WorkerPlan& w : plan.workers) {
      if (Serves(w, m.config.name)) narrow_threads = w.threads;
    }
    for (const auto& [t, ms] : it->second.ms_by_threads) {
      if (t == narrow_threads) spec.narrow_ms = ms;
      if (!plan.groups.empty() && t == plan.groups[0].threads) spec.wide_ms = ms;
    }
    spec.measured_elements = it->second.input_elements;
  }
  return spec;
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(std::vector<ModelConfig> models,
                                                      EngineOptions options) {
  // No model is fine (a server whose repository starts empty): the first AddModel plans the cores.
  auto impl = std::make_unique<Impl>();
  if (options.measure_runs < 1 || options.measure_runs > 1000) {
    return absl::InvalidArgumentError(absl::StrCat("measure_runs must be in [1, 1000], got ", options.measure_runs));
  }
  if (options.max_request_bytes < 1) return absl::InvalidArgumentError("max_request_bytes must be >= 1");
  impl->options = options;

  std::vector<std::shared_ptr<ModelEntry>> entries;
  for (ModelConfig& config : models) {
    LOOM_ASSIGN_OR_RETURN(std::shared_ptr<ModelEntry> m, impl->Prepare(std::move(config)));
    for (const auto& e : entries) {
      if (e->config.name == m->config.name) {
        return absl::InvalidArgumentError(absl::StrCat("model name '", m->config.name, "' used twice"));
      }
    }
    m->id = static_cast<int>(entries.size());
    entries.push_back(std::move(m));
  }

  std::vector<int> cpus = UsableCpus();
  if (options.cores < 0 || options.cores > static_cast<int>(cpus.size())) {
    return absl::InvalidArgumentError(absl::StrCat("cores: ", options.cores, " asked, but only ",
                                                   cpus.size(), " are usable (",
                                                   FormatCpuList(cpus), ")"));
  }
  if (options.cores > 0) cpus.resize(static_cast<size_t>(options.cores));
  impl->cpus = cpus;

  std::map<std::string, std::shared_ptr<Session>> made;
  const std::vector<std::shared_ptr<const ModelEntry>> const_entries(entries.begin(), entries.end());
  LOOM_ASSIGN_OR_RETURN(EnginePlan plan, impl->Plan(const_entries, made));
  // Auto max_batch_size: one row against a batch, on the first worker serving the model.
  for (auto& m : entries) {
    for (const WorkerPlan& w : plan.workers) {
      if (!Serves(w, m->config.name)) continue;
      LOOM_RETURN_IF_ERROR(impl->ChooseBatchSize(*m, w.cpus, w.allow_spinning, made, plan.batching));
      break;
    }
  }
  for (const auto& [name, cost] : impl->costs) {
    for (ModelCost& c : plan.costs) {
      if (c.model == name) {
        c.ms_by_threads = cost.ms_by_threads;
        c.input_elements = cost.input_elements;
      }
    }
  }
  LOOM_ASSIGN_OR_RETURN(sched::Scheduler::Layout layout, impl->BuildLayout(plan, const_entries, made));
  impl->sessions = made;

  std::vector<sched::WorkerConfig> workers = layout.workers;
  std::vector<sched::GroupConfig> groups = layout.groups;
  sched::SchedulerOptions sched_options;
  sched_options.adaptive = options.hint == PlanHint::kAdaptive;
  sched_options.explore_every = options.explore_every;
  impl->scheduler = std::make_shared<sched::Scheduler>(std::move(workers), std::move(groups), sched_options);
  for (const auto& m : entries) {
    LOOM_CHECK(impl->scheduler->AddModel(impl->SpecFor(*m, plan, layout)) == m->id);
    impl->models[m->config.name] = m;
  }
  impl->plan = std::move(plan);
  impl->scheduler->Start();
  impl->started = Clock::now();
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Engine::~Engine() {
  if (impl_ && impl_->scheduler) impl_->scheduler->Shutdown();
}

void Engine::Submit(const std::string& model, NamedTensors inputs, const SubmitOptions& options,
                    InferCallback done) {
  auto answer = [&](absl::StatusOr<InferResult> result) {
    try {
      done(std::move(result));
    } catch (...) {
      Log().error("an inference callback threw; the exception was dropped");
    }
  };
  auto m = impl_->Find(model);
  if (!m.ok()) return answer(m.status());
  auto request = impl_->MakeRequest(**m, std::move(inputs));
  if (!request.ok()) {
    impl_->scheduler->CountRejected((*m)->id);
    return answer(request.status());
  }
  if (options.deadline) {
    (*request)->deadline = *options.deadline;
  } else if ((*m)->default_timeout.count() > 0) {
    (*request)->deadline = SaturatingAdd(Clock::now(), (*m)->default_timeout);
  }
  (*request)->cancelled = options.cancelled;
  if (options.run_inline_when_idle && (*request)->deadline > Clock::now() && !(*request)->Withdrawn()) {
    if (auto inline_result = impl_->scheduler->TryRunInline((*m)->id, **request)) return answer(std::move(*inline_result));
  }
  (*request)->done = std::move(done);
  absl::Status status = impl_->scheduler->Enqueue((*m)->id, *request, options.block_when_full);
  if (!status.ok()) {  // not accepted: answer here
    done = std::move((*request)->done);
    answer(std::move(status));
  }
}

std::future<absl::StatusOr<InferResult>> Engine::Submit(const std::string& model,
                                                        NamedTensors inputs,
                                                        const SubmitOptions& options) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<InferResult>>>();
  auto future = promise->get_future();
  Submit(model, std::move(inputs), options,
         [promise](absl::StatusOr<InferResult> result) { promise->set_value(std::move(result)); });
  return future;
}

absl::StatusOr<InferResult> Engine::Infer(const std::string& model, NamedTensors inputs,
                                          const SubmitOptions& options) {
  // Submit's inline run when a worker is idle; otherwise queued, and waited for on the stack.
  struct Waiter {
    std::mutex mu;
    std::condition_variable cv;
    std::optional<absl::StatusOr<InferResult>> result;
  } waiter;
  SubmitOptions here = options;
  here.run_inline_when_idle = true;
  Submit(model, std::move(inputs), here, [&waiter](absl::StatusOr<InferResult> r) {
    std::lock_guard<std::mutex> lock(waiter.mu);
    waiter.result = std::move(r);
    waiter.cv.notify_one();  // under the lock: the waiter may go as soon as it is released
  });
  std::unique_lock<std::mutex> lock(waiter.mu);
  waiter.cv.wait(lock, [&] { return waiter.result.has_value(); });
  return std::move(*waiter.result);
}

absl::Status Engine::Impl::Replan(std::vector<std::shared_ptr<const ModelEntry>> entries,
                                  const std::string& why) {
  // Every worker lends its cores while the cores are planned anew and sessions are made: costs
  // are measured on free cores, and no busy thread is added beside the workers'.
  std::vector<int> all;
  for (size_t w = 0; w < scheduler->Workers().size(); ++w) all.push_back(static_cast<int>(w));
  const auto paused = Clock::now();
  LOOM_RETURN_IF_ERROR(scheduler->AcquireWorkers(all));
  std::map<std::string, std::shared_ptr<Session>> made;
  absl::StatusOr<EnginePlan> plan = Plan(entries, made);
  absl::Status status = plan.status();
  // Auto batch sizes not decided yet (a model added here), on the first worker serving it.
  for (const auto& e : entries) {
    if (!status.ok() || !e->batchable || e->config.max_batch_size || e->max_batch_size != 0) continue;
    auto& m = const_cast<ModelEntry&>(*e);  // not published yet: no reader
    m.max_batch_size = 1;
    for (const WorkerPlan& w : plan->workers) {
      if (!Serves(w, m.config.name)) continue;
      status = ChooseBatchSize(m, w.cpus, w.allow_spinning, made, plan->batching);
      break;
    }
  }
  absl::StatusOr<sched::Scheduler::Layout> layout =
      status.ok() ? BuildLayout(*plan, entries, made) : absl::StatusOr<sched::Scheduler::Layout>(status);
  scheduler->ReleaseWorkers(all);
  if (!layout.ok()) return layout.status();
  for (ModelCost& c : plan->costs) {
    if (auto it = costs.find(c.model); it != costs.end()) {
      c.ms_by_threads = it->second.ms_by_threads;
      c.input_elements = it->second.input_elements;
    }
  }
  {
    std::lock_guard<std::mutex> lock(plan_mu);
    for (const BatchChoice& b : this->plan.batching) {
      bool kept = false;
      for (const auto& e : entries) kept |= e->config.name == b.model;
      if (kept) plan->batching.push_back(b);
    }
  }
  LOOM_RETURN_IF_ERROR(scheduler->Reconfigure(*layout));
  for (const auto& e : entries) {  // batching and priors for the new widths
    const sched::ModelSpec spec = SpecFor(*e, *plan, *layout);
    scheduler->ConfigureModel(e->id, spec.batching, spec.narrow_ms, spec.wide_ms, spec.measured_elements);
  }
  sessions = std::move(made);
  {
    std::lock_guard<std::mutex> lock(plan_mu);
    this->plan = std::move(*plan);
  }
  Note(absl::StrFormat("%s: cores re-planned (workers paused %.0f ms)", why,
                       std::chrono::duration<double, std::milli>(Clock::now() - paused).count()));
  return absl::OkStatus();
}

absl::Status Engine::AddModel(ModelConfig config) {
  Impl& impl = *impl_;
  std::lock_guard<std::mutex> admin(impl.admin_mu);
  const auto start = Clock::now();
  LOOM_ASSIGN_OR_RETURN(std::shared_ptr<ModelEntry> m, impl.Prepare(std::move(config)));
  if (impl.Find(m->config.name).ok()) {
    return absl::AlreadyExistsError(absl::StrCat("model '", m->config.name, "' is already loaded"));
  }
  const EnginePlan plan = this->plan();
  std::vector<int> shared_workers;
  std::set<std::string> dedicated_models;
  for (const auto& e : impl.Entries()) {
    if (e->dedicated) dedicated_models.insert(e->config.name);
  }
  for (size_t w = 0; w < plan.workers.size(); ++w) {
    const auto& models = plan.workers[w].models;
    const bool dedicated_worker = models.size() == 1 && dedicated_models.count(models[0]) > 0;
    if (!dedicated_worker) shared_workers.push_back(static_cast<int>(w));
  }

  if (m->dedicated || shared_workers.empty()) {
    // The cores must be re-planned: a slot for the model first (unreachable until published),
    // then a new layout with its workers.
    if (m->batchable && !m->config.max_batch_size) m->max_batch_size = 0;  // Replan measures it
    sched::ModelSpec spec;
    spec.name = m->config.name;
    m->id = impl.scheduler->AddModel(std::move(spec));
    std::vector<std::shared_ptr<const ModelEntry>> entries = impl.Entries();
    entries.push_back(m);
    absl::Status s = impl.Replan(entries, absl::StrCat("model '", m->config.name, "' added"));
    if (!s.ok()) {
      (void)impl.scheduler->RemoveModel(m->id);
      impl.costs.erase(m->config.name);
      return s;
    }
  } else {
    // A shared model: its sessions are made on each shared worker's cores in turn (that worker
    // alone pauses), then on each wide group's; the costs are measured there too.
    std::map<std::string, std::shared_ptr<Session>> made;
    std::vector<std::shared_ptr<Session>> narrow(plan.workers.size()), wide(plan.groups.size());
    std::vector<BatchChoice> choices;
    ModelCost cost{m->config.name, m->config.weight, {}};
    auto measure = [&](Session& session, const std::vector<int>& cpus) -> absl::Status {
      LOOM_ASSIGN_OR_RETURN(NamedTensors inputs, impl.WarmupInputs(*m));
      return RunPinned(cpus, [&]() -> absl::Status {
        LOOM_ASSIGN_OR_RETURN(double ms, TimeRuns(session, inputs, impl.options.measure_runs));
        cost.ms_by_threads.emplace_back(static_cast<int>(cpus.size()), ms);
        cost.input_elements = ElementCount(inputs);
        return absl::OkStatus();
      });
    };
    absl::Status status;
    for (int w : shared_workers) {
      const WorkerPlan& wp = plan.workers[static_cast<size_t>(w)];
      if (status = impl.scheduler->AcquireWorkers({w}); !status.ok()) break;
      auto session = impl.SessionFor(*m, wp.cpus, wp.allow_spinning, false, made);
      status = session.status();
      if (status.ok() && w == shared_workers.front()) {
        status = impl.ChooseBatchSize(*m, wp.cpus, wp.allow_spinning, made, choices);
        if (status.ok()) status = measure(**session, wp.cpus);
      }
      impl.scheduler->ReleaseWorkers({w});
      if (!status.ok()) break;
      narrow[static_cast<size_t>(w)] = *session;
    }
    for (size_t g = 0; status.ok() && g < plan.groups.size(); ++g) {
      const WideGroupPlan& gp = plan.groups[g];
      if (status = impl.scheduler->AcquireWorkers(gp.workers); !status.ok()) break;
      auto session = impl.SessionFor(*m, gp.cpus, true, true, made);
      status = session.status();
      if (status.ok() && g == 0) status = measure(**session, gp.cpus);
      impl.scheduler->ReleaseWorkers(gp.workers);
      if (status.ok()) wide[g] = *session;
    }
    LOOM_RETURN_IF_ERROR(status);
    std::sort(cost.ms_by_threads.begin(), cost.ms_by_threads.end());
    impl.costs[m->config.name] = cost;
    for (auto& [key, session] : made) impl.sessions[key] = session;
    sched::Scheduler::Layout layout;
    layout.narrow.assign(1, narrow);
    layout.wide.assign(1, wide);
    ModelEntry probe = *m;
    probe.id = 0;  // SpecFor reads the layout at the entry's id
    sched::ModelSpec spec = impl.SpecFor(probe, plan, layout);
    m->id = impl.scheduler->AddModel(std::move(spec));
    std::lock_guard<std::mutex> lock(impl.plan_mu);
    for (WorkerPlan& w : impl.plan.workers) {
      if (std::find(shared_workers.begin(), shared_workers.end(), &w - impl.plan.workers.data()) !=
          shared_workers.end()) {
        w.models.push_back(m->config.name);
      }
    }
    impl.plan.costs.push_back(cost);
    for (const BatchChoice& b : choices) impl.plan.batching.push_back(b);
  }
  {
    std::unique_lock<std::shared_mutex> lock(impl.models_mu);
    impl.models[m->config.name] = m;
  }
  impl.Note(absl::StrFormat("model '%s' added (%s, loaded in %.0f ms)", m->config.name,
                            m->dedicated ? "dedicated" : "shared",
                            std::chrono::duration<double, std::milli>(Clock::now() - start).count()));
  return absl::OkStatus();
}

absl::Status Engine::RemoveModel(const std::string& model) {
  Impl& impl = *impl_;
  std::lock_guard<std::mutex> admin(impl.admin_mu);
  LOOM_ASSIGN_OR_RETURN(std::shared_ptr<const ModelEntry> m, impl.Find(model));
  {
    // New requests find no model from here on; the accepted ones drain below.
    std::unique_lock<std::shared_mutex> lock(impl.models_mu);
    impl.models.erase(model);
  }
  LOOM_RETURN_IF_ERROR(impl.scheduler->RemoveModel(m->id));
  impl.costs.erase(model);
  std::erase_if(impl.sessions, [&](const auto& kv) { return kv.first.rfind(model + "|", 0) == 0; });
  {
    std::lock_guard<std::mutex> lock(impl.plan_mu);
    for (WorkerPlan& w : impl.plan.workers) std::erase(w.models, model);
    std::erase_if(impl.plan.costs, [&](const ModelCost& c) { return c.model == model; });
    std::erase_if(impl.plan.batching, [&](const BatchChoice& b) { return b.model == model; });
  }
  impl.Note(absl::StrCat("model '", model, "' removed"));
  if (m->dedicated) {
    // Its cores go back to the shared pool.
    LOOM_RETURN_IF_ERROR(impl.Replan(impl.Entries(), absl::StrCat("model '", model, "' removed")));
  }
  return absl::OkStatus();
}

std::vector<std::string> Engine::ModelNames() const {
  std::vector<std::string> names;
  for (const auto& e : impl_->Entries()) names.push_back(e->config.name);
  return names;
}

absl::StatusOr<ModelStats> Engine::Stats(const std::string& model) const {
  LOOM_ASSIGN_OR_RETURN(std::shared_ptr<const ModelEntry> m, impl_->Find(model));
  return impl_->scheduler->Stats(m->id);
}

absl::StatusOr<int> Engine::MaxBatchSize(const std::string& model) const {
  LOOM_ASSIGN_OR_RETURN(std::shared_ptr<const ModelEntry> m, impl_->Find(model));
  return m->max_batch_size;
}

std::vector<WorkerStats> Engine::Workers() const {
  std::vector<WorkerStats> out;
  for (const sched::WorkerStats& w : impl_->scheduler->Workers()) {
    out.push_back({w.cpus, w.group, w.busy_seconds, w.runs, w.tid});
  }
  return out;
}

int Engine::BusyThreads() const { return impl_->scheduler->busy_threads(); }
int Engine::MaxBusyThreads() const { return impl_->scheduler->max_busy_threads(); }

const ModelInfo* Engine::FindModel(const std::string& model) const {
  auto m = impl_->Find(model);
  return m.ok() ? &(*m)->info : nullptr;
}

EnginePlan Engine::plan() const {
  EnginePlan plan;
  {
    std::lock_guard<std::mutex> lock(impl_->plan_mu);
    plan = impl_->plan;
    plan.history = impl_->events;
  }
  plan.modes = impl_->scheduler->DescribeModes();
  for (const sched::ModeEvent& e : impl_->scheduler->ModeHistory()) {
    plan.history.push_back({std::chrono::duration<double>(e.when - impl_->started).count(),
                            absl::StrCat("model '", e.model, "' ", e.text)});
  }
  std::stable_sort(plan.history.begin(), plan.history.end(),
                   [](const PlanEvent& a, const PlanEvent& b) { return a.at_s < b.at_s; });
  return plan;
}

absl::StatusOr<CoreLease> Engine::LeaseCores(std::optional<std::chrono::steady_clock::time_point> deadline) {
  LOOM_ASSIGN_OR_RETURN(int worker, impl_->scheduler->AcquireLease(deadline.value_or(TimePoint::max())));
  CoreLease lease;
  lease.scheduler_ = impl_->scheduler;
  lease.worker_ = worker;
  lease.cpus_ = impl_->scheduler->WorkerCpus(worker);
  lease.previous_ = CurrentThreadCpus();
  if (absl::Status s = PinCurrentThread(lease.cpus_); !s.ok()) {
    lease.Release();
    return s;
  }
  return lease;
}

void Engine::StartTrace() { impl_->scheduler->SetTracing(true); }

std::string Engine::StopTrace() {
  impl_->scheduler->SetTracing(false);
  // Timestamps on the steady clock's own scale, so that other traces of the process (a pipeline's
  // node spans) line up with these.
  return ChromeTraceJson(impl_->scheduler->TakeTrace(), TimePoint{}, plan());
}

void Engine::Shutdown() {
  if (impl_ && impl_->scheduler) impl_->scheduler->Shutdown();
}

}  // namespace loom
