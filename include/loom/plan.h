// The engine's plan: which worker owns which cores, serves which models, with how many intra-op
// threads — and the measured costs behind the choice. Made by the core planner (src/sched/).
#ifndef LOOM_PLAN_H_
#define LOOM_PLAN_H_

#include <string>
#include <utility>
#include <vector>

namespace loom {

enum class PlanHint {
  // Measure each model; narrow workers sized for the most throughput (as kThroughput) plus wide
  // groups whose sessions span several workers' cores: each batch runs narrow or wide, whichever
  // the moment calls for (a request alone: the lower latency; a full queue: the higher throughput).
  kAdaptive,
  kThroughput,  // measure each model, size workers × threads for the most total throughput
  kLatency,     // one worker with every core: lowest latency per request
};
const char* PlanHintName(PlanHint hint);

// Measured cost of one model at several intra-op thread counts, from the plan's warm-up.
struct ModelCost {
  std::string model;
  double weight = 1.0;  // share of the request mix
  // (threads, median milliseconds per batch-1 request on that many pinned cores), threads
  // ascending.
  std::vector<std::pair<int, double>> ms_by_threads;
  // Elements of the measured request's inputs (0: unknown). A model with dynamic dims costs more
  // on larger inputs: the scheduler scales the runs it times to this size before comparing them.
  int64_t input_elements = 0;
};

// Whether dynamic batching pays for a model, measured at load (models with a dynamic dim 0 whose
// max_batch_size is auto): milliseconds per row at batch 1 and at batch `probe_rows`.
struct BatchChoice {
  std::string model;
  int probe_rows = 0;
  double ms_per_row_at_1 = 0;
  double ms_per_row_at_probe = 0;
  int max_batch_size = 1;  // what the engine uses
};

// One layout the throughput plan considered for the shared workers.
struct LayoutEstimate {
  int workers = 0;
  int threads = 0;
  double requests_per_s = 0;  // estimated for the weighted mix, from the measured costs
};

struct WorkerPlan {
  std::vector<int> cpus;            // OS cpu ids, owned by this worker alone
  int threads = 1;                  // intra-op threads (== cpus.size())
  std::vector<std::string> models;  // models this worker serves
  bool allow_spinning = false;
  int group = -1;  // its wide group (adaptive plan), or -1
};

// Adaptive plan: shared workers whose cores one wide session spans. A wide run borrows every
// worker of the group; its threads spin only while it runs.
struct WideGroupPlan {
  std::vector<int> workers;  // indices into EnginePlan::workers
  std::vector<int> cpus;     // their cores
  int threads = 0;           // == cpus.size()
};

// A change of the plan at run time, for its history.
struct PlanEvent {
  double at_s = 0;   // seconds since the engine started
  std::string what;  // "model 'det' added: ...", "model 'face' under load: now narrow (...)"
};

struct EnginePlan {
  int usable_cores = 0;
  PlanHint hint = PlanHint::kThroughput;
  std::vector<WorkerPlan> workers;
  std::vector<WideGroupPlan> groups;    // adaptive hint: wide groups of shared workers
  std::vector<ModelCost> costs;         // shared models' measured costs
  std::vector<LayoutEstimate> layouts;  // what the throughput plan compared
  std::vector<BatchChoice> batching;    // auto max_batch_size decisions
  std::string reason;                   // why this layout (one line)
  // Filled by the engine: each model's current narrow/wide choice (adaptive), and what changed.
  std::string modes;
  std::vector<PlanEvent> history;
  // Human-readable table: which model got which cores, and the measured costs behind it.
  std::string Describe() const;
};

}  // namespace loom

#endif  // LOOM_PLAN_H_
