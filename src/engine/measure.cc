// Engine: measurement. A model's cost at a thread count, timed on the cores it would run on (the
// planner's cost function, which Plan hands to the core planner, and a shared model added at run
// time), and the probe that decides an auto max_batch_size (one row against a batch). Costs are
// kept for re-plans.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/stats.h"
#include "core/tensor_rows.h"
#include "engine/engine_impl.h"
#include "sched/core_planner.h"

namespace loom {
namespace engine_internal {

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

int MaxBatchSizeFor(double ms_per_row_at_1, double ms_per_row_at_probe) {
  return ms_per_row_at_probe <= kBatchWorthIt * ms_per_row_at_1 ? kDefaultMaxBatch : 1;
}

}  // namespace engine_internal

absl::StatusOr<EnginePlan> Engine::Impl::Plan(const Entries& entries, SessionMap& made) {
  std::vector<sched::PlannerModel> planner_models;
  std::map<std::string, const ModelEntry*> by_name;
  int shared = 0;
  for (const auto& e : entries) {
    planner_models.push_back(
        {e->config.name, e->config.instances, e->config.threads, e->config.weight});
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
    LOOM_ASSIGN_OR_RETURN(std::shared_ptr<Session> session,
                          SessionFor(m, probe_cpus, spin, false, made));
    int64_t input_elements = 0;
    LOOM_ASSIGN_OR_RETURN(double ms, MeasureCost(m, *session, probe_cpus, input_elements));
    ModelCost& measured = costs[model];
    measured.model = model;
    measured.input_elements = input_elements;
    measured.ms_by_threads.emplace_back(threads, ms);
    std::sort(measured.ms_by_threads.begin(), measured.ms_by_threads.end());
    return ms;
  };
  std::optional<sched::FixedLayout> fixed;
  if (options.shared_workers || options.shared_threads) {
    fixed =
        sched::FixedLayout{options.shared_workers.value_or(1), options.shared_threads.value_or(1)};
  }
  return sched::PlanCores(cpus, options.hint, planner_models, options.allow_spinning, cost, fixed);
}

absl::StatusOr<double> Engine::Impl::MeasureCost(const ModelEntry& m, Session& session,
                                                 const std::vector<int>& cpus,
                                                 int64_t& input_elements) const {
  LOOM_ASSIGN_OR_RETURN(NamedTensors inputs, WarmupInputs(m));
  double ms = 0;
  LOOM_RETURN_IF_ERROR(engine_internal::RunPinned(cpus, [&]() -> absl::Status {
    LOOM_ASSIGN_OR_RETURN(ms, engine_internal::TimeRuns(session, inputs, options.measure_runs));
    return absl::OkStatus();
  }));
  input_elements = ElementCount(inputs);
  return ms;
}

absl::Status Engine::Impl::ChooseBatchSize(ModelEntry& m, const std::vector<int>& cpus, bool spin,
                                           SessionMap& made, std::vector<BatchChoice>& choices) {
  using engine_internal::kBatchProbeRows;
  if (!m.batchable || m.config.max_batch_size) return absl::OkStatus();
  LOOM_ASSIGN_OR_RETURN(std::shared_ptr<Session> session, SessionFor(m, cpus, spin, false, made));
  LOOM_ASSIGN_OR_RETURN(NamedTensors one, WarmupInputs(m));
  LOOM_ASSIGN_OR_RETURN(NamedTensors batch, WarmupInputs(m, kBatchProbeRows));
  BatchChoice choice{m.config.name, kBatchProbeRows};
  double batch_ms = 0;
  LOOM_RETURN_IF_ERROR(engine_internal::RunPinned(cpus, [&]() -> absl::Status {
    LOOM_ASSIGN_OR_RETURN(choice.ms_per_row_at_1,
                          engine_internal::TimeRuns(*session, one, options.measure_runs));
    LOOM_ASSIGN_OR_RETURN(batch_ms,
                          engine_internal::TimeRuns(*session, batch, options.measure_runs));
    return absl::OkStatus();
  }));
  choice.ms_per_row_at_probe = batch_ms / kBatchProbeRows;
  choice.max_batch_size =
      engine_internal::MaxBatchSizeFor(choice.ms_per_row_at_1, choice.ms_per_row_at_probe);
  m.max_batch_size = choice.max_batch_size;
  choices.push_back(choice);
  return absl::OkStatus();
}

void Engine::Impl::CopyCosts(EnginePlan& plan) const {
  for (ModelCost& c : plan.costs) {
    if (auto it = costs.find(c.model); it != costs.end()) {
      c.ms_by_threads = it->second.ms_by_threads;
      c.input_elements = it->second.input_elements;
    }
  }
}

}  // namespace loom
