// Engine: creation, the request path (Submit, Infer), statistics, the plan as read, core leases
// and trace. The rest of Engine::Impl is in the files engine_impl.h lists.
#include "loom/engine.h"

#include <algorithm>
#include <condition_variable>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/cpu_set.h"
#include "core/log.h"
#include "engine/engine_impl.h"
#include "engine/trace.h"
#include "sched/batcher.h"

namespace loom {

using engine_internal::Serves;

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
// Engine::Impl: models and requests

absl::Status Engine::Impl::RefuseOnWorker(const char* what) const {
  if (!scheduler->OnWorkerThread()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat(what,
                   "() cannot be called from inside a completion callback: it waits for the "
                   "workers, and this thread is one of them"));
}

absl::StatusOr<std::shared_ptr<const Engine::Impl::ModelEntry>> Engine::Impl::Find(
    const std::string& model) const {
  std::shared_lock<std::shared_mutex> lock(models_mu);
  auto it = models.find(model);
  if (it != models.end()) return it->second;
  std::vector<std::pair<int, std::string>> ids;
  for (const auto& [name, entry] : models) ids.emplace_back(entry->id, name);
  std::sort(ids.begin(), ids.end());
  std::vector<std::string> names;
  for (const auto& [id, name] : ids) names.push_back(absl::StrCat("'", name, "'"));
  return absl::NotFoundError(absl::StrCat(
      "no model '", model,
      "' in the engine (models: ", names.empty() ? "none" : absl::StrJoin(names, ", "), ")"));
}

Engine::Impl::Entries Engine::Impl::LoadedEntries() const {
  std::shared_lock<std::shared_mutex> lock(models_mu);
  Entries out;
  for (const auto& [name, e] : models) out.push_back(e);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a->id < b->id; });
  return out;
}

void Engine::Impl::Note(const std::string& what) {
  std::lock_guard<std::mutex> lock(plan_mu);
  events.push_back({std::chrono::duration<double>(Clock::now() - started).count(), what});
  Log().info("plan: {}", what);
}

absl::StatusOr<std::unique_ptr<sched::Request>> Engine::Impl::MakeRequest(
    const ModelEntry& m, NamedTensors inputs) const {
  const ModelInfo& info = m.info;
  LOOM_RETURN_IF_ERROR(ValidateInputs(info, inputs, options.limits));
  int64_t bytes = 0;
  for (const NamedTensor& in : inputs) bytes += static_cast<int64_t>(in.tensor.byte_size());
  if (bytes > options.max_request_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", m.config.name, "': the request carries ", bytes,
        " bytes of input, over the limit of ", options.max_request_bytes, " (max_request_bytes)"));
  }
  auto request = std::make_unique<sched::Request>();
  request->inputs.resize(info.inputs.size());
  for (NamedTensor& in : inputs) {
    request->inputs[static_cast<size_t>(info.FindInput(in.name))] = std::move(in);
  }
  request->rows = 1;
  if (!m.batchable) return request;
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
    return absl::InvalidArgumentError(
        absl::StrCat("model '", m.config.name, "': the request has ", request->rows,
                     " rows, more than the model's max_batch_size ", m.max_batch_size,
                     m.config.max_request_rows
                         ? absl::StrCat(" and max_request_rows ", *m.config.max_request_rows)
                         : "",
                     " (split it, or raise max_batch_size)"));
  }
  request->batch_key = sched::BatchKey(request->inputs);
  return request;
}

// ------------------------------------------------------------------------------------------------
// Engine

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(std::vector<ModelConfig> models,
                                                       EngineOptions options) {
  // No model is fine (a server whose repository starts empty): the first AddModel plans the cores.
  LOOM_RETURN_IF_ERROR(engine_internal::CheckEngineOptions(options));
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  LOOM_ASSIGN_OR_RETURN(std::vector<std::shared_ptr<Impl::ModelEntry>> entries,
                        impl->PrepareAll(std::move(models)));
  LOOM_ASSIGN_OR_RETURN(impl->cpus, engine_internal::PlannedCpus(options));

  Impl::SessionMap made;
  const Impl::Entries const_entries(entries.begin(), entries.end());
  LOOM_ASSIGN_OR_RETURN(EnginePlan plan, impl->Plan(const_entries, made));
  // Auto max_batch_size: one row against a batch, on the first worker serving the model.
  for (auto& m : entries) {
    for (const WorkerPlan& w : plan.workers) {
      if (!Serves(w, m->config.name)) continue;
      LOOM_RETURN_IF_ERROR(
          impl->ChooseBatchSize(*m, w.cpus, w.allow_spinning, made, plan.batching));
      break;
    }
  }
  impl->CopyCosts(plan);
  LOOM_ASSIGN_OR_RETURN(sched::Scheduler::Layout layout,
                        impl->BuildLayout(plan, const_entries, made));
  impl->sessions = made;

  sched::SchedulerOptions sched_options;
  sched_options.adaptive = options.hint == PlanHint::kAdaptive;
  sched_options.explore_every = options.explore_every;
  impl->scheduler =
      std::make_shared<sched::Scheduler>(layout.workers, layout.groups, sched_options);
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
  if (options.run_inline_when_idle && (*request)->deadline > Clock::now() &&
      !(*request)->Withdrawn()) {
    if (auto inline_result = impl_->scheduler->TryRunInline((*m)->id, **request)) {
      return answer(std::move(*inline_result));
    }
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

std::vector<std::string> Engine::ModelNames() const {
  std::vector<std::string> names;
  for (const auto& e : impl_->LoadedEntries()) names.push_back(e->config.name);
  return names;
}

absl::StatusOr<ModelStats> Engine::Stats(const std::string& model) const {
  LOOM_ASSIGN_OR_RETURN(std::shared_ptr<const Impl::ModelEntry> m, impl_->Find(model));
  return impl_->scheduler->Stats(m->id);
}

absl::StatusOr<int> Engine::MaxBatchSize(const std::string& model) const {
  LOOM_ASSIGN_OR_RETURN(std::shared_ptr<const Impl::ModelEntry> m, impl_->Find(model));
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

absl::StatusOr<CoreLease> Engine::LeaseCores(
    std::optional<std::chrono::steady_clock::time_point> deadline) {
  LOOM_RETURN_IF_ERROR(impl_->RefuseOnWorker("LeaseCores"));
  LOOM_ASSIGN_OR_RETURN(int worker,
                        impl_->scheduler->AcquireLease(deadline.value_or(TimePoint::max())));
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
