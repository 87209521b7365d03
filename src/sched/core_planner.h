// The core planner: the one owner of the core budget. Gives every worker its own set of cores so
// that the threads busy at any moment never outnumber the usable cores, and sizes the shared
// workers (workers × threads each) from measured model costs.
#ifndef LOOM_SCHED_CORE_PLANNER_H_
#define LOOM_SCHED_CORE_PLANNER_H_

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "loom/plan.h"
#include "loom/status.h"

namespace loom::sched {

// The most instances, threads or workers one configuration may ask for (machines have fewer cores;
// a larger number is a mistake, and bounding it keeps every product of them far from overflow).
inline constexpr int kMaxPlannedCount = 4096;

struct PlannerModel {
  std::string name;
  // Both empty: served by the shared workers. Otherwise `instances` dedicated workers of
  // `threads` threads each (the missing one defaults to 1).
  std::optional<int> instances;
  std::optional<int> threads;
  double weight = 1.0;
};

// Measures one model's milliseconds per request with `threads` intra-op threads pinned to `cpus`
// (the engine creates a probe session for it).
using CostFn = std::function<absl::StatusOr<double>(const std::string& model, int threads,
                                                    const std::vector<int>& cpus)>;

// Makes the plan over `cpus` (usable, ascending):
//   1. dedicated workers first, cores in order; FAILED_PRECONDITION if they need more than exist;
//   2. the remaining cores go to shared workers serving every other model:
//      - latency hint: one worker with all of them;
//      - throughput hint: for each candidate T in {1, 2, 4, ..., R} ∪ {R}, W = R / T workers;
//        the layout with the most estimated throughput for the weighted mix wins
//        (Σ weight / Σ weight × ms(T) / W), the larger T on a near-tie (≤ 3%: lower latency).
//        `cost` is called for every shared model and candidate T (not for the latency hint).
//   - adaptive hint: as throughput, plus wide groups: consecutive shared workers whose cores
//     together make the thread count with the lowest measured (weighted) latency, when that is
//     wider than a narrow worker.
//   Spinning: `spinning` if given; else on only for a multi-thread worker serving one model.
//   `fixed`, if given, replaces step 2's choice: that many shared workers of that many threads.
struct FixedLayout {
  int workers = 1;
  int threads = 1;
};
absl::StatusOr<EnginePlan> PlanCores(const std::vector<int>& cpus, PlanHint hint,
                                     const std::vector<PlannerModel>& models,
                                     std::optional<bool> spinning, const CostFn& cost,
                                     std::optional<FixedLayout> fixed = std::nullopt);

}  // namespace loom::sched

#endif  // LOOM_SCHED_CORE_PLANNER_H_
