// Engine: changing the set of models while the engine runs. A shared model is added worker by
// worker (each pauses only while its session is made and measured); a dedicated model, or the
// removal of one, re-plans every core while all workers are paused. Also the scheduler's spec of
// a model under a plan (batching, sessions and the measured priors of its narrow/wide choice).
#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/engine_impl.h"

namespace loom {

using engine_internal::Serves;

sched::ModelSpec Engine::Impl::SpecFor(const ModelEntry& m, const EnginePlan& plan,
                                       const sched::Scheduler::Layout& layout) const {
  sched::ModelSpec spec;
  spec.name = m.config.name;
  spec.batching.max_batch_size = m.max_batch_size;
  spec.batching.preferred_batch_sizes = m.config.preferred_batch_sizes;
  spec.batching.max_queue_delay =
      std::chrono::microseconds(m.config.max_queue_delay_us.value_or(0));
  spec.capacity = m.config.queue_capacity.value_or(engine_internal::kDefaultQueueCapacity);
  const size_t id = static_cast<size_t>(m.id);
  if (id < layout.narrow.size()) spec.narrow = layout.narrow[id];
  if (id < layout.wide.size()) spec.wide = layout.wide[id];
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

absl::Status Engine::Impl::Replan(Entries entries, const std::string& why) {
  // Every worker lends its cores while the cores are planned anew and sessions are made: costs
  // are measured on free cores, and no busy thread is added beside the workers'.
  std::vector<int> all;
  for (size_t w = 0; w < scheduler->Workers().size(); ++w) all.push_back(static_cast<int>(w));
  const auto paused = Clock::now();
  LOOM_RETURN_IF_ERROR(scheduler->AcquireWorkers(all));
  SessionMap made;
  absl::StatusOr<EnginePlan> plan = Plan(entries, made);
  absl::Status status = plan.status();
  // Auto batch sizes not decided yet (a model added here), on the first worker serving it.
  for (const auto& e : entries) {
    if (!status.ok() || !e->batchable || e->config.max_batch_size || e->max_batch_size != 0) {
      continue;
    }
    auto& m = const_cast<ModelEntry&>(*e);  // not published yet: no reader
    m.max_batch_size = 1;
    for (const WorkerPlan& w : plan->workers) {
      if (!Serves(w, m.config.name)) continue;
      status = ChooseBatchSize(m, w.cpus, w.allow_spinning, made, plan->batching);
      break;
    }
  }
  absl::StatusOr<sched::Scheduler::Layout> layout =
      status.ok() ? BuildLayout(*plan, entries, made)
                  : absl::StatusOr<sched::Scheduler::Layout>(status);
  scheduler->ReleaseWorkers(all);
  if (!layout.ok()) return layout.status();
  CopyCosts(*plan);
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
    scheduler->ConfigureModel(e->id, spec.batching, spec.narrow_ms, spec.wide_ms,
                              spec.measured_elements);
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

std::vector<int> Engine::Impl::SharedWorkers(const EnginePlan& plan) const {
  std::set<std::string> dedicated_models;
  for (const auto& e : LoadedEntries()) {
    if (e->dedicated) dedicated_models.insert(e->config.name);
  }
  std::vector<int> shared;
  for (size_t w = 0; w < plan.workers.size(); ++w) {
    const auto& models = plan.workers[w].models;
    const bool dedicated_worker = models.size() == 1 && dedicated_models.count(models[0]) > 0;
    if (!dedicated_worker) shared.push_back(static_cast<int>(w));
  }
  return shared;
}

absl::Status Engine::Impl::AddByReplan(const std::shared_ptr<ModelEntry>& m) {
  // A slot for the model first (unreachable until published), then a new layout with its workers.
  if (m->batchable && !m->config.max_batch_size) m->max_batch_size = 0;  // Replan measures it
  sched::ModelSpec spec;
  spec.name = m->config.name;
  m->id = scheduler->AddModel(std::move(spec));
  Entries entries = LoadedEntries();
  entries.push_back(m);
  absl::Status s = Replan(entries, absl::StrCat("model '", m->config.name, "' added"));
  if (!s.ok()) {
    (void)scheduler->RemoveModel(m->id);
    costs.erase(m->config.name);
  }
  return s;
}

absl::Status Engine::Impl::MakeSharedSessions(ModelEntry& m, const EnginePlan& plan,
                                              const std::vector<int>& shared_workers,
                                              SessionMap& made, sched::Scheduler::Layout& layout,
                                              ModelCost& cost, std::vector<BatchChoice>& choices) {
  auto measure = [&](Session& session, const std::vector<int>& cpus) -> absl::Status {
    int64_t input_elements = 0;
    LOOM_ASSIGN_OR_RETURN(double ms, MeasureCost(m, session, cpus, input_elements));
    cost.ms_by_threads.emplace_back(static_cast<int>(cpus.size()), ms);
    cost.input_elements = input_elements;
    return absl::OkStatus();
  };
  auto& narrow = layout.narrow[0];
  auto& wide = layout.wide[0];
  for (int w : shared_workers) {
    const WorkerPlan& wp = plan.workers[static_cast<size_t>(w)];
    LOOM_RETURN_IF_ERROR(scheduler->AcquireWorkers({w}));
    auto session = SessionFor(m, wp.cpus, wp.allow_spinning, false, made);
    absl::Status status = session.status();
    if (status.ok() && w == shared_workers.front()) {
      status = ChooseBatchSize(m, wp.cpus, wp.allow_spinning, made, choices);
      if (status.ok()) status = measure(**session, wp.cpus);
    }
    scheduler->ReleaseWorkers({w});
    LOOM_RETURN_IF_ERROR(status);
    narrow[static_cast<size_t>(w)] = *session;
  }
  for (size_t g = 0; g < plan.groups.size(); ++g) {
    const WideGroupPlan& gp = plan.groups[g];
    LOOM_RETURN_IF_ERROR(scheduler->AcquireWorkers(gp.workers));
    auto session = SessionFor(m, gp.cpus, true, true, made);
    absl::Status status = session.status();
    if (status.ok() && g == 0) status = measure(**session, gp.cpus);
    scheduler->ReleaseWorkers(gp.workers);
    LOOM_RETURN_IF_ERROR(status);
    wide[g] = *session;
  }
  return absl::OkStatus();
}

absl::Status Engine::Impl::AddShared(const std::shared_ptr<ModelEntry>& m, const EnginePlan& plan,
                                     const std::vector<int>& shared_workers) {
  // Its sessions are made on each shared worker's cores in turn (that worker alone pauses), then
  // on each wide group's; the costs are measured there too.
  SessionMap made;
  sched::Scheduler::Layout layout;  // the model's sessions alone, as if its id were 0
  layout.narrow.assign(1, std::vector<std::shared_ptr<Session>>(plan.workers.size()));
  layout.wide.assign(1, std::vector<std::shared_ptr<Session>>(plan.groups.size()));
  std::vector<BatchChoice> choices;
  ModelCost cost{m->config.name, m->config.weight, {}};
  LOOM_RETURN_IF_ERROR(MakeSharedSessions(*m, plan, shared_workers, made, layout, cost, choices));
  std::sort(cost.ms_by_threads.begin(), cost.ms_by_threads.end());
  costs[m->config.name] = cost;
  for (auto& [key, session] : made) sessions[key] = session;
  ModelEntry probe = *m;
  probe.id = 0;  // SpecFor reads the layout at the entry's id
  m->id = scheduler->AddModel(SpecFor(probe, plan, layout));
  std::lock_guard<std::mutex> lock(plan_mu);
  for (int w : shared_workers) {
    if (static_cast<size_t>(w) < this->plan.workers.size()) {
      this->plan.workers[static_cast<size_t>(w)].models.push_back(m->config.name);
    }
  }
  this->plan.costs.push_back(cost);
  for (const BatchChoice& b : choices) this->plan.batching.push_back(b);
  return absl::OkStatus();
}

absl::Status Engine::AddModel(ModelConfig config) {
  Impl& impl = *impl_;
  LOOM_RETURN_IF_ERROR(impl.RefuseOnWorker("AddModel"));
  std::lock_guard<std::mutex> admin(impl.admin_mu);
  const auto start = Clock::now();
  LOOM_ASSIGN_OR_RETURN(std::shared_ptr<Impl::ModelEntry> m, impl.Prepare(std::move(config)));
  if (impl.Find(m->config.name).ok()) {
    return absl::AlreadyExistsError(absl::StrCat("model '", m->config.name, "' is already loaded"));
  }
  const EnginePlan plan = this->plan();
  const std::vector<int> shared_workers = impl.SharedWorkers(plan);
  if (m->dedicated || shared_workers.empty()) {
    LOOM_RETURN_IF_ERROR(impl.AddByReplan(m));
  } else {
    LOOM_RETURN_IF_ERROR(impl.AddShared(m, plan, shared_workers));
  }
  {
    std::unique_lock<std::shared_mutex> lock(impl.models_mu);
    impl.models[m->config.name] = m;
  }
  impl.Note(
      absl::StrFormat("model '%s' added (%s, loaded in %.0f ms)", m->config.name,
                      m->dedicated ? "dedicated" : "shared",
                      std::chrono::duration<double, std::milli>(Clock::now() - start).count()));
  return absl::OkStatus();
}

absl::Status Engine::RemoveModel(const std::string& model) {
  Impl& impl = *impl_;
  LOOM_RETURN_IF_ERROR(impl.RefuseOnWorker("RemoveModel"));
  std::lock_guard<std::mutex> admin(impl.admin_mu);
  LOOM_ASSIGN_OR_RETURN(std::shared_ptr<const Impl::ModelEntry> m, impl.Find(model));
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
    LOOM_RETURN_IF_ERROR(
        impl.Replan(impl.LoadedEntries(), absl::StrCat("model '", model, "' removed")));
  }
  return absl::OkStatus();
}

}  // namespace loom
