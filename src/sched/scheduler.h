// The scheduler: per-model bounded request queues and the workers that drain them.
//
// Each worker is a thread pinned to its own cores (from the plan) holding one session per model
// it serves. It repeatedly takes the ready batch whose oldest request waited longest, among the
// models it serves, runs it and answers every request of it. A batch is "ready" when the batcher
// says so (full, preferred size, delay passed); a worker never idles while another of its models
// has a ready batch.
//
// Ownership: Enqueue either takes the request (OK: the scheduler will answer it exactly once) or
// returns an error and leaves it with the caller, who must answer it.
// Locking: one mutex `mu_` guards all queues, counters and the stopping flag; sessions are used
// by their worker only, outside the lock. Callbacks run on worker threads, outside the lock.
// Lifecycle: construct → Start → Enqueue* → Shutdown (drains every queue) → destroy.
#ifndef LOOM_SCHED_SCHEDULER_H_
#define LOOM_SCHED_SCHEDULER_H_

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "loom/engine.h"
#include "loom/plan.h"
#include "loom/session.h"
#include "sched/batcher.h"

namespace loom::sched {

using Clock = std::chrono::steady_clock;

struct Request {
  NamedTensors inputs;  // in the model's input order, validated
  int64_t rows = 1;     // dim 0 of the inputs (1 for fixed-batch models)
  std::string batch_key;
  Clock::time_point enqueued;
  Clock::time_point deadline = Clock::time_point::max();
  InferCallback done;  // called exactly once
};

struct QueueConfig {
  std::string model;
  BatchingConfig batching;
  int capacity = 1024;
};

struct Worker {
  WorkerPlan plan;
  std::vector<std::unique_ptr<Session>> sessions;  // by model index; null = not served
};

class Scheduler {
 public:
  Scheduler(std::vector<QueueConfig> queues, std::vector<Worker> workers);
  ~Scheduler();  // Shutdown()

  // Starts the workers; returns once each is pinned to its cores.
  void Start();

  // Queues `request` for model `model`. OK: the scheduler owns it (moved out). Otherwise the
  // request is left with the caller: UNAVAILABLE after Shutdown, RESOURCE_EXHAUSTED when full
  // (unless block_when_full), DEADLINE_EXCEEDED if its deadline passed while blocked.
  absl::Status Enqueue(int model, std::unique_ptr<Request>& request, bool block_when_full);

  // Counts a request refused before Enqueue (bad input) in the model's stats.
  void CountRejected(int model);

  // Refuses new requests, answers every queued one (running it, or DEADLINE_EXCEEDED), joins the
  // workers. Idempotent.
  void Shutdown();

  ModelStats Stats(int model) const;

 private:
  struct Counters {
    int64_t requests = 0, successes = 0, failures = 0, rejected = 0, batches = 0, batch_rows = 0;
    std::vector<double> queue_us, compute_us;  // capped at kMaxSamples
  };
  struct Queue {
    QueueConfig config;
    std::deque<std::unique_ptr<Request>> requests;
    Counters counters;
  };
  struct Batch {
    int model = -1;
    std::vector<std::unique_ptr<Request>> requests;
  };

  void WorkerLoop(size_t worker);
  // Moves expired requests into `expired` and the next ready batch for `worker` into `batch`.
  // Returns the time at which a not-yet-ready batch becomes ready (max if none). Requires mu_.
  Clock::time_point TakeWork(size_t worker, Clock::time_point now,
                             std::vector<std::unique_ptr<Request>>& expired, Batch& batch);
  bool ServedQueuesEmpty(size_t worker) const;  // requires mu_
  void RunBatch(size_t worker, Batch batch);

  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // workers: new requests, or stopping
  std::condition_variable room_cv_;  // blocked submitters: room in a queue, or stopping
  bool started_ = false;
  bool stopping_ = false;  // requires mu_
  std::deque<Queue> queues_;  // a deque: Queue is not movable without throwing
  std::vector<Worker> workers_;
  std::vector<std::thread> threads_;
  std::once_flag joined_;
};

}  // namespace loom::sched

#endif  // LOOM_SCHED_SCHEDULER_H_
