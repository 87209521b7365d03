// The scheduler on its own: fake sessions whose cost is fake time, and a FakeClock that moves only
// when a test says so. Every outcome here is decided by the order of events the test creates,
// never by how long something took: a test waits on futures (which the scheduler must resolve) and
// asserts on what cannot have happened yet (a batch waiting for time that has not passed).
#include "sched/scheduler.h"

#include <atomic>
#include <future>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>

namespace loom::sched {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;

ModelInfo AddInfo() {
  ModelInfo info;
  info.name = "fake";
  TensorInfo x{"x", DType::kFloat32, {Dim{-1, "batch"}, Dim{-1, "width"}}};
  TensorInfo y{"y", DType::kFloat32, {Dim{-1, "batch"}, Dim{-1, "width"}}};
  info.inputs = {x};
  info.outputs = {y};
  info.dynamic_batch = true;
  return info;
}

// y = x + 1. Each run advances the fake clock by `cost` (its "compute time"), records the rows,
// and can block on a gate or throw when told to.
class FakeSession final : public Session {
 public:
  FakeSession(FakeClock* clock, microseconds cost, std::string tag = "narrow")
      : info_(AddInfo()), clock_(clock), cost_(cost), tag_(std::move(tag)) {}

  const ModelInfo& info() const override { return info_; }
  Backend backend() const override { return Backend::kOnnxRuntime; }

  absl::StatusOr<NamedTensors> Run(const NamedTensors& inputs) override {
    std::optional<std::shared_future<void>> gate;  // read under the lock: Unblock() resets it
    microseconds cold{0};
    {
      std::lock_guard<std::mutex> lock(mu_);
      runs_.push_back(inputs[0].tensor.dim(0));
      if (shapes_seen_.insert(inputs[0].tensor.element_count()).second) cold = first_run_extra_;
      if (entered_) {
        entered_->set_value();
        entered_.reset();
      }
      gate = gate_;
    }
    if (gate) gate->wait();
    const float first = inputs[0].tensor.data_as<float>()[0];
    if (first == kThrow) throw std::runtime_error("backend exploded");
    if (first == kFail) return absl::InternalError("model 'fake': run failed on purpose");
    if (const microseconds cost = cost_.load(); cost.count() > 0) {
      clock_->Advance(cold + (per_element_ ? fixed_.load() + cost * inputs[0].tensor.element_count() : cost));
    }
    Tensor y = inputs[0].tensor.Clone();
    for (int64_t i = 0; i < y.element_count(); ++i) y.data_as<float>()[i] += 1;
    return NamedTensors{{"y", y}};
  }

  std::vector<int64_t> runs() const {
    std::lock_guard<std::mutex> lock(mu_);
    return runs_;
  }
  // The next run signals `entered` and then waits for the gate to open.
  std::future<void> BlockNextRun(std::shared_future<void> gate) {
    std::lock_guard<std::mutex> lock(mu_);
    entered_.emplace();
    gate_ = std::move(gate);
    return entered_->get_future();
  }
  void Unblock() {
    std::lock_guard<std::mutex> lock(mu_);
    gate_.reset();
  }
  void set_cost(microseconds cost) { cost_ = cost; }
  // From now on a run costs `fixed` plus `cost` per input element (a model with dynamic dims).
  void set_cost_per_element(microseconds cost, microseconds fixed = microseconds(0)) {
    per_element_ = true;
    fixed_ = fixed;
    cost_ = cost;
  }
  // From now on the first run at each input size costs `extra` more (a runtime planning a shape).
  void set_first_run_extra(microseconds extra) {
    std::lock_guard<std::mutex> lock(mu_);
    first_run_extra_ = extra;
  }
  const std::string& tag() const { return tag_; }

  static constexpr float kThrow = -1000, kFail = -2000;

 private:
  ModelInfo info_;
  FakeClock* clock_;
  std::atomic<microseconds> cost_;
  std::atomic<bool> per_element_{false};
  std::atomic<microseconds> fixed_{microseconds(0)};
  std::string tag_;
  mutable std::mutex mu_;
  std::vector<int64_t> runs_;
  std::set<int64_t> shapes_seen_;
  microseconds first_run_extra_{0};
  std::optional<std::promise<void>> entered_;
  std::optional<std::shared_future<void>> gate_;
};

Tensor Rows(int64_t rows, int64_t width, float value) {
  Tensor t = Tensor::Allocate(DType::kFloat32, {rows, width});
  for (int64_t i = 0; i < rows * width; ++i) t.data_as<float>()[i] = value;
  return t;
}

using Answer = std::future<absl::StatusOr<InferResult>>;

// A scheduler of `workers` single-core workers (one wide group if `group`), a FakeClock, and the
// helpers the tests share.
struct Harness {
  explicit Harness(int workers = 1, bool group = false, SchedulerOptions options = {}) {
    std::vector<WorkerConfig> configs;
    std::vector<GroupConfig> groups;
    GroupConfig g;
    for (int w = 0; w < workers; ++w) {
      configs.push_back({{w}, group ? 0 : -1});
      g.workers.push_back(w);
    }
    if (group) groups.push_back(g);
    options.clock = &clock;
    options.pin_workers = false;
    scheduler = std::make_shared<Scheduler>(std::move(configs), std::move(groups), options);
  }

  // A model served by every worker with fake narrow sessions (and a wide one per group).
  int Model(const std::string& name, BatchingConfig batching, int capacity = 1024,
            microseconds narrow_cost = microseconds(0), microseconds wide_cost = microseconds(0),
            bool wide = false, int64_t measured_elements = 0) {
    ModelSpec spec;
    spec.measured_elements = measured_elements;
    spec.name = name;
    spec.batching = batching;
    spec.capacity = capacity;
    for (size_t w = 0; w < scheduler->Workers().size(); ++w) {
      auto s = std::make_shared<FakeSession>(&clock, narrow_cost, "narrow");
      narrow.push_back(s);
      spec.narrow.push_back(s);
    }
    if (wide) {
      wide_session = std::make_shared<FakeSession>(&clock, wide_cost, "wide");
      spec.wide.push_back(wide_session);
      spec.narrow_ms = static_cast<double>(narrow_cost.count()) / 1000;
      spec.wide_ms = static_cast<double>(wide_cost.count()) / 1000;
    }
    return scheduler->AddModel(std::move(spec));
  }

  // Runs one row of `width` inline on the calling thread (TryRunInline: every worker idle, so the
  // request is alone) and returns the intra-op threads it ran with; 0, failing the test, if it
  // did not run.
  int RunInline(int model, int64_t width) {
    Request r;
    r.inputs = {{"x", Rows(1, width, 1)}};
    r.rows = 1;
    r.batch_key = BatchKey(r.inputs);
    r.deadline = TimePoint::max();
    auto answer = scheduler->TryRunInline(model, r);
    EXPECT_TRUE(answer.has_value() && answer->ok());
    return answer.has_value() && answer->ok() ? (*answer)->threads : 0;
  }

  // Enqueues rows of `width` filled with `value`; the answer arrives in the future.
  Answer Submit(int model, int64_t rows, int64_t width, float value = 1,
                TimePoint deadline = TimePoint::max(), bool block = false,
                std::shared_ptr<const std::atomic<bool>> cancelled = nullptr,
                absl::Status* refused = nullptr) {
    auto promise = std::make_shared<std::promise<absl::StatusOr<InferResult>>>();
    Answer answer = promise->get_future();
    auto request = std::make_unique<Request>();
    request->inputs = {{"x", Rows(rows, width, value)}};
    request->rows = rows;
    request->batch_key = BatchKey(request->inputs);
    request->deadline = deadline;
    request->cancelled = std::move(cancelled);
    request->done = [promise](absl::StatusOr<InferResult> r) { promise->set_value(std::move(r)); };
    absl::Status s = scheduler->Enqueue(model, request, block);
    if (!s.ok()) {
      if (refused) *refused = s;
      promise->set_value(s);
    }
    return answer;
  }

  int64_t TotalRuns() const {
    int64_t n = 0;
    for (const auto& s : narrow) n += static_cast<int64_t>(s->runs().size());
    if (wide_session) n += static_cast<int64_t>(wide_session->runs().size());
    return n;
  }

  FakeClock clock;
  std::shared_ptr<Scheduler> scheduler;
  std::vector<std::shared_ptr<FakeSession>> narrow;
  std::shared_ptr<FakeSession> wide_session;
};

bool Ready(Answer& a) { return a.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }

BatchingConfig Batching(int max, microseconds delay, std::vector<int> preferred = {}) {
  return BatchingConfig{max, std::move(preferred), delay};
}

// ---- GatherBatch: pure ------------------------------------------------------------------------

std::unique_ptr<Request> Queued(int64_t rows, int64_t width, TimePoint enqueued,
                                TimePoint deadline = TimePoint::max()) {
  auto r = std::make_unique<Request>();
  r->inputs = {{"x", Rows(rows, width, 0)}};
  r->rows = rows;
  r->batch_key = BatchKey(r->inputs);
  r->enqueued = enqueued;
  r->deadline = deadline;
  return r;
}

TEST(GatherBatch, ADelayedGroupDoesNotHoldBackAReadyOne) {
  const TimePoint t0 = TimePoint() + std::chrono::hours(1);
  RequestQueue q;
  q.Push(Queued(1, 3, t0));                     // width 3: waits for more rows
  q.Push(Queued(2, 5, t0 + microseconds(1)));  // width 5: 2 + 2 rows = full
  q.Push(Queued(2, 5, t0 + microseconds(2)));
  const auto pick = GatherBatch(q, Batching(4, milliseconds(100)), t0 + microseconds(3), false);
  ASSERT_TRUE(pick.ready);
  EXPECT_EQ(pick.rows, 4);
  EXPECT_EQ(pick.count, 2u);
  std::vector<std::unique_ptr<Request>> batch;
  q.Take(pick, batch);
  EXPECT_EQ(batch[0]->inputs[0].tensor.dim(1), 5);
  EXPECT_EQ(q.size(), 1u);
  const auto later = GatherBatch(q, Batching(4, milliseconds(100)), t0 + microseconds(3), false);
  EXPECT_FALSE(later.ready);
  EXPECT_EQ(later.wake, t0 + milliseconds(100));
}

TEST(GatherBatch, ADeadlineBehindTheHeadBringsTheWakeUpForward) {
  const TimePoint t0 = TimePoint() + std::chrono::hours(1);
  RequestQueue q;
  q.Push(Queued(1, 3, t0));
  q.Push(Queued(1, 3, t0, t0 + milliseconds(10)));
  const auto pick = GatherBatch(q, Batching(8, milliseconds(100)), t0, false);
  EXPECT_FALSE(pick.ready);
  EXPECT_EQ(pick.wake, t0 + milliseconds(10));
  std::vector<std::unique_ptr<Request>> expired;
  q.TakeExpired(t0 + milliseconds(10), expired);
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0]->deadline, t0 + milliseconds(10));
  EXPECT_EQ(q.size(), 1u);
}

TEST(GatherBatch, RunsAtAPreferredSizeAndWhenTheNextRequestWouldNotFit) {
  const TimePoint t0 = TimePoint() + std::chrono::hours(1);
  RequestQueue q;
  q.Push(Queued(2, 3, t0));
  EXPECT_TRUE(GatherBatch(q, Batching(8, milliseconds(100), {2}), t0, false).ready);
  EXPECT_FALSE(GatherBatch(q, Batching(8, milliseconds(100), {4}), t0, false).ready);
  q.Push(Queued(3, 3, t0));  // 2 + 3 > 4: the first runs alone, now
  const auto pick = GatherBatch(q, Batching(4, milliseconds(100)), t0, false);
  ASSERT_TRUE(pick.ready);
  EXPECT_EQ(pick.rows, 2);
  EXPECT_TRUE(GatherBatch(q, Batching(8, milliseconds(100)), t0, /*flush=*/true).ready);
}

TEST(GatherBatch, WithdrawnRequestsLeaveFromAnywhereInTheQueue) {
  const TimePoint t0 = TimePoint() + std::chrono::hours(1);
  RequestQueue q;
  auto flag = std::make_shared<std::atomic<bool>>(false);
  q.Push(Queued(1, 3, t0));
  auto r = Queued(1, 3, t0);
  r->cancelled = flag;
  q.Push(std::move(r));
  std::vector<std::unique_ptr<Request>> gone;
  q.TakeExpired(t0, gone);
  EXPECT_TRUE(gone.empty());
  flag->store(true);
  q.TakeExpired(t0, gone);
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_TRUE(gone[0]->Withdrawn());
  EXPECT_EQ(q.size(), 1u);
}

// ---- The scheduler, threads real, time fake ---------------------------------------------------

TEST(Scheduler, BatchesUpToMaxAndRunsWhenTheDelayPasses) {
  Harness h;
  const int m = h.Model("add", Batching(4, milliseconds(50)));
  h.scheduler->Start();
  std::vector<Answer> answers;
  for (int i = 0; i < 3; ++i) answers.push_back(h.Submit(m, 1, 2));
  EXPECT_EQ(h.TotalRuns(), 0) << "3 of 4 rows: the batch waits for its delay, and time stands still";
  h.clock.Advance(milliseconds(50));
  for (auto& a : answers) {
    auto r = a.get();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->batch_rows, 3);
    EXPECT_EQ(r->queue_us, 50'000);
    EXPECT_EQ(r->outputs[0].tensor.data_as<float>()[0], 2.0f);
  }
  EXPECT_EQ(h.narrow[0]->runs(), (std::vector<int64_t>{3}));
}

TEST(Scheduler, AFullBatchRunsWithoutWaitingForTheDelay) {
  Harness h;
  const int m = h.Model("add", Batching(4, std::chrono::hours(1)));
  h.scheduler->Start();
  std::vector<Answer> answers;
  for (int i = 0; i < 4; ++i) answers.push_back(h.Submit(m, 1, 2));
  for (auto& a : answers) EXPECT_EQ(a.get()->batch_rows, 4);
}

TEST(Scheduler, ADelayedBatchDoesNotHoldBackAnotherShapeThatIsReady) {
  Harness h;
  const int m = h.Model("add", Batching(4, milliseconds(100)));
  h.scheduler->Start();
  Answer waiting = h.Submit(m, 1, 3);  // alone: waits 100 ms for company
  Answer full = h.Submit(m, 4, 5);     // another width, a full batch
  auto r = full.get();                 // resolves with the clock standing still
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->batch_rows, 4);
  EXPECT_FALSE(Ready(waiting));
  h.clock.Advance(milliseconds(100));
  EXPECT_EQ(waiting.get()->batch_rows, 1);
}

TEST(Scheduler, ADeadlineBehindAWaitingRequestIsAnsweredAtItsDeadline) {
  Harness h;
  const int m = h.Model("add", Batching(8, milliseconds(100)));
  h.scheduler->Start();
  Answer head = h.Submit(m, 1, 3);
  Answer urgent = h.Submit(m, 1, 3, 1, h.clock.Now() + milliseconds(10));
  h.clock.Advance(milliseconds(10));
  auto r = urgent.get();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_EQ(r.status().message(), "request for model 'add': deadline passed while it waited in the queue (10000 us)");
  EXPECT_FALSE(Ready(head));
  h.clock.Advance(milliseconds(90));
  EXPECT_TRUE(head.get().ok());
  const ModelStats stats = h.scheduler->Stats(m);
  EXPECT_EQ(stats.deadline_exceeded, 1);
  EXPECT_EQ(stats.successes, 1);
  EXPECT_EQ(h.TotalRuns(), 1);
}

TEST(Scheduler, ACancelledRequestIsAnsweredWithoutRunning) {
  Harness h;
  const int m = h.Model("add", Batching(8, milliseconds(100)));
  h.scheduler->Start();
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  Answer a = h.Submit(m, 1, 3, 1, TimePoint::max(), false, cancel);
  cancel->store(true);
  h.clock.Advance(milliseconds(100));
  auto r = a.get();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(h.TotalRuns(), 0);
  EXPECT_EQ(h.scheduler->Stats(m).cancelled, 1);
}

TEST(Scheduler, BlockedSubmittersGetRoomOrTheirDeadline) {
  Harness h;
  const int m = h.Model("add", Batching(1, microseconds(0)), /*capacity=*/1);
  h.scheduler->Start();
  std::promise<void> open;
  std::future<void> entered = h.narrow[0]->BlockNextRun(open.get_future().share());
  Answer running = h.Submit(m, 1, 2);
  entered.get();                      // the worker holds the first request
  Answer queued = h.Submit(m, 1, 2);  // fills the queue (capacity 1)
  absl::Status refused;
  Answer full = h.Submit(m, 1, 2, 1, TimePoint::max(), false, nullptr, &refused);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(refused.message(), "model 'add' queue is full (capacity 1 requests)");
  // A blocking submitter with a deadline gives up at it; one without waits for room.
  std::promise<absl::Status> late_refusal;
  const TimePoint late_deadline = h.clock.Now() + milliseconds(5);
  std::thread late([&] {
    absl::Status s;
    h.Submit(m, 1, 2, 1, late_deadline, true, nullptr, &s);
    late_refusal.set_value(s);
  });
  std::promise<Answer> patient_answer;
  std::thread patient([&] { patient_answer.set_value(h.Submit(m, 1, 2, 1, TimePoint::max(), true)); });
  h.clock.Advance(milliseconds(5));
  EXPECT_EQ(late_refusal.get_future().get().code(), absl::StatusCode::kDeadlineExceeded);
  h.narrow[0]->Unblock();
  open.set_value();
  EXPECT_TRUE(running.get().ok());
  EXPECT_TRUE(queued.get().ok());
  Answer later = patient_answer.get_future().get();
  EXPECT_TRUE(later.get().ok());
  late.join();
  patient.join();
  const ModelStats stats = h.scheduler->Stats(m);
  EXPECT_EQ(stats.requests, 3);
  EXPECT_EQ(stats.rejected, 2);
}

TEST(Scheduler, AThrowingOrFailingBackendFailsOnlyItsOwnBatch) {
  Harness h;
  const int m = h.Model("add", Batching(1, microseconds(0)));
  h.scheduler->Start();
  auto thrown = h.Submit(m, 1, 2, FakeSession::kThrow).get();
  EXPECT_EQ(thrown.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(thrown.status().message(), "model 'add': backend exploded");
  auto failed = h.Submit(m, 1, 2, FakeSession::kFail).get();
  EXPECT_EQ(failed.status().message(), "model 'fake': run failed on purpose");
  auto fine = h.Submit(m, 1, 2).get();
  ASSERT_TRUE(fine.ok());
  const ModelStats stats = h.scheduler->Stats(m);
  EXPECT_EQ(stats.failures, 2);
  EXPECT_EQ(stats.successes, 1);
}

TEST(Scheduler, AThrowingCallbackIsDroppedAndTheWorkerGoesOn) {
  Harness h;
  const int m = h.Model("add", Batching(1, microseconds(0)));
  h.scheduler->Start();
  auto request = std::make_unique<Request>();
  request->inputs = {{"x", Rows(1, 2, 1)}};
  request->batch_key = BatchKey(request->inputs);
  std::promise<void> called;
  request->done = [&](absl::StatusOr<InferResult>) {
    called.set_value();
    throw std::runtime_error("careless caller");
  };
  ASSERT_TRUE(h.scheduler->Enqueue(m, request, false).ok());
  called.get_future().get();
  EXPECT_TRUE(h.Submit(m, 1, 2).get().ok());
}

TEST(Scheduler, ACallbackMayRunInlineAndShutDown) {
  Harness h;
  const int m = h.Model("add", Batching(1, microseconds(0)));
  h.scheduler->Start();
  std::promise<absl::StatusOr<InferResult>> nested;
  auto request = std::make_unique<Request>();
  request->inputs = {{"x", Rows(1, 2, 1)}};
  request->batch_key = BatchKey(request->inputs);
  request->done = [&](absl::StatusOr<InferResult>) {
    Request again;
    again.inputs = {{"x", Rows(1, 2, 5)}};
    again.batch_key = BatchKey(again.inputs);
    auto r = h.scheduler->TryRunInline(m, again);  // on this worker's own session: no deadlock
    h.scheduler->Shutdown();  // from a callback: stops accepting, returns without joining itself
    // Answered only after Shutdown() returned, so the refused submit below cannot race it.
    nested.set_value(r ? *r : absl::StatusOr<InferResult>(absl::InternalError("not run inline")));
  };
  ASSERT_TRUE(h.scheduler->Enqueue(m, request, false).ok());
  auto r = nested.get_future().get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->outputs[0].tensor.data_as<float>()[0], 6.0f);
  absl::Status refused;
  h.Submit(m, 1, 2, 1, TimePoint::max(), false, nullptr, &refused);
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable);
  h.scheduler->Shutdown();  // from here: joins the workers
}

TEST(Scheduler, ShutdownRacingSubmittersAnswersEveryAcceptedRequestExactlyOnce) {
  for (int workers : {1, 2, 3}) {
    SCOPED_TRACE(workers);
    Harness h(workers);
    const int m = h.Model("add", Batching(4, microseconds(0)));
    h.scheduler->Start();
    constexpr int kThreads = 4, kEach = 200;
    std::atomic<int> accepted{0}, answered{0}, twice{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < kEach; ++i) {
          auto request = std::make_unique<Request>();
          request->inputs = {{"x", Rows(1, 2, 1)}};
          request->batch_key = BatchKey(request->inputs);
          auto seen = std::make_shared<std::atomic<int>>(0);
          request->done = [&, seen](absl::StatusOr<InferResult>) {
            if (seen->fetch_add(1) > 0) ++twice;
            ++answered;
          };
          if (h.scheduler->Enqueue(m, request, false).ok()) ++accepted;
        }
      });
    }
    h.scheduler->Shutdown();
    for (auto& t : threads) t.join();
    EXPECT_EQ(answered.load(), accepted.load());
    EXPECT_EQ(twice.load(), 0);
    const ModelStats stats = h.scheduler->Stats(m);
    EXPECT_EQ(stats.requests, accepted.load());
    EXPECT_EQ(stats.successes + stats.failures, accepted.load());
    EXPECT_EQ(stats.rejected, kThreads * kEach - accepted.load());
  }
}

TEST(Scheduler, ALeasedWorkerTakesNoWorkUntilReleased) {
  Harness h;
  const int m = h.Model("add", Batching(1, microseconds(0)));
  h.scheduler->Start();
  auto lease = h.scheduler->AcquireLease();
  ASSERT_TRUE(lease.ok());
  EXPECT_EQ(h.scheduler->busy_threads(), 1);
  Answer a = h.Submit(m, 1, 2);
  EXPECT_FALSE(Ready(a)) << "the only worker's core is lent";
  EXPECT_EQ(h.TotalRuns(), 0);
  h.scheduler->ReleaseLease(*lease);
  EXPECT_TRUE(a.get().ok());
  EXPECT_LE(h.scheduler->max_busy_threads(), 1);
}

TEST(Scheduler, ALoneRequestRunsWideAndAFullQueueNarrow) {
  // Wide: 5 ms on 2 cores; narrow: 8 ms on 1. Alone, wide is faster; under load two narrow runs
  // (250/s) beat one wide (200/s). The two workers' runs advance one fake clock, so a run's
  // measured time can include the other's: here the choice stays on the plan's figures (no
  // exploring, no switch), and other tests check that measurements move it.
  SchedulerOptions options;
  options.explore_every = 0;
  options.min_switch_interval = std::chrono::hours(24);
  Harness h(2, /*group=*/true, options);
  const int m = h.Model("add", Batching(1, microseconds(0)), 1024, milliseconds(8), milliseconds(5), true);
  h.scheduler->Start();
  auto alone = h.Submit(m, 1, 2).get();
  ASSERT_TRUE(alone.ok());
  EXPECT_EQ(alone->threads, 2);
  EXPECT_EQ(h.wide_session->runs().size(), 1u);
  // Under load: the queue fills while both workers are lent, then they find 8 requests waiting.
  ASSERT_TRUE(h.scheduler->AcquireWorkers({0, 1}).ok());
  std::vector<Answer> answers;
  for (int i = 0; i < 8; ++i) answers.push_back(h.Submit(m, 1, 2));
  h.scheduler->ReleaseWorkers({0, 1});
  int narrow_runs = 0;
  for (auto& a : answers) {
    auto r = a.get();
    ASSERT_TRUE(r.ok());
    narrow_runs += r->threads == 1;
  }
  EXPECT_GE(narrow_runs, 6) << "a full queue runs narrow (at most the last few find the group idle)";
  EXPECT_LE(h.scheduler->max_busy_threads(), 2);
}

TEST(Scheduler, AWideRunUnderLoadIsChargedTheWaitForItsPartners) {
  // Wide: 5 ms on 2 cores, narrow 20 ms on 1: under load wide is preferred (200/s per group
  // against 100/s). A wide run under load first waits for its partner to end its run, here 30 ms
  // of the fake clock, while its leader's core idles: per group that is 15 ms more per run, and
  // the figure wide under load is measured at is 50/s, not 200/s.
  SchedulerOptions options;
  options.explore_every = 0;
  Harness h(2, /*group=*/true, options);
  const int add = h.Model("add", Batching(1, microseconds(0)), 1024, milliseconds(20), milliseconds(5), true);
  const int other = h.Model("other", Batching(1, microseconds(0)));  // narrow only, free
  h.scheduler->Start();
  // One worker runs `other`, held at a gate, so that `add` finds its partner busy: under load.
  std::promise<void> open;
  std::shared_future<void> gate = open.get_future().share();
  std::future<void> entered[2] = {h.narrow[2]->BlockNextRun(gate), h.narrow[3]->BlockNextRun(gate)};
  Answer held = h.Submit(other, 1, 2);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  int busy = -1;
  while (busy < 0 && std::chrono::steady_clock::now() < until) {
    for (int w = 0; w < 2; ++w) {
      if (entered[w].wait_for(std::chrono::milliseconds(1)) == std::future_status::ready) busy = w;
    }
  }
  ASSERT_GE(busy, 0) << "no worker ran the gated request";
  const int leader = 1 - busy;
  Answer wide = h.Submit(add, 1, 2);
  while (!h.scheduler->Workers()[static_cast<size_t>(leader)].assembling && std::chrono::steady_clock::now() < until) {
    std::this_thread::yield();
  }
  ASSERT_TRUE(h.scheduler->Workers()[static_cast<size_t>(leader)].assembling) << "the wide run never waited";
  h.clock.Advance(milliseconds(30));  // the partner's run goes on meanwhile
  open.set_value();
  ASSERT_TRUE(held.get().ok());
  auto answer = wide.get();
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->threads, 2);
  for (auto& s : h.narrow) s->Unblock();
  const std::string modes = h.scheduler->DescribeModes();
  EXPECT_NE(modes.find("under load: wide   (wide 50.0/s, narrow 100.0/s)"), std::string::npos) << modes;
}

TEST(Scheduler, AChoiceFollowsTheMeasuredRunsWithoutThrashing) {
  SchedulerOptions options;
  options.explore_every = 4;  // every 4th decision tries the other width
  options.min_switch_interval = milliseconds(100);
  Harness h(2, /*group=*/true, options);
  const int m = h.Model("add", Batching(1, microseconds(0)), 1024, milliseconds(8), milliseconds(5), true);
  h.scheduler->Start();
  // One client, inline: alone every time (a queued request could find the last run's worker
  // still answering, under load). Wide is preferred until wide runs become slow (a core taken by
  // something else): then narrow, after the measurements say so and the interval has passed.
  for (int i = 0; i < 8; ++i) ASSERT_GT(h.RunInline(m, 2), 0);
  EXPECT_TRUE(h.scheduler->ModeHistory().empty()) << "no change while wide stays faster";
  h.wide_session->set_cost(milliseconds(20));
  int wide_after = 0;
  for (int i = 0; i < 40; ++i) {
    const int threads = h.RunInline(m, 2);
    ASSERT_GT(threads, 0);
    if (i >= 30) wide_after += threads == 2;
  }
  const auto history = h.scheduler->ModeHistory();
  ASSERT_EQ(history.size(), 1u) << "one switch, no thrash";
  EXPECT_NE(history[0].text.find("alone: now narrow"), std::string::npos) << history[0].text;
  EXPECT_LE(wide_after, 3) << "only exploration still tries wide";
  EXPECT_NE(h.scheduler->DescribeModes().find("alone: narrow"), std::string::npos) << h.scheduler->DescribeModes();
}

// A model with dynamic dims: requests 16x larger than the measured one. Wide is faster at every
// size (2.5 ms per element against 4 narrow); compared per row, the large wide runs would look
// 10x slower than the small narrow measurement and the choice would flip to narrow. Scaled to
// the measured size they compare like with like, and wide stays.
TEST(Scheduler, RunsOfAnotherSizeAreComparedAtTheMeasuredSize) {
  // Measured at 2 elements (narrow 8 ms, wide 5 ms); requests of 3 elements, the same size class
  // (a power of 2 apart at most) and 1.5x the work: 12 ms narrow, 7.5 ms wide.
  for (const int64_t measured_elements : {int64_t{2}, int64_t{0}}) {
    SchedulerOptions options;
    options.explore_every = 4;
    options.min_switch_interval = milliseconds(100);
    Harness h(2, /*group=*/true, options);
    const int m = h.Model("dyn", Batching(1, microseconds(0)), 1024, milliseconds(8), milliseconds(5), true,
                          measured_elements);
    for (auto& s : h.narrow) s->set_cost_per_element(milliseconds(4));
    h.wide_session->set_cost_per_element(microseconds(2500));
    h.scheduler->Start();
    // Without sizes the runs are compared per row, at a scale the priors were not measured at:
    // 32-element rows make the mistake plain (narrow 128 ms, wide 80 ms against priors of 8 and 5).
    const int64_t width = measured_elements > 0 ? 3 : 32;
    int wide = 0;
    for (int i = 0; i < 40; ++i) {
      auto r = h.Submit(m, 1, width).get();
      ASSERT_TRUE(r.ok());
      wide += r->threads == 2;
    }
    const auto history = h.scheduler->ModeHistory();
    if (measured_elements > 0) {
      EXPECT_TRUE(history.empty()) << history[0].text;
      // (How many ran wide depends on how many requests found both workers idle, which the
      // threads decide: the choice itself is what is checked, on the line of the size that ran.)
      const std::string modes = h.scheduler->DescribeModes();
      const size_t at = modes.find("dyn [1,3] ");
      ASSERT_NE(at, std::string::npos) << "the runs landed on the measured size: " << modes;
      EXPECT_NE(modes.substr(at, modes.find('\n', at) - at).find("alone: wide"), std::string::npos) << modes;
      EXPECT_GE(wide, 1);
    } else {
      ASSERT_FALSE(history.empty()) << "per row, the larger runs are mistaken for slower ones";
      EXPECT_NE(history[0].text.find("alone: now narrow"), std::string::npos) << history[0].text;
    }
  }
}

TEST(Scheduler, EachSizeOfRequestGetsTheWidthMeasuredAtThatSize) {
  // Wide has a fixed 6 ms of overhead and half the cost per element: at the measured size (2
  // elements) it is slower, 8 ms against 4; at 64 elements it is faster, 70 ms against 128. One
  // choice per model, scaled by elements, would keep the large requests narrow.
  SchedulerOptions options;
  options.explore_every = 1000;  // only the first sight of a size explores (0 would turn it off too)
  options.min_switch_interval = milliseconds(0);
  Harness h(2, /*group=*/true, options);
  const int m = h.Model("det", Batching(1, microseconds(0)), 1024, milliseconds(4), milliseconds(8), true,
                        /*measured_elements=*/2);
  for (auto& s : h.narrow) s->set_cost_per_element(milliseconds(2));
  h.wide_session->set_cost_per_element(milliseconds(1), milliseconds(6));
  h.scheduler->Start();
  // Inline runs on the caller's thread: the workers never get work, so every request finds them
  // all idle (alone), and the order of the choices is fixed.
  auto run = [&](int64_t width) { return h.RunInline(m, width); };
  std::vector<int> large, small;
  for (int i = 0; i < 8; ++i) large.push_back(run(64));
  for (int i = 0; i < 4; ++i) small.push_back(run(2));
  // First sight of 64: the measured size's choice (narrow) twice, then the other width twice; then
  // its own runs decide: wide.
  EXPECT_EQ(large, (std::vector<int>{1, 1, 2, 2, 2, 2, 2, 2}));
  EXPECT_EQ(small, (std::vector<int>{1, 1, 1, 1})) << "the measured size keeps its own choice";
  const auto history = h.scheduler->ModeHistory();
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].text.find("alone: now wide"), 0u) << history[0].text;
  EXPECT_NE(history[0].text.find("at [1,64]"), std::string::npos) << history[0].text;
  EXPECT_NE(history[0].text.find("(wide 70.00 ms vs narrow 128.00 ms per request"), std::string::npos)
      << "the switch quotes its figures at its own size: " << history[0].text;
  // The plan shows each size's figures at that size.
  const std::string modes = h.scheduler->DescribeModes();
  auto line = [&](const std::string& start) {
    const size_t at = modes.find(start);
    return at == std::string::npos ? std::string() : modes.substr(at, modes.find('\n', at) - at);
  };
  EXPECT_NE(line("det [1,64] ").find("alone: wide   (wide 70.00 ms, narrow 128.00 ms)"), std::string::npos) << modes;
  EXPECT_NE(line("det [1,2] ").find("alone: narrow (wide 8.00 ms, narrow 4.00 ms)"), std::string::npos) << modes;
}

TEST(Scheduler, ASizeNextToTheMeasuredOneIsASizeOfItsOwn) {
  // The plan measured 8 elements, where narrow wins (16 ms against 18: wide has 10 ms of overhead
  // and half the cost per element); at 15 elements, in the same power of 2, wide wins (25 ms
  // against 30). The measured figures are for 8 elements only: 15 goes through first sight.
  SchedulerOptions options;
  options.explore_every = 1000;
  options.min_switch_interval = milliseconds(0);
  Harness h(2, /*group=*/true, options);
  const int m = h.Model("det", Batching(1, microseconds(0)), 1024, milliseconds(16), milliseconds(18), true,
                        /*measured_elements=*/8);
  for (auto& s : h.narrow) s->set_cost_per_element(milliseconds(2));
  h.wide_session->set_cost_per_element(milliseconds(1), milliseconds(10));
  h.scheduler->Start();
  auto run = [&](int64_t width) { return h.RunInline(m, width); };
  std::vector<int> near, measured;
  for (int i = 0; i < 6; ++i) near.push_back(run(15));
  for (int i = 0; i < 4; ++i) measured.push_back(run(8));
  EXPECT_EQ(near, (std::vector<int>{1, 1, 2, 2, 2, 2})) << "15 elements learn that wide pays there";
  EXPECT_EQ(measured, (std::vector<int>{1, 1, 1, 1})) << "the measured size keeps the plan's choice";
  const auto history = h.scheduler->ModeHistory();
  ASSERT_EQ(history.size(), 1u);
  EXPECT_NE(history[0].text.find("alone: now wide (wide 25.00 ms vs narrow 30.00 ms"), std::string::npos)
      << history[0].text;
  EXPECT_NE(history[0].text.find("at [1,15]"), std::string::npos) << history[0].text;
}

TEST(Scheduler, WhenThePreferredWidthRunsSlowerThanTheProbeSaidTheOtherIsTriedAtOnce) {
  // The probe said narrow 4 ms, wide 8: narrow. The runs of this very size take 20 ms narrow (a
  // cold cache, a busier machine), so the probe's wide figure, never run since, now looks better:
  // wide runs at once (not in `explore_every` runs), measures 6 ms, and the choice moves to wide.
  SchedulerOptions options;
  options.explore_every = 1000;
  options.min_switch_interval = milliseconds(0);
  Harness h(2, /*group=*/true, options);
  const int m = h.Model("det", Batching(1, microseconds(0)), 1024, milliseconds(4), milliseconds(8), true,
                        /*measured_elements=*/2);
  for (auto& s : h.narrow) s->set_cost_per_element(milliseconds(10));
  h.wide_session->set_cost_per_element(milliseconds(1), milliseconds(4));
  h.scheduler->Start();
  std::vector<int> widths;
  for (int i = 0; i < 6; ++i) widths.push_back(h.RunInline(m, 2));
  // The EWMA of narrow passes the probe's wide figure (8 ms) past the margin on its second run.
  EXPECT_EQ(widths, (std::vector<int>{1, 1, 2, 2, 2, 2}));
  const auto history = h.scheduler->ModeHistory();
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].text.find("alone: now wide"), 0u) << history[0].text;
}

TEST(Scheduler, ASessionsFirstRunAtAShapeIsAWarmUpNotAMeasurement) {
  // As EachSizeOfRequestGetsTheWidthMeasuredAtThatSize, but the wide session's first run at a
  // shape costs 200 ms more (a runtime planning it). Averaged in, that run would keep 64 elements
  // narrow (230 ms against 128 after two runs); as a warm-up, the second run decides: 70 ms, wide.
  SchedulerOptions options;
  options.explore_every = 1000;
  options.min_switch_interval = milliseconds(0);
  Harness h(2, /*group=*/true, options);
  const int m = h.Model("det", Batching(1, microseconds(0)), 1024, milliseconds(4), milliseconds(8), true,
                        /*measured_elements=*/2);
  for (auto& s : h.narrow) s->set_cost_per_element(milliseconds(2));
  h.wide_session->set_cost_per_element(milliseconds(1), milliseconds(6));
  h.wide_session->set_first_run_extra(milliseconds(200));
  h.scheduler->Start();
  std::vector<int> widths;
  for (int i = 0; i < 8; ++i) widths.push_back(h.RunInline(m, 64));
  EXPECT_EQ(widths, (std::vector<int>{1, 1, 2, 2, 2, 2, 2, 2}));
  const auto history = h.scheduler->ModeHistory();
  ASSERT_EQ(history.size(), 1u);
  EXPECT_NE(history[0].text.find("alone: now wide (wide 70.00 ms vs narrow 128.00 ms"), std::string::npos)
      << history[0].text;
  // 65 elements: the same size class, a shape the session has not run: its first run (271 ms) is
  // a warm-up too, and the size's wide figure stays what the warm runs measured.
  EXPECT_EQ(h.RunInline(m, 65), 2);
  const std::string modes = h.scheduler->DescribeModes();
  EXPECT_NE(modes.find("alone: wide   (wide 70.00 ms, narrow 128.00 ms)"), std::string::npos) << modes;
}

TEST(Scheduler, RowsBatchedTogetherAreSizedPerRow) {
  // A model whose only dynamic dim is the batch: requests of 1, 2 and 4 rows are one size, the
  // measured one, whatever the batch (no first sight, no second choice).
  SchedulerOptions options;
  Harness h(2, /*group=*/true, options);
  const int m = h.Model("fixed", Batching(1, microseconds(0)), 1024, milliseconds(4), milliseconds(8), true,
                        /*measured_elements=*/2);
  h.scheduler->Start();
  for (const int64_t rows : {1, 2, 4, 1, 4}) ASSERT_TRUE(h.Submit(m, rows, 2).get().ok());
  const std::string modes = h.scheduler->DescribeModes();
  EXPECT_NE(modes.find("fixed [1,2] "), std::string::npos) << modes;
  EXPECT_EQ(modes.find("fixed", modes.find("fixed") + 1), std::string::npos) << "one line: " << modes;
}

TEST(Scheduler, WithExploringOffASizeFirstSeenKeepsTheMeasuredSizesChoice) {
  SchedulerOptions options;
  options.explore_every = 0;
  Harness h(2, /*group=*/true, options);
  const int m = h.Model("det", Batching(1, microseconds(0)), 1024, milliseconds(4), milliseconds(8), true,
                        /*measured_elements=*/2);
  h.scheduler->Start();
  for (int i = 0; i < 8; ++i) {
    auto r = h.Submit(m, 1, 64).get();
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->threads, 1) << "run " << i << ": narrow, as measured, never tried wide";
  }
}

TEST(Scheduler, ExploringAMuchWorseWidthHappensLessOften) {
  SchedulerOptions options;
  options.explore_every = 4;
  Harness h(2, /*group=*/true, options);
  // Wide measured 4x slower than narrow for a lone request: trying it every 4th decision would
  // run 16 of 64 requests wide; it is tried 4 x 4 = 16 decisions after the last try instead (the
  // 16th, then 32 later with the back-off). (A request can also count as under load — the
  // previous run's worker is still delivering its answer — where wide costs 2 workers x 20 ms
  // against 5 ms, and is tried at the 32nd: at least 1 and at most 4 explorations either way,
  // never 16.)
  const int m = h.Model("add", Batching(1, microseconds(0)), 1024, milliseconds(5), milliseconds(20), true);
  h.scheduler->Start();
  int wide = 0;
  for (int i = 0; i < 64; ++i) {
    auto r = h.Submit(m, 1, 2).get();
    ASSERT_TRUE(r.ok());
    wide += r->threads == 2;
  }
  EXPECT_GE(wide, 1) << "exploration goes on";
  EXPECT_LE(wide, 4) << "16 (or 32) decisions apart at least, not every 4th";
  EXPECT_TRUE(h.scheduler->ModeHistory().empty()) << "exploring never switched the choice";
}

TEST(Scheduler, ExploringBacksOffWhileTheChoiceHoldsAndStartsOverOnASwitch) {
  // Narrow and wide cost the same (4 ms) at the measured size: narrow stays (a switch needs a 5 %
  // margin), and every try of wide confirms it. Each try doubles the interval to the next: the
  // 4th, 12th and 28th decisions try wide, not every 4th.
  SchedulerOptions options;
  options.explore_every = 4;
  options.min_switch_interval = milliseconds(0);
  Harness h(2, /*group=*/true, options);
  const int m = h.Model("add", Batching(1, microseconds(0)), 1024, milliseconds(4), milliseconds(4), true,
                        /*measured_elements=*/2);
  h.scheduler->Start();
  std::vector<int> tried;  // the decisions (1-based) that ran wide
  for (int i = 1; i <= 40; ++i) {
    if (h.RunInline(m, 2) == 2) tried.push_back(i);
  }
  EXPECT_EQ(tried, (std::vector<int>{4, 12, 28})) << "tries at intervals of 4, 8, 16";
  EXPECT_TRUE(h.scheduler->ModeHistory().empty());
  // Wide becomes 4x faster. The next try, 32 decisions after the last (the 60th), measures it,
  // and the choice switches to wide; the interval starts over, so narrow, now the other width,
  // is tried again within a few decisions (at the backed-off pace, not before the 60+4x16th).
  h.wide_session->set_cost(milliseconds(1));
  std::vector<int> narrow;  // the decisions that ran narrow
  for (int i = 41; i <= 100; ++i) {
    if (h.RunInline(m, 2) == 1) narrow.push_back(i);
  }
  const auto history = h.scheduler->ModeHistory();
  ASSERT_FALSE(history.empty());
  EXPECT_EQ(history[0].text.find("alone: now wide"), 0u) << history[0].text;
  ASSERT_FALSE(narrow.empty());
  EXPECT_EQ(narrow.size() >= 19 ? narrow[18] : 0, 59) << "narrow up to the 59th decision, wide tried at the 60th";
  std::vector<int> after(narrow.begin() + std::min<size_t>(19, narrow.size()), narrow.end());
  ASSERT_FALSE(after.empty()) << "narrow is tried again after the switch";
  // (4 decisions, times how much worse narrow measured: wide's average falls from 3.4 ms towards
  // 1, against narrow's 4: the 74th decision. Without the start-over: not before the 124th.)
  EXPECT_EQ(after, (std::vector<int>{74})) << "at the start-over pace";
}

TEST(Scheduler, WorkQueuedWhileAnInlineRunHoldsTheWorkerRunsWhenItEnds) {
  Harness h(1);
  const int m = h.Model("add", Batching(1, microseconds(0)));
  h.scheduler->Start();
  ASSERT_TRUE(h.Submit(m, 1, 2).get().ok());  // the worker then goes back to waiting for work
  std::promise<void> open;
  std::future<void> entered = h.narrow[0]->BlockNextRun(open.get_future().share());
  std::thread caller([&] {
    Request r;
    r.inputs = {{"x", Rows(1, 2, 1)}};
    r.rows = 1;
    r.batch_key = BatchKey(r.inputs);
    r.deadline = TimePoint::max();
    // Not inline while the worker is still busy delivering the first answer: try until idle.
    auto answer = h.scheduler->TryRunInline(m, r);
    while (!answer.has_value()) {
      std::this_thread::yield();
      answer = h.scheduler->TryRunInline(m, r);
    }
    EXPECT_TRUE(answer->ok());
  });
  entered.get();                 // the inline run holds (claims) the only worker
  Answer queued = h.Submit(m, 1, 2);  // Enqueue wakes idle workers only: this one is claimed
  h.narrow[0]->Unblock();
  open.set_value();
  caller.join();
  // Releasing the claim must wake the worker for it (a lost wake-up hangs here).
  EXPECT_TRUE(queued.get().ok());
}

TEST(Scheduler, RemovingAModelDrainsItsAcceptedRequests) {
  Harness h;
  const int a = h.Model("a", Batching(8, milliseconds(100)));
  const int b = h.Model("b", Batching(1, microseconds(0)));
  h.scheduler->Start();
  std::vector<Answer> answers;
  for (int i = 0; i < 3; ++i) answers.push_back(h.Submit(a, 1, 2));
  std::thread remover([&] { EXPECT_TRUE(h.scheduler->RemoveModel(a).ok()); });
  for (auto& x : answers) EXPECT_TRUE(x.get().ok()) << "drained (flushed), not dropped";
  remover.join();
  absl::Status refused;
  h.Submit(a, 1, 2, 1, TimePoint::max(), false, nullptr, &refused);
  EXPECT_EQ(refused.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(h.Submit(b, 1, 2).get().ok()) << "the other model goes on";
}

TEST(Scheduler, ReconfiguringKeepsEveryQueuedRequest) {
  Harness h;
  const int m = h.Model("add", Batching(8, milliseconds(100)));
  h.scheduler->Start();
  std::vector<Answer> answers;
  for (int i = 0; i < 3; ++i) answers.push_back(h.Submit(m, 1, 2));
  Scheduler::Layout layout;
  layout.workers = {{{0}, -1}, {{1}, -1}};
  auto s0 = std::make_shared<FakeSession>(&h.clock, microseconds(0));
  auto s1 = std::make_shared<FakeSession>(&h.clock, microseconds(0));
  layout.narrow = {{s0, s1}};
  ASSERT_TRUE(h.scheduler->Reconfigure(std::move(layout)).ok());
  EXPECT_EQ(h.scheduler->Workers().size(), 2u);
  h.clock.Advance(milliseconds(100));
  for (auto& a : answers) EXPECT_TRUE(a.get().ok());
  EXPECT_EQ(s0->runs().size() + s1->runs().size(), 1u);
  EXPECT_TRUE(h.narrow[0]->runs().empty());
}

}  // namespace
}  // namespace loom::sched
