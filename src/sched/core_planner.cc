#include "sched/core_planner.h"

#include <algorithm>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/cpu_set.h"

namespace loom {

const char* PlanHintName(PlanHint hint) {
  switch (hint) {
    case PlanHint::kAdaptive:
      return "adaptive";
    case PlanHint::kThroughput:
      return "throughput";
    case PlanHint::kLatency:
      return "latency";
  }
  return "?";
}

std::string EnginePlan::Describe() const {
  std::ostringstream out;
  int threads = 0;
  for (const WorkerPlan& w : workers) threads += w.threads;
  out << absl::StrFormat("plan: %s hint, %d usable cores, %d workers, %d threads in all\n",
                         PlanHintName(hint), usable_cores, workers.size(), threads);
  for (size_t i = 0; i < workers.size(); ++i) {
    const WorkerPlan& w = workers[i];
    out << absl::StrFormat("  worker %-2d cpus %-6s %d thread%s  spin %-3s  models: %s\n", i,
                           FormatCpuList(w.cpus), w.threads, w.threads == 1 ? " " : "s",
                           w.allow_spinning ? "on" : "off", absl::StrJoin(w.models, ", "));
  }
  for (size_t g = 0; g < groups.size(); ++g) {
    out << absl::StrFormat(
        "  wide group %d: workers %s, cpus %s, %d threads (spin only while running)\n", g,
        absl::StrJoin(groups[g].workers, ","), FormatCpuList(groups[g].cpus), groups[g].threads);
  }
  if (!costs.empty()) {
    out << "  measured ms per request (batch 1) by intra-op threads:\n";
    for (const ModelCost& c : costs) {
      out << absl::StrFormat("    %-24s", c.model);
      for (const auto& [t, ms] : c.ms_by_threads) out << absl::StrFormat("  %dt: %.2f", t, ms);
      if (c.weight != 1.0) out << absl::StrFormat("  (weight %.2f)", c.weight);
      out << "\n";
    }
  }
  if (!layouts.empty()) {
    out << "  layouts compared (estimated requests/s of the mix):";
    for (const LayoutEstimate& l : layouts) {
      out << absl::StrFormat("  %dx%d: %.1f", l.workers, l.threads, l.requests_per_s);
    }
    out << "\n";
  }
  if (!reason.empty()) out << "  why: " << reason << "\n";
  if (!modes.empty())
    out << "  narrow or wide, per batch (measured on the runs so far):\n" << modes;
  for (const PlanEvent& e : history) out << absl::StrFormat("  at %.1f s: %s\n", e.at_s, e.what);
  for (const BatchChoice& b : batching) {
    out << absl::StrFormat(
        "  batching %s: %.2f ms/row at batch 1, %.2f at batch %d -> max_batch_size %d\n", b.model,
        b.ms_per_row_at_1, b.ms_per_row_at_probe, b.probe_rows, b.max_batch_size);
  }
  return out.str();
}

namespace sched {
namespace {

std::vector<int> CandidateThreadCounts(int cores) {
  std::vector<int> counts;
  for (int t = 1; t <= cores; t *= 2) counts.push_back(t);
  if (counts.back() != cores) counts.push_back(cores);
  return counts;
}

// Splits `cpus` into `workers` consecutive groups, the first `cpus.size() % workers` one larger.
std::vector<std::vector<int>> SplitCpus(const std::vector<int>& cpus, int workers) {
  std::vector<std::vector<int>> groups(static_cast<size_t>(workers));
  const size_t base = cpus.size() / workers, extra = cpus.size() % workers;
  size_t next = 0;
  for (size_t w = 0; w < groups.size(); ++w) {
    const size_t n = base + (w < extra ? 1 : 0);
    groups[w].assign(cpus.begin() + next, cpus.begin() + next + n);
    next += n;
  }
  return groups;
}

// Step 1: the dedicated workers, cores in order from the first. Returns how many cores they
// took; `shared` gets the names of the other models. Each request is bounded, and the sum is
// taken in 64 bits: no product of configured numbers can wrap past the budget check.
absl::StatusOr<size_t> PlanDedicated(const std::vector<int>& cpus,
                                     const std::vector<PlannerModel>& models,
                                     std::optional<bool> spinning, EnginePlan& plan,
                                     std::vector<std::string>& shared) {
  std::vector<std::string> demands;
  int64_t dedicated_cores = 0;
  for (const PlannerModel& m : models) {
    if (!m.instances && !m.threads) {
      shared.push_back(m.name);
      continue;
    }
    const int64_t instances = m.instances.value_or(1), threads = m.threads.value_or(1);
    if (instances < 1 || threads < 1 || instances > kMaxPlannedCount ||
        threads > kMaxPlannedCount) {
      return absl::InvalidArgumentError(absl::StrCat("model '", m.name, "': instances (", instances,
                                                     ") and threads (", threads,
                                                     ") must be in [1, ", kMaxPlannedCount, "]"));
    }
    dedicated_cores += instances * threads;
    demands.push_back(absl::StrCat("'", m.name, "' ", instances, "x", threads));
  }
  if (dedicated_cores > plan.usable_cores ||
      (!shared.empty() && dedicated_cores >= plan.usable_cores)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the plan needs ", dedicated_cores, " cores for dedicated instances (",
        absl::StrJoin(demands, ", "), ")",
        shared.empty() ? "" : " plus at least 1 for the shared models", ", but only ",
        plan.usable_cores, " are usable (", FormatCpuList(cpus), "): lower instances or threads"));
  }
  size_t next = 0;
  for (const PlannerModel& m : models) {
    if (!m.instances && !m.threads) continue;
    for (int i = 0; i < m.instances.value_or(1); ++i) {
      WorkerPlan w;
      w.threads = m.threads.value_or(1);
      w.cpus.assign(cpus.begin() + static_cast<std::ptrdiff_t>(next),
                    cpus.begin() + static_cast<std::ptrdiff_t>(next) + w.threads);
      next += static_cast<size_t>(w.threads);
      w.models = {m.name};
      w.allow_spinning = spinning.value_or(w.threads > 1);
      plan.workers.push_back(std::move(w));
    }
  }
  return next;
}

// The shape of the shared workers: `workers` (0: as many as fit) of `threads` threads each, and
// the threads of a wide group's runs (0: no groups).
struct SharedShape {
  int threads = 0;
  int workers = 0;
  int wide_threads = 0;
};

// A fixed shape, checked against the `rest` of the cores.
absl::StatusOr<SharedShape> FixedShape(const FixedLayout& fixed, const std::vector<int>& rest,
                                       EnginePlan& plan) {
  const int64_t needed = static_cast<int64_t>(fixed.workers) * fixed.threads;
  if (fixed.workers < 1 || fixed.threads < 1 || fixed.workers > kMaxPlannedCount ||
      fixed.threads > kMaxPlannedCount || needed > static_cast<int64_t>(rest.size())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "shared layout ", fixed.workers, "x", fixed.threads, " needs ", needed, " cores, but ",
        rest.size(), " remain for shared models (", FormatCpuList(rest), ")"));
  }
  plan.reason =
      absl::StrCat("fixed layout: ", fixed.workers, " x ", fixed.threads, " as configured");
  return SharedShape{fixed.threads, fixed.workers, 0};
}

// The throughput hint's layouts: each shared model's cost at every candidate thread count (into
// plan.costs) and each layout's estimated throughput of the weighted mix (plan.layouts).
absl::Status MeasureLayouts(const std::vector<int>& rest, const std::vector<PlannerModel>& models,
                            const CostFn& cost, EnginePlan& plan) {
  double total_weight = 0;
  for (const PlannerModel& m : models) {
    if (!m.instances && !m.threads) {
      plan.costs.push_back({m.name, m.weight, {}});
      total_weight += m.weight;
    }
  }
  const int r = static_cast<int>(rest.size());
  for (int t : CandidateThreadCounts(r)) {
    const std::vector<int> probe_cpus(rest.begin(), rest.begin() + t);
    double mix_ms = 0;  // ms of one worker per unit of the weighted mix
    for (ModelCost& c : plan.costs) {
      LOOM_ASSIGN_OR_RETURN(double ms, cost(c.model, t, probe_cpus));
      c.ms_by_threads.emplace_back(t, ms);
      mix_ms += c.weight * ms;
    }
    const int workers = r / t;
    plan.layouts.push_back({workers, t, mix_ms > 0 ? total_weight * workers * 1000.0 / mix_ms : 0});
  }
  return absl::OkStatus();
}

// The layout with the most throughput; on a near-tie (within 3%) the one with more threads per
// worker. Returns its threads and says why in plan.reason.
int ChooseLayout(EnginePlan& plan) {
  const LayoutEstimate* best = &plan.layouts.front();
  for (const LayoutEstimate& l : plan.layouts) {
    if (l.requests_per_s > best->requests_per_s) best = &l;
  }
  const LayoutEstimate* chosen = best;
  for (const LayoutEstimate& l : plan.layouts) {
    if (l.threads > chosen->threads && l.requests_per_s >= 0.97 * best->requests_per_s) {
      chosen = &l;
    }
  }
  plan.reason = absl::StrFormat(
      "%d x %d thread%s: est. %.1f requests/s, the most of %d layouts%s", chosen->workers,
      chosen->threads, chosen->threads == 1 ? "" : "s", chosen->requests_per_s, plan.layouts.size(),
      chosen != best ? " within 3% (fewer, wider workers: lower latency)" : "");
  return chosen->threads;
}

// Adaptive hint: the threads of a wide run, among the measured widths above the narrow one (and a
// multiple of it), the lowest measured (weighted) latency; 0 for none. Groups are made even when
// the measurement says narrow is as fast: the choice is made per batch from the runs themselves,
// and a load-time measurement can be wrong (another process was busy) — a plan without groups
// could never find out.
int WideThreads(const EnginePlan& plan, int threads) {
  int wide_threads = 0;
  double best_ms = 0;
  for (size_t i = 0; i < plan.layouts.size(); ++i) {
    if (plan.layouts[i].threads <= threads || plan.layouts[i].threads % threads != 0) continue;
    double ms = 0;
    for (const ModelCost& c : plan.costs) ms += c.weight * c.ms_by_threads[i].second;
    if (wide_threads == 0 || ms < best_ms * 0.97) {
      wide_threads = plan.layouts[i].threads;
      best_ms = ms;
    }
  }
  return wide_threads;
}

// Step 2's choice of the shared workers' shape over the `rest` of the cores.
absl::StatusOr<SharedShape> ChooseShape(const std::vector<int>& rest, PlanHint hint,
                                        const std::vector<PlannerModel>& models, const CostFn& cost,
                                        std::optional<FixedLayout> fixed, EnginePlan& plan) {
  const int r = static_cast<int>(rest.size());
  if (fixed) return FixedShape(*fixed, rest, plan);
  if (hint == PlanHint::kLatency) {
    plan.reason = absl::StrCat("latency hint: one worker with all ", r, " remaining cores");
    return SharedShape{r, 0, 0};
  }
  LOOM_RETURN_IF_ERROR(MeasureLayouts(rest, models, cost, plan));
  SharedShape shape;
  shape.threads = ChooseLayout(plan);
  if (hint == PlanHint::kAdaptive) {
    shape.wide_threads = WideThreads(plan, shape.threads);
    if (shape.wide_threads > 0) {
      absl::StrAppend(&plan.reason,
                      absl::StrFormat("; wide groups of %d threads for batches that run faster "
                                      "alone on more cores",
                                      shape.wide_threads));
    }
  }
  return shape;
}

// The shared workers of `shape` over `rest`, then their wide groups (consecutive workers).
void AddSharedWorkers(const std::vector<int>& rest, const SharedShape& shape,
                      const std::vector<std::string>& shared, std::optional<bool> spinning,
                      EnginePlan& plan) {
  const int r = static_cast<int>(rest.size());
  const std::vector<int> used =
      shape.workers > 0
          ? std::vector<int>(rest.begin(), rest.begin() + shape.workers * shape.threads)
          : rest;
  const size_t first_shared = plan.workers.size();
  for (std::vector<int>& group :
       SplitCpus(used, shape.workers > 0 ? shape.workers : r / shape.threads)) {
    WorkerPlan w;
    w.threads = static_cast<int>(group.size());
    w.cpus = std::move(group);
    w.models = shared;
    w.allow_spinning = spinning.value_or(w.threads > 1 && shared.size() == 1);
    plan.workers.push_back(std::move(w));
  }
  if (shape.wide_threads <= 0) return;
  const size_t per_group = static_cast<size_t>(shape.wide_threads / shape.threads);
  for (size_t first = first_shared; first + per_group <= plan.workers.size(); first += per_group) {
    WideGroupPlan g;
    for (size_t w = first; w < first + per_group; ++w) {
      g.workers.push_back(static_cast<int>(w));
      plan.workers[w].group = static_cast<int>(plan.groups.size());
      g.cpus.insert(g.cpus.end(), plan.workers[w].cpus.begin(), plan.workers[w].cpus.end());
    }
    g.threads = static_cast<int>(g.cpus.size());
    plan.groups.push_back(std::move(g));
  }
}

}  // namespace

absl::StatusOr<EnginePlan> PlanCores(const std::vector<int>& cpus, PlanHint hint,
                                     const std::vector<PlannerModel>& models,
                                     std::optional<bool> spinning, const CostFn& cost,
                                     std::optional<FixedLayout> fixed) {
  EnginePlan plan;
  plan.usable_cores = static_cast<int>(cpus.size());
  plan.hint = hint;
  if (cpus.empty()) return absl::FailedPreconditionError("no usable cores");
  std::vector<std::string> shared;
  LOOM_ASSIGN_OR_RETURN(const size_t taken, PlanDedicated(cpus, models, spinning, plan, shared));
  if (shared.empty()) {
    plan.reason = "every model has dedicated instances as configured";
    return plan;
  }
  const std::vector<int> rest(cpus.begin() + static_cast<std::ptrdiff_t>(taken), cpus.end());
  LOOM_ASSIGN_OR_RETURN(const SharedShape shape,
                        ChooseShape(rest, hint, models, cost, fixed, plan));
  AddSharedWorkers(rest, shape, shared, spinning, plan);
  return plan;
}

}  // namespace sched
}  // namespace loom
