// Scheduler: models and their queues, the worker threads and their loop, reconfiguration and
// shutdown. Runs are in batch_runs.cc, leases in core_leases.cc (see scheduler.h).
#include "sched/scheduler.h"

#include <unistd.h>

#include <algorithm>
#include <latch>

#include "absl/strings/str_cat.h"
#include "core/cpu_set.h"
#include "core/log.h"

namespace loom::sched {
namespace {

// The scheduler and worker index of the calling thread, when it is a worker.
thread_local const void* tls_scheduler = nullptr;
thread_local int tls_worker = -1;

}  // namespace

int Scheduler::CallingWorker() const { return tls_scheduler == this ? tls_worker : -1; }

Scheduler::Group Scheduler::MakeGroup(GroupConfig config) const {
  Group group;
  for (int w : config.workers) {
    group.cpu_count += static_cast<int>(workers_[static_cast<size_t>(w)]->config.cpus.size());
  }
  group.config = std::move(config);
  return group;
}

Scheduler::Scheduler(std::vector<WorkerConfig> workers, std::vector<GroupConfig> groups,
                     SchedulerOptions options)
    : options_(options), clock_(options.clock ? options.clock : SystemClock::Get()) {
  for (WorkerConfig& c : workers) {
    auto w = std::make_unique<Worker>();
    w->config = std::move(c);
    workers_.push_back(std::move(w));
  }
  for (GroupConfig& g : groups) {
    groups_.push_back(MakeGroup(std::move(g)));
  }
  clock_->Register(&mu_, &room_cv_);
  clock_->Register(&mu_, &state_cv_);
  for (auto& w : workers_) clock_->Register(&mu_, &w->cv);
}

Scheduler::~Scheduler() {
  Shutdown();
  JoinWorkers(/*exclude_self=*/true);
  for (auto& w : workers_) {
    if (w->thread.joinable()) w->thread.detach();  // only the calling worker can be left
    clock_->Unregister(&mu_, &w->cv);
  }
  clock_->Unregister(&mu_, &room_cv_);
  clock_->Unregister(&mu_, &state_cv_);
}

int Scheduler::AddModel(ModelSpec spec) {
  auto slot = std::make_shared<Slot>();
  std::lock_guard<std::mutex> lock(mu_);
  slot->modes.group_workers =
      groups_.empty() ? 1 : static_cast<int>(groups_[0].config.workers.size());
  slot->modes.Seed(spec.narrow_ms, spec.wide_ms, spec.measured_elements, options_.switch_margin);
  spec.narrow.resize(workers_.size());
  spec.wide.resize(groups_.size());
  slot->spec = std::move(spec);
  slots_.push_back(std::move(slot));
  // Idle workers that now serve the model look at its queue from now on.
  for (auto& w : workers_) w->cv.notify_all();
  return static_cast<int>(slots_.size()) - 1;
}

void Scheduler::ConfigureModel(int model, const BatchingConfig& batching, double narrow_ms,
                               double wide_ms, int64_t measured_elements) {
  std::lock_guard<std::mutex> lock(mu_);
  Slot* slot = FindSlot(model);
  if (!slot) return;
  slot->spec.batching = batching;
  slot->spec.measured_elements = measured_elements;
  slot->modes.Seed(narrow_ms, wide_ms, measured_elements, options_.switch_margin);
}

Scheduler::Slot* Scheduler::FindSlot(int model) const {
  if (model < 0 || model >= static_cast<int>(slots_.size())) return nullptr;
  return slots_[static_cast<size_t>(model)].get();
}

absl::Status Scheduler::RemoveModel(int model) {
  if (CallingWorker() >= 0) {
    return absl::FailedPreconditionError(
        "a model cannot be removed from inside a completion callback");
  }
  std::shared_ptr<Slot> removed;
  {
    std::unique_lock<std::mutex> lock(mu_);
    Slot* slot = FindSlot(model);
    if (!slot || slot->removing) {
      return absl::NotFoundError(absl::StrCat("no model with id ", model));
    }
    slot->removing = true;  // Enqueue refuses it from now on; workers flush its queue
    for (auto& w : workers_) w->cv.notify_all();
    room_cv_.notify_all();
    while (!slot->queue.empty() || slot->running > 0) {
      if (!started_) break;
      clock_->WaitUntil(state_cv_, lock, TimePoint::max());
    }
    // Anything still queued had no worker to run it.
    std::vector<std::unique_ptr<Request>> left;
    slot->queue.TakeAll(left);
    slot->failures += static_cast<int64_t>(left.size());
    removed = std::move(slots_[static_cast<size_t>(model)]);
    lock.unlock();
    for (auto& r : left) {
      Answer(r, absl::UnavailableError(absl::StrCat("model '", removed->spec.name,
                                                    "' was removed before the request ran")));
    }
  }
  return absl::OkStatus();  // `removed` and its sessions go here, outside the lock
}

void Scheduler::StartWorkers() {
  // Returns once every worker is pinned, so that the plan holds from the first request on.
  std::latch pinned(static_cast<std::ptrdiff_t>(workers_.size()));
  for (size_t w = 0; w < workers_.size(); ++w) {
    workers_[w]->thread = std::thread([this, w, &pinned] {
      tls_scheduler = this;
      tls_worker = static_cast<int>(w);
      workers_[w]->tid = static_cast<int>(gettid());
      // Pinning fails only for cpus outside our affinity, which the planner never hands out.
      if (options_.pin_workers) LOOM_CHECK(PinCurrentThread(workers_[w]->config.cpus).ok());
      pinned.count_down();
      WorkerLoop(static_cast<int>(w));
    });
  }
  pinned.wait();
}

void Scheduler::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  LOOM_CHECK(!started_);
  started_ = true;
  StartWorkers();
}

void Scheduler::JoinWorkers(bool exclude_self) {
  for (auto& w : workers_) {
    if (!w->thread.joinable()) continue;
    if (w->thread.get_id() == std::this_thread::get_id()) {
      if (!exclude_self) LOOM_CHECK(false && "a worker cannot join itself");
      continue;
    }
    w->thread.join();
  }
}

absl::Status Scheduler::Enqueue(int model, std::unique_ptr<Request>& request,
                                bool block_when_full) {
  std::unique_lock<std::mutex> lock(mu_);
  Slot* slot = FindSlot(model);
  if (!slot) {
    return absl::NotFoundError(absl::StrCat("no model with id ", model, " (it was removed)"));
  }
  const std::string& name = slot->spec.name;
  auto refuse = [&](absl::Status status) {
    ++slot->rejected;
    return status;
  };
  while (true) {
    if (stopping_) {
      return refuse(absl::UnavailableError(
          absl::StrCat("engine is shut down: request for model '", name, "' not accepted")));
    }
    if (slot->removing) {
      return refuse(absl::UnavailableError(
          absl::StrCat("model '", name, "' is being unloaded: request not accepted")));
    }
    if (static_cast<int>(slot->queue.size()) < slot->spec.capacity) break;
    if (!block_when_full) {
      return refuse(absl::ResourceExhaustedError(absl::StrCat(
          "model '", name, "' queue is full (capacity ", slot->spec.capacity, " requests)")));
    }
    if (clock_->Now() >= request->deadline) {
      return refuse(absl::DeadlineExceededError(
          absl::StrCat("model '", name, "' queue stayed full (capacity ", slot->spec.capacity,
                       " requests) until the request's deadline")));
    }
    clock_->WaitUntil(room_cv_, lock, request->deadline);
  }
  request->model = model;
  request->enqueued = clock_->Now();
  slot->queue.Push(std::move(request));
  ++slot->requests;
  // Wake one idle worker that serves the model (a busy one looks at the queues when it is done).
  for (size_t w = 0; w < workers_.size(); ++w) {
    Worker& worker = *workers_[w];
    if (worker.state == WorkerState::kIdle && ServesModel(static_cast<int>(w), *slot)) {
      worker.cv.notify_one();
      break;
    }
  }
  return absl::OkStatus();
}

void Scheduler::CountRejected(int model) {
  std::lock_guard<std::mutex> lock(mu_);
  if (Slot* slot = FindSlot(model)) ++slot->rejected;
}

bool Scheduler::ServesModel(int w, const Slot& slot) const {
  return static_cast<size_t>(w) < slot.spec.narrow.size() &&
         slot.spec.narrow[static_cast<size_t>(w)];
}

int64_t Scheduler::QueuedFor(int w) const {
  int64_t n = 0;
  for (const auto& s : slots_) {
    if (s && ServesModel(w, *s)) n += static_cast<int64_t>(s->queue.size());
  }
  return n;
}

bool Scheduler::QueuesEmptyFor(int w) const { return QueuedFor(w) == 0; }

bool Scheduler::PartnersIdle(int w) const {
  const int g = workers_[static_cast<size_t>(w)]->config.group;
  if (g < 0) return true;
  for (int p : groups_[static_cast<size_t>(g)].config.workers) {
    if (p != w && workers_[static_cast<size_t>(p)]->state != WorkerState::kIdle) return false;
  }
  return true;
}

void Scheduler::CollectExpired(int w, TimePoint now, std::vector<std::unique_ptr<Request>>& expired,
                               std::vector<absl::Status>& answers) {
  for (const auto& s : slots_) {
    if (!s || !ServesModel(w, *s)) continue;
    const size_t before = expired.size();
    s->queue.TakeExpired(now, expired);
    for (size_t i = before; i < expired.size(); ++i) {
      ++s->failures;
      if (expired[i]->Withdrawn()) {
        ++s->cancelled;
        answers.push_back(absl::CancelledError(
            absl::StrCat("request for model '", s->spec.name, "' was cancelled before it ran")));
      } else {
        ++s->deadline_exceeded;
        answers.push_back(absl::DeadlineExceededError(
            absl::StrCat("request for model '", s->spec.name,
                         "': deadline passed while it waited in the queue (",
                         MicrosBetween(expired[i]->enqueued, now), " us)")));
      }
    }
  }
}

void Scheduler::Answer(std::unique_ptr<Request>& request, absl::StatusOr<InferResult> result) {
  // A callback that throws is a caller bug; it must not take the worker (and every later request)
  // down with it, so the exception stops here.
  try {
    if (request->done) request->done(std::move(result));
  } catch (...) {
    Log().error("an inference callback threw; the exception was dropped");
  }
  request.reset();
}

Scheduler::NextBatch Scheduler::FindBatch(int w, TimePoint now) const {
  NextBatch next;
  for (size_t m = 0; m < slots_.size(); ++m) {
    Slot* s = slots_[m].get();
    if (!s || s->queue.empty() || !ServesModel(w, *s)) continue;
    const RequestQueue::Pick p =
        GatherBatch(s->queue, s->spec.batching, now, stopping_ || s->removing);
    if (!p.ready) {
      next.wake = std::min(next.wake, p.wake);
    } else if (!next.pick.ready || p.oldest < next.pick.oldest) {
      next.pick = p;
      next.best = s;
      next.model = static_cast<int>(m);
    }
  }
  return next;
}

void Scheduler::WorkerLoop(int w) {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    Worker& me = *workers_[static_cast<size_t>(w)];
    if (me.state != WorkerState::kIdle) {
      me.waits_for_idle = true;
      clock_->WaitUntil(me.cv, lock, TimePoint::max());
      me.waits_for_idle = false;
      continue;
    }
    if (JoinPending(w)) continue;
    if (me.retire) break;
    const TimePoint now = clock_->Now();
    std::vector<std::unique_ptr<Request>> expired;
    std::vector<absl::Status> expired_answers;
    CollectExpired(w, now, expired, expired_answers);
    if (!expired.empty()) {
      room_cv_.notify_all();
      state_cv_.notify_all();
      lock.unlock();
      for (size_t i = 0; i < expired.size(); ++i) Answer(expired[i], std::move(expired_answers[i]));
      lock.lock();
      continue;
    }
    // The oldest ready batch among the models this worker serves, or the oldest waiting lease,
    // whichever came first.
    NextBatch next = FindBatch(w, now);
    LeaseRequest* lease = OldestAnyLease();
    if (lease && (!next.pick.ready || lease->since <= next.pick.oldest)) {
      GrantLease(w, *lease);
      continue;
    }
    if (next.pick.ready) {
      Batch batch;
      batch.model = next.model;
      next.best->queue.Take(next.pick, batch.requests);
      room_cv_.notify_all();
      RunBatch(w, std::move(batch), lock);
      continue;
    }
    if (stopping_ && QueuesEmptyFor(w)) break;
    clock_->WaitUntil(me.cv, lock, next.wake);
  }
  // Gone: no lease, inline run or wide assembly may count on this worker any more.
  Worker& me = *workers_[static_cast<size_t>(w)];
  me.state = WorkerState::kParked;
  if (me.config.group >= 0) {
    for (int p : groups_[static_cast<size_t>(me.config.group)].config.workers) {
      workers_[static_cast<size_t>(p)]->cv.notify_all();
    }
  }
  state_cv_.notify_all();
}

absl::Status Scheduler::Reconfigure(Layout layout) {
  if (CallingWorker() >= 0) {
    return absl::FailedPreconditionError("Reconfigure from a worker thread");
  }
  std::unique_lock<std::mutex> lock(mu_);
  if (stopping_) return absl::UnavailableError("engine is shut down");
  pausing_ = true;
  for (auto& w : workers_) {
    w->retire = true;
    w->cv.notify_all();
  }
  while (inline_runs_ > 0) clock_->WaitUntil(state_cv_, lock, TimePoint::max());
  lock.unlock();
  JoinWorkers(/*exclude_self=*/false);
  lock.lock();
  for (auto& w : workers_) clock_->Unregister(&mu_, &w->cv);
  workers_.clear();
  groups_.clear();
  for (WorkerConfig& c : layout.workers) {
    auto w = std::make_unique<Worker>();
    w->config = std::move(c);
    clock_->Register(&mu_, &w->cv);
    workers_.push_back(std::move(w));
  }
  for (GroupConfig& g : layout.groups) {
    groups_.push_back(MakeGroup(std::move(g)));
  }
  std::vector<std::shared_ptr<Session>> dropped;  // released outside the lock
  for (size_t m = 0; m < slots_.size(); ++m) {
    Slot* s = slots_[m].get();
    if (!s) continue;
    for (auto& p : s->spec.narrow) dropped.push_back(std::move(p));
    for (auto& p : s->spec.wide) dropped.push_back(std::move(p));
    s->spec.narrow = m < layout.narrow.size() ? std::move(layout.narrow[m])
                                              : std::vector<std::shared_ptr<Session>>{};
    s->spec.wide = m < layout.wide.size() ? std::move(layout.wide[m])
                                          : std::vector<std::shared_ptr<Session>>{};
    s->spec.narrow.resize(workers_.size());
    s->spec.wide.resize(groups_.size());
    s->modes.group_workers =
        groups_.empty() ? 1 : static_cast<int>(groups_[0].config.workers.size());
  }
  pausing_ = false;
  if (started_) StartWorkers();
  lock.unlock();
  dropped.clear();
  return absl::OkStatus();
}

void Scheduler::Shutdown() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    stopping_ = true;
    for (auto& w : workers_) w->cv.notify_all();
    room_cv_.notify_all();
    state_cv_.notify_all();
    // Inside a callback: the workers drain and stop by themselves.
    if (CallingWorker() >= 0) return;
    while (inline_runs_ > 0) clock_->WaitUntil(state_cv_, lock, TimePoint::max());
  }
  std::call_once(joined_, [this] { JoinWorkers(/*exclude_self=*/true); });
  // Requests no worker could take (never started, or a model served by no worker).
  std::vector<std::unique_ptr<Request>> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& s : slots_) {
      if (!s) continue;
      s->failures += static_cast<int64_t>(s->queue.size());
      s->queue.TakeAll(left);
    }
  }
  for (auto& r : left) {
    Answer(r, absl::UnavailableError("engine shut down before the request ran"));
  }
}

}  // namespace loom::sched
