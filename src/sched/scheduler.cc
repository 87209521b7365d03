#include "sched/scheduler.h"

#include <algorithm>
#include <cmath>
#include <unistd.h>

#include <bit>
#include <latch>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/cpu_set.h"
#include "core/log.h"
#include "core/tensor_rows.h"

namespace loom::sched {
namespace {

// The scheduler and worker index of the calling thread, when it is a worker.
thread_local const void* tls_scheduler = nullptr;
thread_local int tls_worker = -1;

int64_t MicrosBetween(TimePoint a, TimePoint b) {
  return std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::microseconds>(b - a).count());
}

constexpr double kEwmaWeight = 0.2;  // of the newest run
constexpr size_t kMaxHistory = 100;

// A request's first input as one row of it (dim 0 set to 1 where it holds the request's rows), to
// name a size in the plan.
Shape RowShape(const Request& request) {
  if (request.inputs.empty()) return {};
  Shape shape = request.inputs[0].tensor.shape();
  if (!shape.empty() && request.rows > 1 && shape[0] == request.rows) shape[0] = 1;
  return shape;
}

void Ewma(double& average, double sample) {
  average = average <= 0 ? sample : average + kEwmaWeight * (sample - average);
}

// Prometheus-style cumulative buckets from a histogram snapshot.
Distribution ToDistribution(const Histogram::Snapshot& s, const std::vector<uint64_t>& bounds,
                            double scale) {
  Distribution d;
  for (uint64_t b : bounds) {
    d.upper_bounds.push_back(static_cast<double>(b) * scale);
    d.cumulative_counts.push_back(s.CountAtMost(b));
  }
  d.count = s.count;
  d.sum = static_cast<double>(s.sum) * scale;
  return d;
}

const std::vector<uint64_t>& MicrosecondBounds() {
  static const auto* bounds = [] {
    auto* b = new std::vector<uint64_t>();
    for (int k = 4; k <= 25; ++k) b->push_back((uint64_t{1} << k) - 1);  // ~16 us .. 33 s
    return b;
  }();
  return *bounds;
}

const std::vector<uint64_t>& RowBounds() {
  static const auto* bounds = new std::vector<uint64_t>{1, 2, 3, 4, 6, 8, 12, 16, 32, 64, 128, 256};
  return *bounds;
}

}  // namespace

// The narrow/wide choice of one model at one size of request (see the header). Requires mu_.
struct Scheduler::ModeState {
  // EWMAs, ms per request of the measured size (ModelSpec::measured_elements), or per row where
  // that is unknown. Wide runs alone and under load apart too: under load a wide run shares
  // memory bandwidth with the runs around it and is slower, and that must not decide the lone case.
  double narrow_alone_ms = 0, narrow_loaded_ms = 0, wide_ms = 0 /* alone */, wide_loaded_ms = 0;
  double WideLoaded() const { return wide_loaded_ms > 0 ? wide_loaded_ms : wide_ms; }
  bool wide_alone = false, wide_loaded = false;
  TimePoint switched_alone{}, switched_loaded{};
  int64_t decisions_alone = 0, decisions_loaded = 0, narrow_runs = 0, wide_runs = 0;
  // Exploring backs off, per situation ([alone]): each try of the other width doubles the
  // interval to the next (at most kMaxExploreBackoff times), and a switch or a re-plan starts it
  // over. A try that leaves the choice as it was costs core time (under load, the partners' wait
  // as well): a choice confirmed again and again is re-checked less and less often, but always.
  static constexpr int kMaxExploreBackoff = 5;
  int explore_backoff[2] = {};
  int64_t explored_at[2] = {};  // the decision count of the last try or switch
  void StartExploringOver(bool alone) {
    explore_backoff[alone] = 0;
    explored_at[alone] = alone ? decisions_alone : decisions_loaded;
  }
  // A size first seen (not the measured one): the preferred width, then the other, runs
  // kFirstSightRuns times alone and under load, and then this size's own runs decide.
  bool first_sight = false;
  int64_t runs[2][2] = {};  // [alone][wide]
  std::string shape;        // a run's first input, naming the size in the plan,
  int64_t elements = 0;     // and its input elements per row
  // The width these figures call for, alone or under load: the other one only past the margin
  // (so that the choice does not flip on noise); the current one where a figure is missing.
  bool Wanted(bool alone, int group_workers, double margin) const {
    if (alone) {
      if (wide_ms <= 0 || narrow_alone_ms <= 0) return wide_alone;
      return wide_ms < narrow_alone_ms * (wide_alone ? 1 + margin : 1 - margin);
    }
    const double narrow_ms = NarrowLoaded();
    if (WideLoaded() <= 0 || narrow_ms <= 0) return wide_loaded;
    const double wide_rate = 1000.0 / WideLoaded(), narrow_rate = 1000.0 * group_workers / narrow_ms;
    return wide_rate > narrow_rate * (wide_loaded ? 1 - margin : 1 + margin);
  }
  double NarrowLoaded() const { return narrow_loaded_ms > 0 ? narrow_loaded_ms : narrow_alone_ms; }
  // What turns the EWMAs (per measured-size request) into figures at this size, for people.
  double ToThisSize(int size, int64_t measured_elements) const {
    return size >= 0 && elements > 0 && measured_elements > 0
               ? static_cast<double>(elements) / static_cast<double>(measured_elements)
               : 1.0;
  }
};

// A model's choices by size of request: input elements per row rounded down to a power of 2 (-1:
// sizes unknown, one choice per model, ms per row), but the measured request's own size is a
// class of its own (kMeasuredSize): the plan's figures are for that shape, not for its neighbours
// (PP-OCR det's load-time probe runs as fast on one thread as on two, a 544x256 page twice as fast
// on two). Per row, so that a model whose only dynamic dim is the batch keeps one choice at every
// batch size, as the measured request is one row.
struct Scheduler::Modes {
  static constexpr int64_t kFirstSightRuns = 2;
  static constexpr int kMeasuredSize = 64;  // the power-of-2 classes are bit widths of an int64: 0..63
  std::map<int, ModeState> by_size;
  int measured = -1;  // the size the plan's costs were measured at
  // The (session, input elements per row) pairs that have run: a pair's first run is a warm-up.
  // Bounded (shapes come from requests): past the bound, runs count as warm.
  static constexpr size_t kMaxWarmed = 4096;
  std::set<std::pair<const void*, int64_t>> warmed;
  bool WarmUp(const void* session, int64_t per_row) {
    return warmed.size() < kMaxWarmed && warmed.insert({session, per_row}).second;
  }
  int group_workers = 1;  // k: narrow runs a wide run replaces

  static int SizeOf(int64_t measured_elements, int64_t elements, int64_t rows) {
    const int64_t per_row = elements / std::max<int64_t>(rows, 1);
    if (measured_elements <= 0 || per_row <= 0) return -1;
    if (per_row == measured_elements) return kMeasuredSize;
    return static_cast<int>(std::bit_width(static_cast<uint64_t>(per_row))) - 1;
  }
  // The choice at `size`; a size first seen starts from the measured size's preferences.
  ModeState& At(int size) {
    auto it = by_size.find(size);
    if (it != by_size.end()) return it->second;
    ModeState& fresh = by_size[size];
    const ModeState& seed = by_size[measured];
    fresh.wide_alone = seed.wide_alone;
    fresh.wide_loaded = seed.wide_loaded;
    fresh.first_sight = true;
    return fresh;
  }
  // The plan's costs at the size they were measured at (a re-plan's, perhaps on another layout):
  // that size's averages and preferences start from them, its counts go on (a choice can change
  // on the runs to come); what was measured at other sizes is forgotten (they see first sight
  // again); wide under load is measured afresh on the layout.
  void Seed(double narrow_ms, double wide_ms, int64_t measured_elements, double margin) {
    const int size = SizeOf(measured_elements, measured_elements, 1);
    auto it = by_size.find(size);
    ModeState m = it != by_size.end() ? it->second : ModeState{};
    by_size.clear();
    warmed.clear();  // a re-plan's sessions are new
    measured = size;
    m.first_sight = false;
    m.StartExploringOver(/*alone=*/true);  // new figures: checked at the usual pace again
    m.StartExploringOver(/*alone=*/false);
    m.narrow_alone_ms = m.narrow_loaded_ms = narrow_ms;
    m.wide_ms = wide_ms;
    m.wide_loaded_ms = 0;
    m.wide_alone = m.wide_loaded = false;
    if (narrow_ms > 0 && wide_ms > 0) {
      m.wide_alone = wide_ms < narrow_ms * (1 - margin);
      m.wide_loaded = 1.0 / wide_ms > group_workers / narrow_ms * (1 + margin);
    }
    by_size[measured] = std::move(m);
  }
  // ms per measured-size request expected of a run at `size` (the measured size's where this one
  // has no measurement yet).
  double ExpectedMs(int size, bool wide) {
    for (const int s : {size, measured}) {
      const ModeState& m = At(s);
      const double ms = wide ? m.wide_ms : std::max(m.narrow_alone_ms, m.narrow_loaded_ms);
      if (ms > 0) return ms;
    }
    return 0;
  }
};

Scheduler::Group Scheduler::MakeGroup(GroupConfig config) const {
  Group group;
  for (int w : config.workers) group.cpu_count += static_cast<int>(workers_[static_cast<size_t>(w)]->config.cpus.size());
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
  slot->modes = std::make_unique<Modes>();
  std::lock_guard<std::mutex> lock(mu_);
  slot->modes->group_workers = groups_.empty() ? 1 : static_cast<int>(groups_[0].config.workers.size());
  slot->modes->Seed(spec.narrow_ms, spec.wide_ms, spec.measured_elements, options_.switch_margin);
  spec.narrow.resize(workers_.size());
  spec.wide.resize(groups_.size());
  slot->spec = std::move(spec);
  slots_.push_back(std::move(slot));
  // Idle workers that now serve the model look at its queue from now on.
  for (auto& w : workers_) w->cv.notify_all();
  return static_cast<int>(slots_.size()) - 1;
}

void Scheduler::ConfigureModel(int model, const BatchingConfig& batching, double narrow_ms, double wide_ms,
                               int64_t measured_elements) {
  std::lock_guard<std::mutex> lock(mu_);
  Slot* slot = FindSlot(model);
  if (!slot) return;
  slot->spec.batching = batching;
  slot->spec.measured_elements = measured_elements;
  slot->modes->Seed(narrow_ms, wide_ms, measured_elements, options_.switch_margin);
}

Scheduler::Slot* Scheduler::FindSlot(int model) const {
  if (model < 0 || model >= static_cast<int>(slots_.size())) return nullptr;
  return slots_[static_cast<size_t>(model)].get();
}

absl::Status Scheduler::RemoveModel(int model) {
  if (tls_scheduler == this) {
    return absl::FailedPreconditionError("a model cannot be removed from inside a completion callback");
  }
  std::shared_ptr<Slot> removed;
  {
    std::unique_lock<std::mutex> lock(mu_);
    Slot* slot = FindSlot(model);
    if (!slot || slot->removing) return absl::NotFoundError(absl::StrCat("no model with id ", model));
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
    for (auto& r : left) Answer(r, absl::UnavailableError(absl::StrCat("model '", removed->spec.name, "' was removed before the request ran")));
  }
  return absl::OkStatus();  // `removed` and its sessions go here, outside the lock
}

std::vector<std::string> Scheduler::ModelNames() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> names;
  for (const auto& s : slots_) names.push_back(s && !s->removing ? s->spec.name : "");
  return names;
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

absl::Status Scheduler::Enqueue(int model, std::unique_ptr<Request>& request, bool block_when_full) {
  std::unique_lock<std::mutex> lock(mu_);
  Slot* slot = FindSlot(model);
  if (!slot) return absl::NotFoundError(absl::StrCat("no model with id ", model, " (it was removed)"));
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
      return refuse(absl::DeadlineExceededError(absl::StrCat(
          "model '", name, "' queue stayed full (capacity ", slot->spec.capacity,
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
  return static_cast<size_t>(w) < slot.spec.narrow.size() && slot.spec.narrow[static_cast<size_t>(w)];
}

void Scheduler::ReleasePartners(const Group& group, int w) {
  for (int p : group.config.workers) {
    Worker& partner = *workers_[static_cast<size_t>(p)];
    if (p != w && partner.state == WorkerState::kLent && partner.lent_to == w) {
      partner.state = WorkerState::kIdle;
      partner.lent_to = -1;
      partner.cv.notify_all();
    }
  }
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

void Scheduler::Occupy(int threads) {
  busy_threads_ += threads;
  busy_now_.store(busy_threads_, std::memory_order_relaxed);
  int seen = max_busy_threads_.load(std::memory_order_relaxed);
  while (busy_threads_ > seen && !max_busy_threads_.compare_exchange_weak(seen, busy_threads_)) {
  }
}

bool Scheduler::JoinPending(int w) {
  Worker& me = *workers_[static_cast<size_t>(w)];
  const int g = me.config.group;
  if (g >= 0 && groups_[static_cast<size_t>(g)].assembling >= 0 &&
      groups_[static_cast<size_t>(g)].assembling != w) {
    const int leader = groups_[static_cast<size_t>(g)].assembling;
    me.state = WorkerState::kLent;
    me.lent_to = leader;
    me.lent_since = clock_->Now();
    workers_[static_cast<size_t>(leader)]->cv.notify_all();
    return true;
  }
  for (LeaseRequest* lease : leases_) {
    if (lease->done || lease->wanted.empty()) continue;
    if (std::find(lease->wanted.begin(), lease->wanted.end(), w) == lease->wanted.end()) continue;
    if (std::find(lease->granted.begin(), lease->granted.end(), w) != lease->granted.end()) continue;
    me.state = WorkerState::kLent;
    me.lent_to = -2;
    lease->granted.push_back(w);
    if (lease->granted.size() == lease->wanted.size()) {
      lease->done = true;
      int threads = 0;
      for (int x : lease->wanted) threads += static_cast<int>(workers_[static_cast<size_t>(x)]->config.cpus.size());
      Occupy(threads);
      state_cv_.notify_all();
    }
    if (g >= 0 && groups_[static_cast<size_t>(g)].assembling >= 0) {
      workers_[static_cast<size_t>(groups_[static_cast<size_t>(g)].assembling)]->cv.notify_all();
    }
    return true;
  }
  return false;
}

void Scheduler::GrantLeases() {
  for (LeaseRequest* lease : leases_) {
    if (lease->done || !lease->wanted.empty()) continue;
    int chosen = -1;
    for (size_t w = 0; w < workers_.size() && chosen < 0; ++w) {
      const Worker& worker = *workers_[w];
      const int g = worker.config.group;
      if (worker.state != WorkerState::kIdle || worker.retire) continue;
      if (g >= 0 && groups_[static_cast<size_t>(g)].assembling >= 0) continue;
      chosen = static_cast<int>(w);
    }
    if (chosen < 0) return;
    Worker& worker = *workers_[static_cast<size_t>(chosen)];
    worker.state = WorkerState::kLent;
    worker.lent_to = -2;
    Occupy(static_cast<int>(worker.config.cpus.size()));
    lease->granted = {chosen};
    lease->done = true;
    state_cv_.notify_all();
  }
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
        answers.push_back(absl::DeadlineExceededError(absl::StrCat(
            "request for model '", s->spec.name, "': deadline passed while it waited in the queue (",
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
    // The oldest ready batch among the models this worker serves...
    Slot* best = nullptr;
    int best_model = -1;
    RequestQueue::Pick pick;
    TimePoint wake = TimePoint::max();
    for (size_t m = 0; m < slots_.size(); ++m) {
      Slot* s = slots_[m].get();
      if (!s || s->queue.empty() || !ServesModel(w, *s)) continue;
      const RequestQueue::Pick p = GatherBatch(s->queue, s->spec.batching, now, stopping_ || s->removing);
      if (!p.ready) {
        wake = std::min(wake, p.wake);
      } else if (!pick.ready || p.oldest < pick.oldest) {
        pick = p;
        best = s;
        best_model = static_cast<int>(m);
      }
    }
    // ...or the oldest waiting lease, whichever came first.
    LeaseRequest* lease = nullptr;
    for (LeaseRequest* l : leases_) {
      if (!l->done && l->wanted.empty()) {
        lease = l;
        break;
      }
    }
    if (lease && (!pick.ready || lease->since <= pick.oldest)) {
      me.state = WorkerState::kLent;
      me.lent_to = -2;
      Occupy(static_cast<int>(me.config.cpus.size()));
      lease->granted = {w};
      lease->done = true;
      state_cv_.notify_all();
      continue;
    }
    if (pick.ready) {
      Batch batch;
      batch.model = best_model;
      best->queue.Take(pick, batch.requests);
      room_cv_.notify_all();
      RunBatch(w, std::move(batch), lock);
      continue;
    }
    if (stopping_ && QueuesEmptyFor(w)) break;
    clock_->WaitUntil(me.cv, lock, wake);
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

bool Scheduler::ChooseWide(Slot& slot, int group, bool alone, int64_t elements, int64_t rows) {
  if (!options_.adaptive || group < 0 || static_cast<size_t>(group) >= slot.spec.wide.size() ||
      !slot.spec.wide[static_cast<size_t>(group)]) {
    return false;
  }
  const int group_workers = slot.modes->group_workers;
  ModeState& m = slot.modes->At(Modes::SizeOf(slot.spec.measured_elements, elements, rows));
  const bool preferred = alone ? m.wide_alone : m.wide_loaded;
  int64_t& decisions = alone ? m.decisions_alone : m.decisions_loaded;
  ++decisions;
  // A size first seen: each width a few times at this size, the preferred one first.
  // (Exploring's interval counts from the last of these runs, as from any try of the other width.)
  if (m.first_sight && options_.explore_every > 0) {
    const bool preferred_due = m.runs[alone][preferred] < Modes::kFirstSightRuns;
    if (preferred_due || m.runs[alone][!preferred] < Modes::kFirstSightRuns) {
      m.explored_at[alone] = decisions;
      return preferred_due ? preferred : !preferred;
    }
  }
  // The figures call for the other width, whose figure is not yet a measurement of its own runs
  // (at the measured size: the load-time probe's, while the preferred width's runs came out slower
  // than the probe said; other sizes run both widths at first sight): it runs now, a few times,
  // rather than when the exploring schedule comes round, so that a stale figure does not keep the
  // worse width for long.
  if (options_.explore_every > 0 && m.runs[alone][!preferred] < Modes::kFirstSightRuns &&
      m.Wanted(alone, group_workers, options_.switch_margin) != preferred) {
    m.explored_at[alone] = decisions;
    return !preferred;
  }
  if (options_.explore_every <= 0) return preferred;
  // Exploring costs what the other width loses against the preferred one: try it less often the
  // worse it measured (by that ratio, at most 8x less often). Alone the cost is the request's own
  // time; under load it is core time (a wide run holds every worker of the group).
  double worse = 1;
  const double narrow_ms = alone ? m.narrow_alone_ms : m.NarrowLoaded();
  if (m.wide_ms > 0 && narrow_ms > 0) {
    const double wide_cost = alone ? m.wide_ms : m.WideLoaded() * group_workers;
    worse = preferred ? narrow_ms / wide_cost : wide_cost / narrow_ms;
  }
  const int64_t every = std::llround(options_.explore_every * std::clamp(worse, 1.0, 8.0))
                       << m.explore_backoff[alone];
  if (decisions - m.explored_at[alone] < every) return preferred;
  m.explored_at[alone] = decisions;
  m.explore_backoff[alone] = std::min(m.explore_backoff[alone] + 1, ModeState::kMaxExploreBackoff);
  return !preferred;
}

void Scheduler::RecordRun(Slot& slot, const RunPlan& plan, int64_t compute_us, int64_t rows, int64_t elements,
                          const Request& first, int group) {
  const int group_workers = slot.modes->group_workers;
  const int size = Modes::SizeOf(slot.spec.measured_elements, elements, rows);
  ModeState& m = slot.modes->At(size);
  ++m.runs[plan.alone][plan.wide];
  if (m.shape.empty()) {  // once per size: not a shape copy on every run
    m.shape = ShapeToString(RowShape(first));
    m.elements = elements / std::max<int64_t>(rows, 1);
  }
  // ms per measured-size request where that size is known (runs of different shapes then compare),
  // else ms per row. An empty run says nothing about the cost of a measured-size one.
  if (slot.spec.measured_elements > 0 && elements <= 0) return;
  const double per = slot.spec.measured_elements > 0 && elements > 0
                         ? static_cast<double>(slot.spec.measured_elements) / static_cast<double>(elements)
                         : 1.0 / static_cast<double>(std::max<int64_t>(rows, 1));
  const double ms = static_cast<double>(compute_us) / 1000.0 * per;
  // A session's first run at a shape is a warm-up, counted but not averaged: ONNX Runtime plans
  // and allocates for a shape it has not run (PP-OCR det's first run at 544x256 takes 1.2-1.4x its
  // next ones: `loom run --warmup 0 --repeat 1`), and an average that starts from it would hold
  // that against the width for many runs. (The plan's probe warmed the measured size up.)
  const bool warm_up =
      size != slot.modes->measured && slot.modes->WarmUp(plan.session.get(), elements / std::max<int64_t>(rows, 1));
  if (plan.wide) {
    if (!warm_up) Ewma(plan.alone ? m.wide_ms : m.wide_loaded_ms, ms);
    ++m.wide_runs;
  } else {
    if (!warm_up) Ewma(plan.alone ? m.narrow_alone_ms : m.narrow_loaded_ms, ms);
    ++m.narrow_runs;
  }
  // A preference changes only on measurements of both widths (a few runs each), never on one.
  if (group < 0 || !options_.adaptive || m.wide_runs < 2 || m.narrow_runs < 2) return;
  const TimePoint now = clock_->Now();
  const double margin = options_.switch_margin;
  const double k = m.ToThisSize(size, slot.spec.measured_elements);  // the note's figures at this size
  auto note = [&](std::string text) {
    if (size >= 0) absl::StrAppend(&text, " at ", m.shape);
    history_.push_back({now, slot.spec.name, text});
    if (history_.size() > kMaxHistory) history_.erase(history_.begin());
    Log().info("plan: model '{}' {}", slot.spec.name, text);
  };
  if (now - m.switched_alone >= options_.min_switch_interval) {
    const bool want = m.Wanted(/*alone=*/true, group_workers, margin);
    if (want != m.wide_alone) {
      m.wide_alone = want;
      m.switched_alone = now;
      m.StartExploringOver(/*alone=*/true);
      note(absl::StrFormat("alone: now %s (wide %.2f ms vs narrow %.2f ms per request, measured)",
                           want ? "wide" : "narrow", k * m.wide_ms, k * m.narrow_alone_ms));
    }
  }
  if (now - m.switched_loaded >= options_.min_switch_interval) {
    const bool want = m.Wanted(/*alone=*/false, group_workers, margin);
    if (want != m.wide_loaded) {
      m.wide_loaded = want;
      m.switched_loaded = now;
      m.StartExploringOver(/*alone=*/false);
      note(absl::StrFormat("under load: now %s (wide %.1f/s vs narrow %.1f/s per group, measured)",
                           want ? "wide" : "narrow", 1000.0 / (k * m.WideLoaded()),
                           1000.0 * group_workers / (k * m.NarrowLoaded())));
    }
  }
}

void Scheduler::RunBatch(int w, Batch batch, std::unique_lock<std::mutex>& lock) {
  Worker& me = *workers_[static_cast<size_t>(w)];
  Slot& slot = *slots_[static_cast<size_t>(batch.model)];
  int64_t rows = 0, elements = 0;
  for (const auto& r : batch.requests) {
    rows += r->rows;
    elements += ElementCount(r->inputs);
  }
  const int g = me.config.group;
  slot.running += rows;  // keeps the slot (RemoveModel waits) through the assembly and the run
  RunPlan plan;
  plan.alone = QueuedFor(w) == 0 && PartnersIdle(w);
  bool wide = ChooseWide(slot, g, plan.alone, elements, rows) && groups_[static_cast<size_t>(g)].assembling < 0;
  int64_t assembly_us = 0;
  if (wide) {
    const TimePoint assembly_start = clock_->Now();
    // Wait for the partners to lend their cores (each joins when its current work ends).
    Group& group = groups_[static_cast<size_t>(g)];
    group.assembling = w;
    me.state = WorkerState::kAssembling;
    for (int p : group.config.workers) {
      if (p != w) workers_[static_cast<size_t>(p)]->cv.notify_all();
    }
    while (true) {
      bool all = true, blocked = false;
      for (int p : group.config.workers) {
        if (p == w) continue;
        const Worker& partner = *workers_[static_cast<size_t>(p)];
        const bool mine = partner.state == WorkerState::kLent && partner.lent_to == w;
        all &= mine;
        // A partner lent elsewhere (an admin lease) or leaving will not come: run narrow.
        blocked |= (partner.state == WorkerState::kLent && !mine) || partner.retire ||
                   partner.state == WorkerState::kParked;
      }
      if (all) break;
      if (blocked || me.retire) {
        wide = false;
        break;
      }
      clock_->WaitUntil(me.cv, lock, TimePoint::max());
    }
    if (!wide) {
      group.assembling = -1;
      ReleasePartners(group, w);
    }
    // The cores that idled for this wide run: the leader's while it waited, each partner's from
    // when it joined (the last one joins as the run starts).
    const TimePoint now = clock_->Now();
    assembly_us = MicrosBetween(assembly_start, now);
    if (wide) {
      for (int p : group.config.workers) {
        if (p != w) assembly_us += MicrosBetween(workers_[static_cast<size_t>(p)]->lent_since, now);
      }
    }
  }
  if (wide) {
    plan.wide = true;
    plan.session = slot.spec.wide[static_cast<size_t>(g)];
    plan.threads = groups_[static_cast<size_t>(g)].cpu_count;
  } else {
    plan.session = slot.spec.narrow[static_cast<size_t>(w)];
    plan.threads = static_cast<int>(me.config.cpus.size());
  }
  me.state = WorkerState::kBusy;
  Occupy(plan.threads);

  lock.unlock();
  std::vector<Request*> requests;
  for (auto& r : batch.requests) requests.push_back(r.get());
  const TimePoint start = clock_->Now();
  std::vector<absl::StatusOr<InferResult>> answers = Execute(w, slot, requests, plan, start);
  const int64_t compute_us = answers.empty() || !answers[0].ok() ? MicrosBetween(start, clock_->Now())
                                                                 : answers[0]->compute_us;
  lock.lock();

  Occupy(-plan.threads);
  me.busy_us += compute_us;
  ++me.runs;
  // Under load a wide run also costs the time its workers' cores idled while the last partners
  // ended their runs: per group, that idle time over the group's workers. Uncharged, wide under
  // load measured better than it was and the choice flipped to it.
  const int64_t charged_us =
      wide && !plan.alone ? compute_us + assembly_us / std::max(slot.modes->group_workers, 1) : compute_us;
  RecordRun(slot, plan, charged_us, rows, elements, *batch.requests[0], g);
  if (wide) {
    Group& group = groups_[static_cast<size_t>(g)];
    group.assembling = -1;
    ReleasePartners(group, w);
  }
  slot.running -= rows;  // after this the slot may be removed: no access below
  state_cv_.notify_all();
  lock.unlock();
  // The worker stays busy while its callbacks run, so that Infer() from a callback can use its
  // session (TryRunInline) and no one else can.
  for (size_t i = 0; i < batch.requests.size(); ++i) Answer(batch.requests[i], std::move(answers[i]));
  lock.lock();
  me.state = WorkerState::kIdle;
  GrantLeases();
}

std::vector<absl::StatusOr<InferResult>> Scheduler::Execute(
    int worker, Slot& slot, const std::vector<Request*>& requests, const RunPlan& plan,
    TimePoint start) {
  const std::string& model = slot.spec.name;
  const size_t n = requests.size();
  std::vector<absl::StatusOr<InferResult>> answers;
  answers.reserve(n);
  int64_t total_rows = 0;
  absl::Status failure;
  int64_t compute_us = 0;
  try {
    std::vector<const NamedTensors*> parts;
    std::vector<int64_t> rows;
    parts.reserve(n);
    rows.reserve(n);
    for (const auto& r : requests) {
      parts.push_back(&r->inputs);
      rows.push_back(r->rows);
      total_rows += r->rows;
    }
    absl::StatusOr<NamedTensors> joined = ConcatRows(parts);
    absl::StatusOr<NamedTensors> outputs =
        joined.ok() ? plan.session->Run(*joined) : absl::StatusOr<NamedTensors>(joined.status());
    compute_us = MicrosBetween(start, clock_->Now());
    absl::StatusOr<std::vector<NamedTensors>> split =
        outputs.ok() ? SplitRows(model, *outputs, rows)
                     : absl::StatusOr<std::vector<NamedTensors>>(outputs.status());
    if (split.ok()) {
      for (size_t i = 0; i < n; ++i) {
        InferResult result;
        result.outputs = std::move((*split)[i]);
        result.queue_us = MicrosBetween(requests[i]->enqueued, start);
        result.compute_us = compute_us;
        result.batch_rows = static_cast<int>(total_rows);
        result.threads = plan.threads;
        answers.push_back(std::move(result));
      }
    } else {
      failure = split.status();
    }
  } catch (const std::bad_alloc&) {
    failure = absl::ResourceExhaustedError(absl::StrCat("model '", model, "': out of memory running a batch of ", total_rows, " rows"));
  } catch (const std::exception& e) {
    failure = absl::InternalError(absl::StrCat("model '", model, "': ", e.what()));
  } catch (...) {
    failure = absl::InternalError(absl::StrCat("model '", model, "': unknown exception in the backend"));
  }
  if (!failure.ok()) {
    answers.clear();
    for (size_t i = 0; i < n; ++i) answers.push_back(failure);
    if (compute_us == 0) compute_us = MicrosBetween(start, clock_->Now());
  }
  // Statistics (atomics: the slot is alive while `running` counts this batch).
  Slot& s = slot;
  ++s.batches;
  s.batch_rows += total_rows;
  s.compute_us.Record(static_cast<uint64_t>(compute_us));
  s.rows.Record(static_cast<uint64_t>(total_rows));
  for (const auto& r : requests) s.queue_us.Record(static_cast<uint64_t>(MicrosBetween(r->enqueued, start)));
  (failure.ok() ? s.successes : s.failures) += static_cast<int64_t>(n);
  if (tracing_.load(std::memory_order_relaxed)) {
    const TimePoint end = start + std::chrono::microseconds(compute_us);
    std::lock_guard<std::mutex> lock(trace_mu_);
    trace_.push_back({TraceSpan::kRun, worker, model, start, end, static_cast<int>(total_rows), plan.threads});
    for (const auto& r : requests) {
      trace_.push_back({TraceSpan::kQueue, worker, model, r->enqueued, start, static_cast<int>(r->rows), 0});
    }
  }
  return answers;
}

std::optional<absl::StatusOr<InferResult>> Scheduler::TryRunInline(int model, Request& request) {
  std::unique_lock<std::mutex> lock(mu_);
  Slot* slot = FindSlot(model);
  if (!slot || slot->removing || stopping_ || pausing_ || !started_) return std::nullopt;
  request.model = model;
  request.enqueued = clock_->Now();
  const int64_t elements = ElementCount(request.inputs);
  std::vector<int> claimed;
  RunPlan plan;
  int worker = -1;
  if (tls_scheduler == this) {
    // Inside a completion callback on worker `tls_worker`, which is busy with it: its own session
    // is free, and waiting on another worker could deadlock.
    worker = tls_worker;
    if (!ServesModel(worker, *slot)) {
      return absl::StatusOr<InferResult>(absl::FailedPreconditionError(absl::StrCat(
          "Infer() for model '", slot->spec.name, "' from a completion callback on a worker that "
          "does not serve it: waiting for another worker there could deadlock; use Submit()")));
    }
    plan.session = slot->spec.narrow[static_cast<size_t>(worker)];
    plan.threads = static_cast<int>(workers_[static_cast<size_t>(worker)]->config.cpus.size());
  } else {
    if (!slot->queue.empty()) return std::nullopt;  // never overtake queued requests
    // A worker would run it at once only if a batch of this request alone is ready (no batching
    // delay to wait for other requests).
    const TimePoint now = request.enqueued;
    if (!ShouldRunNow(slot->spec.batching, request.rows, false, now, now, false)) return std::nullopt;
    for (size_t w = 0; w < workers_.size() && worker < 0; ++w) {
      const Worker& candidate = *workers_[w];
      const int g = candidate.config.group;
      if (candidate.state != WorkerState::kIdle || candidate.retire || !ServesModel(static_cast<int>(w), *slot)) continue;
      if (g >= 0 && groups_[static_cast<size_t>(g)].assembling >= 0) continue;
      worker = static_cast<int>(w);
    }
    if (worker < 0) return std::nullopt;
    const int g = workers_[static_cast<size_t>(worker)]->config.group;
    plan.alone = QueuedFor(worker) == 0 && PartnersIdle(worker);
    if (plan.alone && ChooseWide(*slot, g, /*alone=*/true, elements, request.rows)) {
      plan.wide = true;
      plan.session = slot->spec.wide[static_cast<size_t>(g)];
      plan.threads = groups_[static_cast<size_t>(g)].cpu_count;
      claimed = groups_[static_cast<size_t>(g)].config.workers;
    } else {
      plan.session = slot->spec.narrow[static_cast<size_t>(worker)];
      plan.threads = static_cast<int>(workers_[static_cast<size_t>(worker)]->config.cpus.size());
      claimed = {worker};
    }
    for (int w : claimed) workers_[static_cast<size_t>(w)]->state = WorkerState::kClaimed;
  }
  ++inline_runs_;
  ++slot->requests;
  slot->running += request.rows;
  Occupy(plan.threads);
  // Where the run happens: on the claimed cores if it is long enough to be worth the move.
  // The figures are per measured-size request (else per row): scaled to this request.
  const double scale = slot->spec.measured_elements > 0 && elements > 0
                           ? static_cast<double>(elements) / static_cast<double>(slot->spec.measured_elements)
                           : static_cast<double>(std::max<int64_t>(request.rows, 1));
  const double expected_ms =
      scale * slot->modes->ExpectedMs(Modes::SizeOf(slot->spec.measured_elements, elements, request.rows), plan.wide);
  std::vector<int> pin_to;
  if (options_.pin_workers && !claimed.empty() && (expected_ms <= 0 || expected_ms >= options_.pin_inline_over_ms)) {
    for (int w : claimed) {
      const auto& cpus = workers_[static_cast<size_t>(w)]->config.cpus;
      pin_to.insert(pin_to.end(), cpus.begin(), cpus.end());
    }
  }
  lock.unlock();

  std::vector<int> previous;
  if (!pin_to.empty()) {
    previous = CurrentThreadCpus();
    if (!PinCurrentThread(pin_to).ok()) previous.clear();
  }
  const TimePoint start = clock_->Now();
  std::vector<absl::StatusOr<InferResult>> answers = Execute(-1, *slot, {&request}, plan, start);
  if (!previous.empty()) (void)PinCurrentThread(previous);
  const int64_t compute_us = answers[0].ok() ? answers[0]->compute_us : MicrosBetween(start, clock_->Now());

  lock.lock();
  Occupy(-plan.threads);
  RecordRun(*slot, plan, compute_us, request.rows, elements, request,
            workers_[static_cast<size_t>(worker)]->config.group);
  for (int w : claimed) {
    Worker& c = *workers_[static_cast<size_t>(w)];
    c.state = WorkerState::kIdle;
    c.busy_us += w == worker ? compute_us : 0;
    // The hot path of a lone Infer(): no wake-up (a futex call and a context switch on the
    // caller's core) for a worker that slept through the claim waiting for work that never came.
    // Work that came meanwhile did not wake it (Enqueue wakes idle workers only): wake it for that.
    if (c.waits_for_idle || !QueuesEmptyFor(w) || !leases_.empty() || stopping_ || c.retire) c.cv.notify_all();
  }
  if (!claimed.empty()) ++workers_[static_cast<size_t>(worker)]->runs;
  slot->running -= request.rows;
  --inline_runs_;
  GrantLeases();
  state_cv_.notify_all();
  return std::move(answers[0]);
}

absl::StatusOr<int> Scheduler::AcquireLease(TimePoint deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  if (workers_.empty()) return absl::UnavailableError("the engine has no workers (no model is loaded): no cores to lease");
  LeaseRequest lease;
  lease.since = clock_->Now();
  leases_.push_back(&lease);
  GrantLeases();
  while (!lease.done) {
    if (stopping_ || clock_->Now() >= deadline) {
      std::erase(leases_, &lease);
      return stopping_ ? absl::UnavailableError("engine is shut down: no cores to lease")
                       : absl::DeadlineExceededError("no core could be leased before the deadline");
    }
    // Wake an idle worker to consider it (it serves leases and batches in arrival order).
    for (auto& w : workers_) {
      if (w->state == WorkerState::kIdle) w->cv.notify_one();
    }
    clock_->WaitUntil(state_cv_, lock, deadline);
  }
  std::erase(leases_, &lease);
  return lease.granted[0];
}

absl::Status Scheduler::AcquireWorkers(const std::vector<int>& wanted) {
  std::unique_lock<std::mutex> lock(mu_);
  for (int w : wanted) {
    if (w < 0 || w >= static_cast<int>(workers_.size())) return absl::InvalidArgumentError("no such worker");
  }
  if (!started_) {  // nothing runs yet: the cores are free
    int threads = 0;
    for (int w : wanted) {
      workers_[static_cast<size_t>(w)]->state = WorkerState::kLent;
      workers_[static_cast<size_t>(w)]->lent_to = -2;
      threads += static_cast<int>(workers_[static_cast<size_t>(w)]->config.cpus.size());
    }
    Occupy(threads);
    return absl::OkStatus();
  }
  LeaseRequest lease;
  lease.since = clock_->Now();
  lease.wanted = wanted;
  leases_.push_back(&lease);
  for (int w : wanted) workers_[static_cast<size_t>(w)]->cv.notify_all();
  while (!lease.done) {
    if (stopping_) {
      for (int w : lease.granted) {
        workers_[static_cast<size_t>(w)]->state = WorkerState::kIdle;
        workers_[static_cast<size_t>(w)]->cv.notify_all();
      }
      std::erase(leases_, &lease);
      return absl::UnavailableError("engine is shut down: no cores to lease");
    }
    clock_->WaitUntil(state_cv_, lock, TimePoint::max());
  }
  std::erase(leases_, &lease);
  return absl::OkStatus();
}

void Scheduler::ReleaseLease(int worker) { ReleaseWorkers({worker}); }

void Scheduler::ReleaseWorkers(const std::vector<int>& released) {
  std::lock_guard<std::mutex> lock(mu_);
  int threads = 0;
  for (int w : released) {
    Worker& worker = *workers_[static_cast<size_t>(w)];
    LOOM_CHECK(worker.state == WorkerState::kLent && worker.lent_to == -2);
    worker.state = WorkerState::kIdle;
    worker.lent_to = -1;
    threads += static_cast<int>(worker.config.cpus.size());
    worker.cv.notify_all();
  }
  Occupy(-threads);
  GrantLeases();
  state_cv_.notify_all();
}

std::vector<int> Scheduler::WorkerCpus(int worker) const {
  std::lock_guard<std::mutex> lock(mu_);
  return workers_.at(static_cast<size_t>(worker))->config.cpus;
}

absl::Status Scheduler::Reconfigure(Layout layout) {
  if (tls_scheduler == this) return absl::FailedPreconditionError("Reconfigure from a worker thread");
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
    s->spec.narrow = m < layout.narrow.size() ? std::move(layout.narrow[m]) : std::vector<std::shared_ptr<Session>>{};
    s->spec.wide = m < layout.wide.size() ? std::move(layout.wide[m]) : std::vector<std::shared_ptr<Session>>{};
    s->spec.narrow.resize(workers_.size());
    s->spec.wide.resize(groups_.size());
    s->modes->group_workers = groups_.empty() ? 1 : static_cast<int>(groups_[0].config.workers.size());
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
    if (tls_scheduler == this) return;  // inside a callback: the workers drain and stop by themselves
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
  for (auto& r : left) Answer(r, absl::UnavailableError("engine shut down before the request ran"));
}

ModelStats Scheduler::Stats(int model) const {
  ModelStats s;
  std::shared_ptr<const Slot> slot;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!FindSlot(model)) return s;
    slot = slots_[static_cast<size_t>(model)];
    s.queued = static_cast<int64_t>(slot->queue.size());
    s.running = slot->running;
  }
  // Counters and histograms are atomics: read without the scheduler's lock.
  s.requests = slot->requests;
  s.successes = slot->successes;
  s.failures = slot->failures;
  s.deadline_exceeded = slot->deadline_exceeded;
  s.cancelled = slot->cancelled;
  s.rejected = slot->rejected;
  s.batches = slot->batches;
  s.mean_batch_rows = s.batches > 0 ? static_cast<double>(slot->batch_rows) / static_cast<double>(s.batches) : 0;
  const Histogram::Snapshot queue = slot->queue_us.Take(), compute = slot->compute_us.Take(),
                            rows = slot->rows.Take();
  s.queue_p50_us = queue.Quantile(50);
  s.queue_p95_us = queue.Quantile(95);
  s.queue_p99_us = queue.Quantile(99);
  s.compute_p50_us = compute.Quantile(50);
  s.compute_p95_us = compute.Quantile(95);
  s.compute_p99_us = compute.Quantile(99);
  s.queue_seconds = ToDistribution(queue, MicrosecondBounds(), 1e-6);
  s.compute_seconds = ToDistribution(compute, MicrosecondBounds(), 1e-6);
  s.batch_rows = ToDistribution(rows, RowBounds(), 1);
  return s;
}

std::vector<WorkerStats> Scheduler::Workers() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<WorkerStats> out;
  for (const auto& w : workers_) {
    out.push_back({w->config.cpus, w->config.group, static_cast<double>(w->busy_us.load()) / 1e6,
                   w->runs.load(), w->tid.load(), w->state == WorkerState::kAssembling});
  }
  return out;
}

int Scheduler::busy_threads() const { return busy_now_.load(std::memory_order_relaxed); }
int Scheduler::max_busy_threads() const { return max_busy_threads_.load(std::memory_order_relaxed); }

int Scheduler::total_cpus() const {
  std::lock_guard<std::mutex> lock(mu_);
  int n = 0;
  for (const auto& w : workers_) n += static_cast<int>(w->config.cpus.size());
  return n;
}

std::vector<ModeEvent> Scheduler::ModeHistory() const {
  std::lock_guard<std::mutex> lock(mu_);
  return history_;
}

std::string Scheduler::DescribeModes() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  if (groups_.empty() || !options_.adaptive) return out;
  for (const auto& s : slots_) {
    if (!s || s->removing) continue;
    bool wide_any = false;
    for (const auto& p : s->spec.wide) wide_any |= p != nullptr;
    if (!wide_any) continue;
    for (const auto& [size, m] : s->modes->by_size) {
      if (size != s->modes->measured && m.narrow_runs + m.wide_runs == 0) continue;  // seen, not run yet
      const double narrow_loaded = m.NarrowLoaded();
      const std::string name = size < 0 ? s->spec.name
                               : absl::StrCat(s->spec.name, " ", m.shape.empty() ? "(measured size)" : m.shape);
      // The EWMAs are per measured-size request: shown at this size's own; a width this size has
      // not measured (alone, say, where every run of it had company, or only a warm-up ran) has no
      // figure.
      const double k = m.ToThisSize(size, s->spec.measured_elements);
      auto ms = [k](double v) { return v > 0 ? absl::StrFormat("%.2f ms", k * v) : std::string("not measured"); };
      auto rate = [k](double v) {
        return v > 0 ? absl::StrFormat("%.1f/s", 1000.0 / (k * v)) : std::string("not measured");
      };
      absl::StrAppend(&out, absl::StrFormat(
          "    %-24s alone: %-6s (wide %s, narrow %s)  under load: %-6s (wide %s, narrow %s)  runs: %d narrow, %d wide\n",
          name, m.wide_alone ? "wide" : "narrow", ms(m.wide_ms), ms(m.narrow_alone_ms), m.wide_loaded ? "wide" : "narrow",
          rate(m.WideLoaded()), rate(narrow_loaded / s->modes->group_workers), m.narrow_runs, m.wide_runs));
    }
  }
  return out;
}

void Scheduler::SetTracing(bool on) { tracing_.store(on); }

std::vector<TraceSpan> Scheduler::TakeTrace() {
  std::lock_guard<std::mutex> lock(trace_mu_);
  return std::exchange(trace_, {});
}

}  // namespace loom::sched
