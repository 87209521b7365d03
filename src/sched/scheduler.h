// The scheduler: per-model bounded request queues and the workers that drain them, sharing the
// machine's cores by lease so that busy threads never outnumber the cores.
//
// Workers. Each worker is a thread pinned to its own cores (from the plan) that runs one batch at a
// time, on its own ("narrow") session for the batch's model. Workers of the shared pool are grouped
// into wide groups: a group's "wide" session for a model spans every core of the group, and one
// worker runs it while the others lend it their cores. Whether a batch runs narrow or wide is
// decided per batch from what the scheduler sees at that moment (width_policy.h):
//   - alone (nothing else queued, the rest of the group idle): the lower-latency width;
//   - under load: the width with the higher measured throughput (usually narrow: independent
//     single-thread runs scale better than one run over several threads).
// The measurements behind both choices are the runs themselves (EWMA per model and size of request:
// input elements per row, rounded down to a power of 2; the size the plan measured at is a size of
// its own), seeded with the plan's costs at the size it measured, so a core taken by another
// process (contention) shows up as slower wide runs and moves the choice back to narrow. Whether
// more threads pay depends on the size (a small run is all overhead, a large one all compute): a
// size first seen starts from the measured size's preferences and runs each width twice, alone and
// under load, before its own measurements decide (except wide under load where narrow is
// preferred: a wide try there waits for, then holds, the whole group; and unless explore_every is
// 0: then it keeps the copied preferences). A session's first run at a shape is a warm-up, not
// averaged; a wide run under load waits for its partners' current runs and is charged the time its
// cores idled. Where the preferred width runs slower than a figure of the other that no run of its
// own at that size has confirmed (the probe's), the other runs at once rather than when exploring
// comes round. A preference switches only past a margin and at most once per `min_switch_interval`,
// so the choice does not thrash; each switch is recorded with its reason.
//
// Leases. Any idle worker's cores can be lent: to a wide run of a group partner, to a caller that
// runs a request on its own thread (TryRunInline: what the worker would have done at once, without
// the hand-off), to Loom's own host work (pipeline pre/post-processing, decoding; AcquireLease),
// or to an admin that needs exactly some workers (cost measurement, a re-plan; AcquireWorkers).
// Every lease is counted in busy_threads(), the scheduler's own accounting of the core budget.
//
// Ownership: Enqueue either takes the request (OK: it will be answered exactly once) or returns an
// error and leaves it with the caller, who must answer it.
// Locking: one mutex `mu_` guards queues, worker states, leases and mode state; sessions are run
// outside it by the one thread that holds the worker (or group) at that moment; counters and
// histograms are atomics read without it. Callbacks run outside the lock; an exception from one is
// caught and counted.
// Lifecycle: construct → AddModel* → Start → (Enqueue | TryRunInline | AcquireLease | AddModel |
// RemoveModel | Reconfigure)* → Shutdown (drains every queue) → destroy.
//
// Files: scheduler.cc (models, queues, the worker loop, lifecycle), batch_runs.cc (running a batch,
// wide assembly, inline runs), width_policy.{h,cc} (the narrow/wide choice), core_leases.cc
// (leases), scheduler_stats.cc (statistics, the plan's mode lines, trace).
#ifndef LOOM_SCHED_SCHEDULER_H_
#define LOOM_SCHED_SCHEDULER_H_

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/histogram.h"
#include "loom/infer.h"
#include "loom/session.h"
#include "sched/batcher.h"
#include "sched/width_policy.h"

namespace loom::sched {

struct WorkerConfig {
  std::vector<int> cpus;  // OS cpu ids, owned by this worker alone; its narrow sessions' threads
  int group = -1;         // index of its wide group, or -1
};

struct GroupConfig {
  std::vector<int> workers;  // worker indices; a wide session spans all their cpus
};

// A model as the scheduler serves it: its queue's configuration and its sessions.
struct ModelSpec {
  std::string name;
  BatchingConfig batching;
  int capacity = 1024;
  std::vector<std::shared_ptr<Session>> narrow;  // by worker index; null: not served there
  std::vector<std::shared_ptr<Session>> wide;    // by group index; null: no wide runs there
  // Measured ms per batch-1 request, to seed the narrow/wide choice (0: unknown), and the elements
  // of that request's inputs (0: unknown). Where it is known, every run's time is scaled to a
  // request of that size (ms x measured_elements / the run's input elements) before the widths
  // are compared, so that runs of a model with dynamic dims compare like with like; else ms per
  // row.
  double narrow_ms = 0, wide_ms = 0;
  int64_t measured_elements = 0;
};

// The width options (WidthOptions: adaptive, margins, exploring) and the scheduler's own.
struct SchedulerOptions : WidthOptions {
  SchedClock* clock = nullptr;  // null: the system clock
  // Pin worker threads to their cpus (tests with fake sessions may run anywhere).
  bool pin_workers = true;
  // An inline run (TryRunInline) expected to take at least this long moves the caller's thread
  // onto the claimed cores for the run (and back): the run's work then happens on the plan's
  // cores. A shorter run stays where the caller is; moving would cost more than it saves.
  double pin_inline_over_ms = 0.2;
};

// A change of a model's narrow/wide preference, for the plan's history.
struct ModeEvent {
  TimePoint when;
  std::string model;
  std::string text;  // "under load: wide (2 threads), 41.2/s vs 38.4/s narrow"
};

// One span for a trace (Chrome trace-event JSON is written by the engine).
struct TraceSpan {
  enum Kind { kRun, kQueue } kind = kRun;
  int worker = -1;  // -1: a caller's thread
  std::string model;
  TimePoint start, end;
  int rows = 0;
  int threads = 0;
};

struct WorkerStats {
  std::vector<int> cpus;
  int group = -1;
  double busy_seconds = 0;  // running batches (narrow, or leading a wide run); leases not counted
  int64_t runs = 0;
  int tid = 0;              // the worker thread's Linux thread id (0 before Start)
  bool assembling = false;  // leading a wide run, waiting for its partners to end theirs
};

class Scheduler {
 public:
  Scheduler(std::vector<WorkerConfig> workers, std::vector<GroupConfig> groups,
            SchedulerOptions options = {});
  ~Scheduler();  // Shutdown(); joins every worker (detaches the calling worker, if it is one)
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Registers a model; returns its id (ids are never reused). May be called before or after Start.
  int AddModel(ModelSpec spec);
  // Replaces a model's batching and the measured priors of its narrow/wide choice.
  void ConfigureModel(int model, const BatchingConfig& batching, double narrow_ms, double wide_ms,
                      int64_t measured_elements = 0);
  // Refuses new requests for `model` (UNAVAILABLE), runs every accepted one, then drops the model
  // and releases its sessions. Blocks until then. FAILED_PRECONDITION from a worker thread.
  absl::Status RemoveModel(int model);
  // Whether the calling thread is one of this scheduler's workers (inside a completion callback):
  // what waits for workers must not be done there.
  bool OnWorkerThread() const { return CallingWorker() >= 0; }

  // Starts the workers; returns once each is pinned to its cores.
  void Start();

  // Queues `request` for `model`. OK: the scheduler owns it (moved out). Otherwise the request is
  // left with the caller: UNAVAILABLE after Shutdown or while the model is removed,
  // RESOURCE_EXHAUSTED when full (unless block_when_full), DEADLINE_EXCEEDED if its deadline
  // passed while blocked, NOT_FOUND for an unknown id.
  absl::Status Enqueue(int model, std::unique_ptr<Request>& request, bool block_when_full);

  // Runs `request` on the calling thread when that is what the scheduler would do at once: the
  // model's queue is empty and a worker serving it is idle (its cores are claimed for the run,
  // narrow or wide as the width policy says). Returns nothing, and leaves the request untouched,
  // otherwise. On a worker thread (inside a completion callback) it runs the request on that
  // worker's own session, or fails with FAILED_PRECONDITION if the worker does not serve the
  // model (waiting for another worker there could deadlock).
  std::optional<absl::StatusOr<InferResult>> TryRunInline(int model, Request& request);

  // Leases one idle worker's cores for host work on the calling thread (it is not pinned here);
  // waits until one is free, serving leases and batches in arrival order. Returns the worker
  // index. UNAVAILABLE after Shutdown, DEADLINE_EXCEEDED at `deadline`.
  absl::StatusOr<int> AcquireLease(TimePoint deadline = TimePoint::max());
  // Leases exactly these workers (cost measurement on their cores); waits for each to finish its
  // current run. Admin use: workers join it before taking new work.
  absl::Status AcquireWorkers(const std::vector<int>& workers);
  void ReleaseLease(int worker);
  void ReleaseWorkers(const std::vector<int>& workers);
  std::vector<int> WorkerCpus(int worker) const;

  // Stops every worker after its current run, replaces the worker layout and every model's
  // sessions (`narrow[id]`, `wide[id]` by model id; models absent keep none), and restarts.
  // Queued requests wait meanwhile; none is lost. Not from a worker thread.
  struct Layout {
    std::vector<WorkerConfig> workers;
    std::vector<GroupConfig> groups;
    std::vector<std::vector<std::shared_ptr<Session>>> narrow;  // [model id][worker]
    std::vector<std::vector<std::shared_ptr<Session>>> wide;    // [model id][group]
  };
  absl::Status Reconfigure(Layout layout);

  // Counts a request refused before Enqueue (bad input) in the model's stats.
  void CountRejected(int model);

  // Refuses new requests, answers every queued one (running it, or DEADLINE_EXCEEDED), waits for
  // leases and inline runs to end, joins the workers. Idempotent. From a worker thread (inside a
  // callback) it only refuses new requests and returns; the workers drain and stop by themselves.
  void Shutdown();

  ModelStats Stats(int model) const;
  std::vector<WorkerStats> Workers() const;
  int busy_threads() const;      // threads running Loom work right now, by its own accounting
  int max_busy_threads() const;  // the most ever at once
  std::vector<ModeEvent> ModeHistory() const;
  // One line per model with its current narrow/wide preferences and the measurements behind them.
  std::string DescribeModes() const;

  void SetTracing(bool on);
  std::vector<TraceSpan> TakeTrace();

 private:
  enum class WorkerState { kIdle, kBusy, kAssembling, kLent, kClaimed, kParked };
  struct Worker {
    WorkerConfig config;
    WorkerState state = WorkerState::kIdle;
    int lent_to = -1;  // kLent: leader worker (wide), or kLentToLease
    bool retire = false;
    // The thread sleeps until it is idle again (it saw work while claimed, lent or running):
    // whoever makes it idle must wake it. An idle worker asleep waiting for work needs no such
    // wake.
    bool waits_for_idle = false;
    TimePoint
        lent_since{};  // kLent to a wide run's leader: since when (its cores idle until the run)
    std::condition_variable cv;
    std::thread thread;
    std::atomic<int64_t> busy_us{0};
    std::atomic<int64_t> runs{0};
    std::atomic<int> tid{0};  // the thread's Linux id, once started
  };
  static constexpr int kLentToLease = -2;  // Worker::lent_to of a worker lent to a lease
  struct Group {
    GroupConfig config;
    int cpu_count = 0;
    int assembling = -1;  // a worker waiting for its partners to run wide
  };
  Group MakeGroup(GroupConfig config) const;
  struct Slot {
    ModelSpec spec;
    RequestQueue queue;
    bool removing = false;
    int64_t running = 0;  // requests in runs now
    Modes modes;          // the narrow/wide choice (width_policy.h)
    // Counters and histograms, read without mu_.
    std::atomic<int64_t> requests{0}, successes{0}, failures{0}, deadline_exceeded{0}, cancelled{0},
        rejected{0}, batches{0}, batch_rows{0};
    Histogram queue_us, compute_us, rows;
  };
  struct LeaseRequest {
    TimePoint since;
    std::vector<int> wanted;  // empty: any one worker
    std::vector<int> granted;
    bool done = false;
  };
  struct Batch {
    int model = -1;
    std::vector<std::unique_ptr<Request>> requests;
  };
  struct RunPlan {
    std::shared_ptr<Session> session;
    int threads = 0;
    bool wide = false;
    bool alone = false;
  };
  // An inline run's worker, width and claimed workers (TryRunInline).
  struct InlineRun {
    int worker = -1;
    RunPlan plan;
    std::vector<int> claimed;  // workers whose cores the run holds (none from a worker thread)
  };

  // The calling thread's worker index when it is one of this scheduler's workers, else -1.
  int CallingWorker() const;

  // ---- Queues and workers (scheduler.cc) ----
  void WorkerLoop(int w);
  // Requires mu_. Moves expired or withdrawn requests of the models `w` serves into `expired`,
  // with the answer each gets (answered by the caller, outside the lock).
  void CollectExpired(int w, TimePoint now, std::vector<std::unique_ptr<Request>>& expired,
                      std::vector<absl::Status>& answers);
  // Requires mu_. The oldest ready batch among the models `w` serves (`best` null: none ready;
  // `wake`: when one becomes ready).
  struct NextBatch {
    Slot* best = nullptr;
    int model = -1;
    RequestQueue::Pick pick;
    TimePoint wake = TimePoint::max();
  };
  NextBatch FindBatch(int w, TimePoint now) const;
  // Requires mu_. The oldest waiting lease for any worker, or null (core_leases.cc).
  LeaseRequest* OldestAnyLease() const;
  void Answer(std::unique_ptr<Request>& request, absl::StatusOr<InferResult> result);
  // Requires mu_.
  bool ServesModel(int w, const Slot& slot) const;
  int64_t QueuedFor(int w) const;
  bool PartnersIdle(int w) const;
  bool QueuesEmptyFor(int w) const;
  Slot* FindSlot(int model) const;
  void JoinWorkers(bool exclude_self);
  void StartWorkers();

  // ---- Runs: a worker's batches, narrow or wide, and inline runs (batch_runs.cc) ----
  // Requires mu_ (held on entry and exit; released while running).
  void RunBatch(int w, Batch batch, std::unique_lock<std::mutex>& lock);
  // Requires mu_ (released while waiting). Worker `w` leads a wide run of group `g`: waits for
  // every partner to lend its cores. False (partners released again) when one will not come;
  // `idle_us`: the core time that idled meanwhile.
  bool AssembleWide(int w, int g, std::unique_lock<std::mutex>& lock, int64_t& idle_us);
  // Gives back the partners of `group` lent to worker `w` for a wide run (requires mu_).
  void ReleasePartners(const Group& group, int w);
  // Runs a batch on the calling thread, outside mu_; returns one answer per request.
  std::vector<absl::StatusOr<InferResult>> Execute(int worker, Slot& slot,
                                                   const std::vector<Request*>& requests,
                                                   const RunPlan& plan, TimePoint start);
  // Requires mu_. Chooses an inline run's worker and width and claims their cores. Nothing: a
  // worker would not run it at once; an error: a worker thread that does not serve the model.
  std::optional<absl::Status> ClaimInline(Slot& slot, const Request& request, int64_t elements,
                                          InlineRun& run);
  // Requires mu_. The cpus an inline run moves its caller onto (none: it stays where it is).
  std::vector<int> InlinePinCpus(Slot& slot, const InlineRun& run, int64_t elements,
                                 int64_t rows) const;
  // Requires mu_. Ends an inline run: learns from it and hands the claimed workers back.
  void EndInline(Slot& slot, const InlineRun& run, const Request& request, int64_t elements,
                 int64_t compute_us);
  // Requires mu_. The slot's width policy (width_policy.h) for a run on a worker of `group`
  // (-1: none): whether it goes wide, and what it learns from the run. `elements`, `rows`: the
  // run's input elements and rows, all requests (see ModelSpec::measured_elements).
  bool ChooseWide(Slot& slot, int group, bool alone, int64_t elements, int64_t rows);
  void RecordRun(Slot& slot, const RunPlan& plan, int64_t compute_us, int64_t rows,
                 int64_t elements, const Request& first, int group);

  // ---- Core leases (core_leases.cc) ----
  // Requires mu_. Joins a wide assembly or a specific lease that wants worker `w`.
  bool JoinPending(int w);
  // Requires mu_. Lends worker `w` to `lease` (for any one worker).
  void GrantLease(int w, LeaseRequest& lease);
  // Requires mu_. Grants waiting leases for any one worker to idle workers.
  void GrantLeases();
  // Requires mu_. Counts `threads` more (or fewer) threads busy.
  void Occupy(int threads);

  // ---- Statistics and trace (scheduler_stats.cc) ----
  // Counts a run's batch in the model's statistics (atomics: outside mu_, while `running` holds
  // the slot) and, when tracing, records its spans.
  void RecordBatch(Slot& slot, int worker, const std::vector<Request*>& requests,
                   const RunPlan& plan, TimePoint start, int64_t compute_us, int64_t total_rows,
                   bool ok);

  SchedulerOptions options_;
  SchedClock* clock_;
  mutable std::mutex mu_;
  std::condition_variable room_cv_;   // blocked submitters: room in a queue, or stopping
  std::condition_variable state_cv_;  // removal drains, leases, inline runs, reconfiguration
  bool started_ = false;
  bool stopping_ = false;
  bool pausing_ = false;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<Group> groups_;
  std::vector<std::shared_ptr<Slot>> slots_;  // by model id; null once removed
  std::deque<LeaseRequest*> leases_;          // waiting, oldest first
  int inline_runs_ = 0;                       // callers running on claimed workers
  int busy_threads_ = 0;
  std::atomic<int> max_busy_threads_{0};
  std::atomic<int> busy_now_{0};
  std::vector<ModeEvent> history_;
  std::atomic<bool> tracing_{false};
  std::mutex trace_mu_;
  std::vector<TraceSpan> trace_;
  std::once_flag joined_;
};

}  // namespace loom::sched

#endif  // LOOM_SCHED_SCHEDULER_H_
