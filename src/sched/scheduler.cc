#include "sched/scheduler.h"

#include <algorithm>
#include <cstdio>
#include <latch>

#include "absl/strings/str_cat.h"
#include "core/cpu_set.h"
#include "core/stats.h"

namespace loom::sched {
namespace {

constexpr size_t kMaxSamples = 1 << 20;

int64_t MicrosBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration_cast<std::chrono::microseconds>(b - a).count();
}

void AddSample(std::vector<double>& samples, double value) {
  if (samples.size() < kMaxSamples) samples.push_back(value);
}

// Calls the request's callback. A callback that throws is a caller bug; it must not take the
// worker (and every later request) down with it, so the exception stops here.
void Answer(Request& request, absl::StatusOr<InferResult> result) {
  try {
    request.done(std::move(result));
  } catch (...) {
    std::fprintf(stderr, "loom: an inference callback threw; the exception was dropped\n");
  }
}

}  // namespace

Scheduler::Scheduler(std::vector<QueueConfig> queues, std::vector<Worker> workers)
    : workers_(std::move(workers)) {
  for (QueueConfig& q : queues) {
    queues_.emplace_back();
    queues_.back().config = std::move(q);
  }
}

Scheduler::~Scheduler() { Shutdown(); }

void Scheduler::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  LOOM_CHECK(!started_);
  started_ = true;
  // Returns once every worker is pinned, so that the plan holds from the first request on.
  std::latch pinned(static_cast<std::ptrdiff_t>(workers_.size()));
  for (size_t w = 0; w < workers_.size(); ++w) {
    threads_.emplace_back([this, w, &pinned] {
      // Pinning fails only for cpus outside our affinity, which the planner never hands out.
      LOOM_CHECK(PinCurrentThread(workers_[w].plan.cpus).ok());
      pinned.count_down();
      WorkerLoop(w);
    });
  }
  pinned.wait();
}

absl::Status Scheduler::Enqueue(int model, std::unique_ptr<Request>& request, bool block_when_full) {
  std::unique_lock<std::mutex> lock(mu_);
  Queue& q = queues_[static_cast<size_t>(model)];
  const std::string& name = q.config.model;
  auto refuse = [&](absl::Status status) {
    ++q.counters.rejected;
    return status;
  };
  while (true) {
    if (stopping_) {
      return refuse(absl::UnavailableError(
          absl::StrCat("engine is shut down: request for model '", name, "' not accepted")));
    }
    if (static_cast<int>(q.requests.size()) < q.config.capacity) break;
    if (!block_when_full) {
      return refuse(absl::ResourceExhaustedError(absl::StrCat(
          "model '", name, "' queue is full (capacity ", q.config.capacity, " requests)")));
    }
    if (request->deadline == Clock::time_point::max()) {
      room_cv_.wait(lock);
    } else if (room_cv_.wait_until(lock, request->deadline) == std::cv_status::timeout &&
               static_cast<int>(q.requests.size()) >= q.config.capacity && !stopping_) {
      return refuse(absl::DeadlineExceededError(absl::StrCat(
          "model '", name, "' queue stayed full (capacity ", q.config.capacity,
          " requests) until the request's deadline")));
    }
  }
  request->enqueued = Clock::now();
  q.requests.push_back(std::move(request));
  ++q.counters.requests;
  lock.unlock();
  work_cv_.notify_all();  // workers serve different model sets: wake all, the right one takes it
  return absl::OkStatus();
}

void Scheduler::CountRejected(int model) {
  std::lock_guard<std::mutex> lock(mu_);
  ++queues_[static_cast<size_t>(model)].counters.rejected;
}

void Scheduler::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  room_cv_.notify_all();
  std::call_once(joined_, [this] {
    for (std::thread& t : threads_) t.join();
  });
  // Without workers (never started), nothing can have been accepted... unless Start was skipped
  // after Enqueue; answer anything left so that no request is lost.
  std::vector<std::unique_ptr<Request>> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (Queue& q : queues_) {
      q.counters.failures += static_cast<int64_t>(q.requests.size());
      for (auto& r : q.requests) left.push_back(std::move(r));
      q.requests.clear();
    }
  }
  for (auto& r : left) Answer(*r, absl::UnavailableError("engine shut down before the request ran"));
}

ModelStats Scheduler::Stats(int model) const {
  std::lock_guard<std::mutex> lock(mu_);
  const Counters& c = queues_[static_cast<size_t>(model)].counters;
  ModelStats s;
  s.requests = c.requests;
  s.successes = c.successes;
  s.failures = c.failures;
  s.rejected = c.rejected;
  s.batches = c.batches;
  s.mean_batch_rows = c.batches > 0 ? static_cast<double>(c.batch_rows) / c.batches : 0;
  const LatencySummary queue = Summarize(c.queue_us), compute = Summarize(c.compute_us);
  s.queue_p50_us = queue.p50;
  s.queue_p95_us = queue.p95;
  s.queue_p99_us = queue.p99;
  s.compute_p50_us = compute.p50;
  s.compute_p95_us = compute.p95;
  s.compute_p99_us = compute.p99;
  return s;
}

bool Scheduler::ServedQueuesEmpty(size_t worker) const {
  for (size_t m = 0; m < queues_.size(); ++m) {
    if (workers_[worker].sessions[m] && !queues_[m].requests.empty()) return false;
  }
  return true;
}

Clock::time_point Scheduler::TakeWork(size_t worker, Clock::time_point now,
                                      std::vector<std::unique_ptr<Request>>& expired,
                                      Batch& batch) {
  Clock::time_point wake = Clock::time_point::max();
  int best_model = -1;
  Clock::time_point best_age = Clock::time_point::max();
  std::vector<size_t> best_picks;
  for (size_t m = 0; m < queues_.size(); ++m) {
    if (!workers_[worker].sessions[m]) continue;
    Queue& q = queues_[m];
    // Requests past their deadline at the front are answered without running.
    while (!q.requests.empty() && q.requests.front()->deadline <= now) {
      expired.push_back(std::move(q.requests.front()));
      q.requests.pop_front();
      ++q.counters.failures;
    }
    if (q.requests.empty()) continue;
    // Gather the head's batch: same key, oldest first, within max_batch_size rows.
    const Request& head = *q.requests.front();
    const int max_rows = q.config.batching.max_batch_size;
    std::vector<size_t> picks = {0};
    int64_t rows = head.rows;
    bool more_would_not_fit = false;
    const size_t scan = std::min(q.requests.size(), static_cast<size_t>(4 * max_rows + 1));
    for (size_t i = 1; i < scan && rows < max_rows; ++i) {
      const Request& r = *q.requests[i];
      if (r.batch_key != head.batch_key || r.deadline <= now) continue;
      if (rows + r.rows > max_rows) {
        more_would_not_fit = true;
        continue;
      }
      picks.push_back(i);
      rows += r.rows;
    }
    if (!ShouldRunNow(q.config.batching, static_cast<int>(rows), more_would_not_fit, head.enqueued,
                      now, stopping_)) {
      // Wake when the delay ends, or earlier when a waiting request's deadline passes.
      wake = std::min(wake, head.enqueued + q.config.batching.max_queue_delay);
      for (size_t i : picks) wake = std::min(wake, q.requests[i]->deadline);
      continue;
    }
    if (head.enqueued < best_age) {
      best_age = head.enqueued;
      best_model = static_cast<int>(m);
      best_picks = std::move(picks);
    }
  }
  if (best_model >= 0) {
    Queue& q = queues_[static_cast<size_t>(best_model)];
    batch.model = best_model;
    for (size_t i : best_picks) batch.requests.push_back(std::move(q.requests[i]));
    // Erase the picked slots, highest index first so the others stay valid.
    for (auto it = best_picks.rbegin(); it != best_picks.rend(); ++it) {
      q.requests.erase(q.requests.begin() + static_cast<std::ptrdiff_t>(*it));
    }
  }
  return wake;
}

void Scheduler::WorkerLoop(size_t worker) {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    std::vector<std::unique_ptr<Request>> expired;
    Batch batch;
    const Clock::time_point wake = TakeWork(worker, Clock::now(), expired, batch);
    if (!expired.empty() || batch.model >= 0) {
      lock.unlock();
      room_cv_.notify_all();
      for (auto& r : expired) {
        Answer(*r, absl::DeadlineExceededError("request deadline passed while it waited in the queue"));
      }
      if (batch.model >= 0) RunBatch(worker, std::move(batch));
      lock.lock();
      continue;
    }
    if (stopping_ && ServedQueuesEmpty(worker)) break;
    if (wake == Clock::time_point::max()) {
      work_cv_.wait(lock);
    } else {
      work_cv_.wait_until(lock, wake);
    }
  }
}

void Scheduler::RunBatch(size_t worker, Batch batch) {
  const size_t n = batch.requests.size();
  std::vector<const NamedTensors*> parts;
  std::vector<int64_t> rows;
  int64_t total_rows = 0;
  for (const auto& r : batch.requests) {
    parts.push_back(&r->inputs);
    rows.push_back(r->rows);
    total_rows += r->rows;
  }
  Session& session = *workers_[worker].sessions[static_cast<size_t>(batch.model)];
  const Clock::time_point start = Clock::now();
  absl::StatusOr<NamedTensors> outputs = session.Run(ConcatRows(parts));
  absl::StatusOr<std::vector<NamedTensors>> split =
      outputs.ok() ? SplitRows(queues_[static_cast<size_t>(batch.model)].config.model, *outputs, rows)
                   : absl::StatusOr<std::vector<NamedTensors>>(outputs.status());
  const Clock::time_point end = Clock::now();
  const int64_t compute_us = MicrosBetween(start, end);
  {
    std::lock_guard<std::mutex> lock(mu_);
    Counters& c = queues_[static_cast<size_t>(batch.model)].counters;
    ++c.batches;
    c.batch_rows += total_rows;
    AddSample(c.compute_us, static_cast<double>(compute_us));
    for (const auto& r : batch.requests) {
      AddSample(c.queue_us, static_cast<double>(MicrosBetween(r->enqueued, start)));
    }
    (split.ok() ? c.successes : c.failures) += static_cast<int64_t>(n);
  }
  for (size_t i = 0; i < n; ++i) {
    Request& r = *batch.requests[i];
    if (!split.ok()) {
      Answer(r, split.status());
      continue;
    }
    InferResult result;
    result.outputs = std::move((*split)[i]);
    result.queue_us = MicrosBetween(r.enqueued, start);
    result.compute_us = compute_us;
    result.batch_rows = static_cast<int>(total_rows);
    Answer(r, std::move(result));
  }
}

}  // namespace loom::sched
