// The scheduler's queues and workers: batching by delay and size, deadlines and cancellation,
// full queues, failing backends and callbacks, shutdown, leases, inline runs, removal and
// reconfiguration. Fake sessions and a fake clock (scheduler_harness.h): outcomes follow from the
// order of events, never from how long something took.
#include "sched/scheduler.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

#include "tests/sched/scheduler_harness.h"

namespace loom::sched {
namespace {

// ---- The scheduler, threads real, time fake ---------------------------------------------------

TEST(Scheduler, BatchesUpToMaxAndRunsWhenTheDelayPasses) {
  Harness h;
  const int m = h.Model("add", Batching(4, milliseconds(50)));
  h.scheduler->Start();
  std::vector<Answer> answers;
  for (int i = 0; i < 3; ++i) answers.push_back(h.Submit(m, 1, 2));
  h.Settle();  // the worker has seen the three and waits
  EXPECT_EQ(h.TotalRuns(), 0)
      << "3 of 4 rows: the batch waits for its delay, and time stands still";
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
  h.Settle();  // the worker has seen the waiting request since, and left it waiting
  EXPECT_FALSE(Ready(waiting));
  EXPECT_EQ(h.narrow[0]->runs(), (std::vector<int64_t>{4}));
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
  EXPECT_EQ(r.status().message(),
            "request for model 'add': deadline passed while it waited in the queue (10000 us)");
  h.Settle();  // the worker has looked at the head since, and left it waiting for its delay
  EXPECT_FALSE(Ready(head));
  EXPECT_EQ(h.TotalRuns(), 0);
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
  std::thread patient(
      [&] { patient_answer.set_value(h.Submit(m, 1, 2, 1, TimePoint::max(), true)); });
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
  h.Settle();  // the worker has been woken since the request came, and went back to sleep
  EXPECT_FALSE(Ready(a)) << "the only worker's core is lent";
  EXPECT_EQ(h.TotalRuns(), 0);
  h.scheduler->ReleaseLease(*lease);
  EXPECT_TRUE(a.get().ok());
  EXPECT_LE(h.scheduler->max_busy_threads(), 1);
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
  entered.get();                      // the inline run holds (claims) the only worker
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
