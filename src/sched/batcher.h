// Dynamic batching: which queued requests may share a run, and when a batch should run.
//
// A model's RequestQueue keeps its requests in arrival order, grouped by BatchKey (requests batch
// together only when every input has the same dtype and dims after dim 0). GatherBatch looks at
// every group, not only the oldest request's: a group whose batch is still waiting for its delay
// never holds back another group that is ready, and every queued request's deadline bounds the
// wake-up time. Pure data structures, no locking: the scheduler calls them under its mutex.
#ifndef LOOM_SCHED_BATCHER_H_
#define LOOM_SCHED_BATCHER_H_

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "core/clock.h"
#include "loom/infer.h"
#include "loom/tensor.h"

namespace loom::sched {

struct BatchingConfig {
  int max_batch_size = 1;  // most rows per run; 1 = no batching
  std::vector<int> preferred_batch_sizes;
  std::chrono::microseconds max_queue_delay{0};
};

// One accepted request, owned by the scheduler until it is answered.
struct Request {
  int model = -1;       // the scheduler's model id
  NamedTensors inputs;  // in the model's input order, validated
  int64_t rows = 1;     // dim 0 of the inputs (1 for fixed-batch models)
  std::string batch_key;
  TimePoint enqueued;
  TimePoint deadline = TimePoint::max();
  std::shared_ptr<const std::atomic<bool>> cancelled;  // null: cannot be withdrawn
  InferCallback done;                                  // called exactly once

  bool Withdrawn() const { return cancelled && cancelled->load(std::memory_order_relaxed); }
};

// "f32[3,48,320]|i64[1]|": dtype and dims after dim 0 of every input.
std::string BatchKey(const NamedTensors& inputs);

// Whether a batch of `rows` whose oldest request was queued at `oldest` should run now: it is
// full, it reached a preferred size, the next request would not fit, its delay has passed, or
// `flush` (shutdown, no batching).
bool ShouldRunNow(const BatchingConfig& config, int64_t rows, bool more_rows_would_not_fit,
                  TimePoint oldest, TimePoint now, bool flush);

class RequestQueue {
 public:
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

  void Push(std::unique_ptr<Request> request);

  // Moves every request whose deadline is at or before `now`, or that was withdrawn, to `expired`.
  // Cheap when nothing can have expired (it tracks the earliest deadline).
  void TakeExpired(TimePoint now, std::vector<std::unique_ptr<Request>>& expired);

  // Every request, oldest group first (shutdown of a queue that has no worker left).
  void TakeAll(std::vector<std::unique_ptr<Request>>& out);

  // The next batch GatherBatch chose: `count` requests from the front of group `group`.
  struct Pick {
    bool ready = false;
    size_t group = 0;
    size_t count = 0;
    int64_t rows = 0;
    TimePoint oldest = TimePoint::max();  // enqueue time of its oldest request
    TimePoint wake = TimePoint::max();    // not ready: when it becomes ready (delay or deadline)
  };
  // Moves the picked requests into `batch`, oldest first.
  void Take(const Pick& pick, std::vector<std::unique_ptr<Request>>& batch);

 private:
  friend Pick GatherBatch(const RequestQueue& queue, const BatchingConfig& config, TimePoint now,
                          bool flush);
  struct Group {
    std::string key;
    std::deque<std::unique_ptr<Request>> requests;  // arrival order
  };
  std::deque<Group>
      groups_;  // by first arrival of their key (a deque: Group cannot be moved noexcept)
  size_t size_ = 0;
  TimePoint earliest_deadline_ = TimePoint::max();  // a lower bound
  size_t withdrawable_ = 0;                         // requests with a cancel flag
};

// The batch to run next from `queue`: among its key groups, the ready one (ShouldRunNow on the
// rows gathered from the group's front, oldest first, within max_batch_size) whose oldest request
// is oldest. When none is ready, `ready` is false and `wake` is the earliest time one becomes
// ready or a queued request's deadline passes. Does not modify the queue.
RequestQueue::Pick GatherBatch(const RequestQueue& queue, const BatchingConfig& config,
                               TimePoint now, bool flush);

}  // namespace loom::sched

#endif  // LOOM_SCHED_BATCHER_H_
