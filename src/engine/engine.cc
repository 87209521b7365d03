#include "loom/engine.h"

#include <filesystem>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/cpu_set.h"
#include "core/stats.h"
#include "sched/batcher.h"
#include "sched/core_planner.h"
#include "sched/scheduler.h"
#include "vision/model_inputs.h"

namespace loom {
namespace {

using sched::Clock;

constexpr int kDefaultMaxBatch = 8;
constexpr int kDefaultQueueCapacity = 1024;

SessionOptions WorkerSessionOptions(const ModelConfig& config, const std::vector<int>& cpus,
                                    bool allow_spinning) {
  SessionOptions options;
  options.backend = config.backend;
  options.intra_op_threads = static_cast<int>(cpus.size());
  options.allow_spinning = allow_spinning;
  // The calling (worker) thread runs on cpus[0]; intra-op thread i on cpus[i + 1].
  for (size_t i = 1; i < cpus.size(); ++i) options.thread_affinities.push_back({cpus[i]});
  return options;
}

// The model's warm-up request: the configured one, or random values at batch 1.
absl::StatusOr<NamedTensors> WarmupInputs(const ModelConfig& config, const ModelInfo& info) {
  if (!config.warmup_inputs.empty()) {
    LOOM_RETURN_IF_ERROR(ValidateInputs(info, config.warmup_inputs));
    return config.warmup_inputs;
  }
  vision::InputSpec spec;  // batch 1; dynamic image dims 320x320
  return vision::MakeInputs(info, spec);
}

// Median milliseconds per run of `config` at `rows` rows (the warm-up request repeated), on a
// thread pinned to `cpus` with a session like a worker's (the caller's affinity is left alone).
absl::StatusOr<double> MeasureCost(const ModelConfig& config, const std::vector<int>& cpus,
                                   bool allow_spinning, int runs, int rows = 1) {
  absl::StatusOr<double> result = absl::InternalError("not measured");
  std::thread probe([&] {
    result = [&]() -> absl::StatusOr<double> {
      LOOM_RETURN_IF_ERROR(PinCurrentThread(cpus));
      LOOM_ASSIGN_OR_RETURN(auto session,
                            CreateSession(config.path, WorkerSessionOptions(config, cpus, allow_spinning)));
      LOOM_ASSIGN_OR_RETURN(NamedTensors one, WarmupInputs(config, session->info()));
      const std::vector<const NamedTensors*> parts(static_cast<size_t>(rows), &one);
      const NamedTensors inputs = sched::ConcatRows(parts);
      LOOM_RETURN_IF_ERROR(session->Run(inputs).status());  // warm-up
      std::vector<double> ms;
      for (int i = 0; i < std::max(runs, 1); ++i) {
        const auto start = Clock::now();
        LOOM_RETURN_IF_ERROR(session->Run(inputs).status());
        ms.push_back(MillisecondsSince(start));
      }
      return Percentile(ms, 50);
    }();
  });
  probe.join();
  if (!result.ok()) {
    return absl::Status(result.status().code(),
                        absl::StrCat("measuring model '", config.name, "': ", result.status().message()));
  }
  return result;
}

constexpr int kBatchProbeRows = 4;
constexpr double kBatchWorthIt = 0.8;  // per-row cost at the probe batch vs single rows

}  // namespace

class Engine::Impl {
 public:
  std::vector<ModelConfig> configs;
  std::vector<ModelInfo> infos;
  std::vector<bool> batchable;
  std::map<std::string, int> index;
  EnginePlan plan;
  std::unique_ptr<sched::Scheduler> scheduler;

  absl::StatusOr<int> Find(const std::string& model) const {
    auto it = index.find(model);
    if (it != index.end()) return it->second;
    std::vector<std::string> names;
    for (const auto& c : configs) names.push_back("'" + c.name + "'");
    return absl::NotFoundError(absl::StrCat("no model '", model, "' in the engine (models: ",
                                            absl::StrJoin(names, ", "), ")"));
  }

  // Puts inputs in model order, validates them and works out the rows (dim 0).
  absl::StatusOr<std::unique_ptr<sched::Request>> MakeRequest(int m, NamedTensors inputs) const {
    const ModelInfo& info = infos[static_cast<size_t>(m)];
    LOOM_RETURN_IF_ERROR(ValidateInputs(info, inputs));
    auto request = std::make_unique<sched::Request>();
    request->inputs.resize(info.inputs.size());
    for (NamedTensor& in : inputs) {
      request->inputs[static_cast<size_t>(info.FindInput(in.name))] = std::move(in);
    }
    request->rows = 1;
    if (batchable[static_cast<size_t>(m)]) {
      const NamedTensor& first = request->inputs[0];
      request->rows = first.tensor.dim(0);
      for (const NamedTensor& in : request->inputs) {
        if (in.tensor.dim(0) != request->rows) {
          return absl::InvalidArgumentError(absl::StrCat(
              "model '", info.name, "': inputs disagree on dim 0 (the batch): '", first.name,
              "' has ", request->rows, ", '", in.name, "' has ", in.tensor.dim(0)));
        }
      }
      if (request->rows < 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("model '", info.name, "': a request needs at least one row"));
      }
      request->batch_key = sched::BatchKey(request->inputs);
    }
    return request;
  }
};

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Engine::~Engine() { Shutdown(); }

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(std::vector<ModelConfig> models,
                                                      EngineOptions options) {
  if (models.empty()) return absl::InvalidArgumentError("an engine needs at least one model");
  auto impl = std::make_unique<Impl>();
  std::vector<sched::QueueConfig> queues;
  std::vector<sched::PlannerModel> planner_models;
  for (ModelConfig& config : models) {
    if (config.name.empty()) config.name = std::filesystem::path(config.path).stem().string();
    if (impl->index.count(config.name)) {
      return absl::InvalidArgumentError(absl::StrCat("model name '", config.name, "' used twice"));
    }
    auto info = ReadModelInfo(config.path);
    if (!info.ok()) {
      return absl::Status(info.status().code(),
                          absl::StrCat("model '", config.name, "': ", info.status().message()));
    }
    const bool batchable = info->dynamic_batch;
    sched::QueueConfig q;
    q.model = config.name;
    q.batching.max_batch_size = config.max_batch_size.value_or(batchable ? kDefaultMaxBatch : 1);
    if (q.batching.max_batch_size < 1 || (!batchable && q.batching.max_batch_size > 1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model '", config.name, "': max_batch_size ", q.batching.max_batch_size,
          batchable ? " must be >= 1"
                    : absl::StrCat(" needs a dynamic dim 0, but input '", info->inputs[0].name,
                                   "' is ", info->inputs[0].Describe(),
                                   ": use instances for parallelism, or max_batch_size: 1")));
    }
    q.batching.preferred_batch_sizes = config.preferred_batch_sizes;
    q.batching.max_queue_delay = std::chrono::microseconds(
        config.max_queue_delay_us.value_or(0));
    q.capacity = config.queue_capacity.value_or(kDefaultQueueCapacity);
    if (q.capacity < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("model '", config.name, "': queue_capacity must be >= 1"));
    }
    impl->index[config.name] = static_cast<int>(impl->configs.size());
    impl->batchable.push_back(batchable);
    impl->infos.push_back(std::move(*info));
    planner_models.push_back({config.name, config.instances, config.threads, config.weight});
    impl->configs.push_back(config);
    queues.push_back(std::move(q));
  }

  std::vector<int> cpus = UsableCpus();
  if (options.cores < 0 || options.cores > static_cast<int>(cpus.size())) {
    return absl::InvalidArgumentError(absl::StrCat("cores: ", options.cores, " asked, but only ",
                                                   cpus.size(), " are usable (",
                                                   FormatCpuList(cpus), ")"));
  }
  if (options.cores > 0) cpus.resize(static_cast<size_t>(options.cores));

  const sched::CostFn cost = [&](const std::string& model, int threads,
                                 const std::vector<int>& probe_cpus) -> absl::StatusOr<double> {
    const ModelConfig& config = impl->configs[static_cast<size_t>(impl->index.at(model))];
    int shared = 0;
    for (const auto& m : planner_models) shared += (!m.instances && !m.threads) ? 1 : 0;
    // Spinning as the plan will set it for a worker of this size (see PlanCores).
    const bool spin = options.allow_spinning.value_or(threads > 1 && shared == 1);
    return MeasureCost(config, probe_cpus, spin, options.measure_runs);
  };
  std::optional<sched::FixedLayout> fixed;
  if (options.shared_workers || options.shared_threads) {
    fixed = sched::FixedLayout{options.shared_workers.value_or(1), options.shared_threads.value_or(1)};
  }
  LOOM_ASSIGN_OR_RETURN(impl->plan, sched::PlanCores(cpus, options.hint, planner_models,
                                                     options.allow_spinning, cost, fixed));

  // Auto max_batch_size: measure one row against a batch on the first worker serving the model.
  for (size_t m = 0; m < impl->configs.size(); ++m) {
    const ModelConfig& config = impl->configs[m];
    if (!impl->batchable[m] || config.max_batch_size) continue;
    const WorkerPlan* server = nullptr;
    for (const WorkerPlan& w : impl->plan.workers) {
      if (std::find(w.models.begin(), w.models.end(), config.name) != w.models.end()) server = &w;
      if (server) break;
    }
    LOOM_CHECK(server != nullptr);
    BatchChoice choice{config.name, kBatchProbeRows};
    LOOM_ASSIGN_OR_RETURN(choice.ms_per_row_at_1,
                          MeasureCost(config, server->cpus, server->allow_spinning, options.measure_runs));
    LOOM_ASSIGN_OR_RETURN(double batch_ms, MeasureCost(config, server->cpus, server->allow_spinning,
                                                       options.measure_runs, kBatchProbeRows));
    choice.ms_per_row_at_probe = batch_ms / kBatchProbeRows;
    choice.max_batch_size =
        choice.ms_per_row_at_probe <= kBatchWorthIt * choice.ms_per_row_at_1 ? kDefaultMaxBatch : 1;
    queues[m].batching.max_batch_size = choice.max_batch_size;
    impl->plan.batching.push_back(choice);
  }

  std::vector<sched::Worker> workers;
  for (const WorkerPlan& plan : impl->plan.workers) {
    sched::Worker worker;
    worker.plan = plan;
    worker.sessions.resize(impl->configs.size());
    for (const std::string& model : plan.models) {
      const int m = impl->index.at(model);
      const ModelConfig& config = impl->configs[static_cast<size_t>(m)];
      auto session = CreateSession(config.path, WorkerSessionOptions(config, plan.cpus, plan.allow_spinning));
      if (!session.ok()) {
        return absl::Status(session.status().code(),
                            absl::StrCat("model '", config.name, "': ", session.status().message()));
      }
      // Warm-up: the first runs of a session allocate its memory arena and are several times
      // slower than the rest; pay that here, not in a request.
      absl::Status warm = [&]() -> absl::Status {
        LOOM_ASSIGN_OR_RETURN(NamedTensors inputs, WarmupInputs(config, (*session)->info()));
        return (*session)->Run(inputs).status();
      }();
      if (!warm.ok()) {
        return absl::Status(warm.code(), absl::StrCat("model '", config.name, "': warm-up: ", warm.message()));
      }
      worker.sessions[static_cast<size_t>(m)] = std::move(*session);
    }
    workers.push_back(std::move(worker));
  }
  impl->scheduler = std::make_unique<sched::Scheduler>(std::move(queues), std::move(workers));
  impl->scheduler->Start();
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

void Engine::Submit(const std::string& model, NamedTensors inputs, const SubmitOptions& options,
                    InferCallback done) {
  auto m = impl_->Find(model);
  if (!m.ok()) return done(m.status());
  auto request = impl_->MakeRequest(*m, std::move(inputs));
  if (!request.ok()) {
    impl_->scheduler->CountRejected(*m);
    return done(request.status());
  }
  const ModelConfig& config = impl_->configs[static_cast<size_t>(*m)];
  if (options.deadline) {
    (*request)->deadline = *options.deadline;
  } else if (config.default_timeout_us) {
    (*request)->deadline = Clock::now() + std::chrono::microseconds(*config.default_timeout_us);
  }
  (*request)->done = std::move(done);
  absl::Status status = impl_->scheduler->Enqueue(*m, *request, options.block_when_full);
  if (!status.ok()) (*request)->done(std::move(status));  // not accepted: answer here
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
  return Submit(model, std::move(inputs), options).get();
}

absl::StatusOr<ModelStats> Engine::Stats(const std::string& model) const {
  LOOM_ASSIGN_OR_RETURN(int m, impl_->Find(model));
  return impl_->scheduler->Stats(m);
}

const ModelInfo* Engine::FindModel(const std::string& model) const {
  auto m = impl_->Find(model);
  return m.ok() ? &impl_->infos[static_cast<size_t>(*m)] : nullptr;
}

const EnginePlan& Engine::plan() const { return impl_->plan; }

void Engine::Shutdown() {
  if (impl_ && impl_->scheduler) impl_->scheduler->Shutdown();
}

}  // namespace loom
