#include "sched/batcher.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <vector>

namespace loom::sched {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

Tensor Rows(int64_t rows, int64_t width, float first) {
  Tensor t = Tensor::Allocate(DType::kFloat32, {rows, width});
  for (int64_t i = 0; i < rows * width; ++i) t.data_as<float>()[i] = first + static_cast<float>(i);
  return t;
}

TEST(Batcher, KeyIgnoresDimZeroOnly) {
  EXPECT_EQ(BatchKey({{"x", Rows(1, 4, 0)}}), BatchKey({{"x", Rows(7, 4, 0)}}));
  EXPECT_NE(BatchKey({{"x", Rows(1, 4, 0)}}), BatchKey({{"x", Rows(1, 5, 0)}}));
  EXPECT_NE(BatchKey({{"x", Rows(1, 4, 0)}}),
            BatchKey({{"x", Tensor::Allocate(DType::kInt64, {1, 4})}}));
}

TEST(Batcher, FlushesAtMaxBatchBeforeDelay) {
  BatchingConfig config{4, {}, microseconds(1000)};
  const auto t0 = Clock::now();
  EXPECT_FALSE(ShouldRunNow(config, 3, false, t0, t0, false));
  EXPECT_TRUE(ShouldRunNow(config, 4, false, t0, t0, false));
  EXPECT_TRUE(ShouldRunNow(config, 3, /*more_rows_would_not_fit=*/true, t0, t0, false));
}

TEST(Batcher, RunsAtPreferredSizeOrWhenTheDelayPasses) {
  BatchingConfig config{8, {2, 4}, microseconds(1000)};
  const auto t0 = Clock::now();
  EXPECT_TRUE(ShouldRunNow(config, 2, false, t0, t0, false));
  EXPECT_FALSE(ShouldRunNow(config, 3, false, t0, t0 + microseconds(999), false));
  EXPECT_TRUE(ShouldRunNow(config, 3, false, t0, t0 + microseconds(1000), false));
  EXPECT_TRUE(ShouldRunNow(config, 1, false, t0, t0, /*flush=*/true));
  EXPECT_TRUE(ShouldRunNow(BatchingConfig{1, {}, microseconds(1000)}, 1, false, t0, t0, false));
}

// ---- GatherBatch: which queued requests run together, and when -------------------------------

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
  q.Push(Queued(1, 3, t0));                    // width 3: waits for more rows
  q.Push(Queued(2, 5, t0 + microseconds(1)));  // width 5: 2 + 2 rows = full
  q.Push(Queued(2, 5, t0 + microseconds(2)));
  const auto pick =
      GatherBatch(q, BatchingConfig{4, {}, milliseconds(100)}, t0 + microseconds(3), false);
  ASSERT_TRUE(pick.ready);
  EXPECT_EQ(pick.rows, 4);
  EXPECT_EQ(pick.count, 2u);
  std::vector<std::unique_ptr<Request>> batch;
  q.Take(pick, batch);
  EXPECT_EQ(batch[0]->inputs[0].tensor.dim(1), 5);
  EXPECT_EQ(q.size(), 1u);
  const auto later =
      GatherBatch(q, BatchingConfig{4, {}, milliseconds(100)}, t0 + microseconds(3), false);
  EXPECT_FALSE(later.ready);
  EXPECT_EQ(later.wake, t0 + milliseconds(100));
}

TEST(GatherBatch, ADeadlineBehindTheHeadBringsTheWakeUpForward) {
  const TimePoint t0 = TimePoint() + std::chrono::hours(1);
  RequestQueue q;
  q.Push(Queued(1, 3, t0));
  q.Push(Queued(1, 3, t0, t0 + milliseconds(10)));
  const auto pick = GatherBatch(q, BatchingConfig{8, {}, milliseconds(100)}, t0, false);
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
  EXPECT_TRUE(GatherBatch(q, BatchingConfig{8, {2}, milliseconds(100)}, t0, false).ready);
  EXPECT_FALSE(GatherBatch(q, BatchingConfig{8, {4}, milliseconds(100)}, t0, false).ready);
  q.Push(Queued(3, 3, t0));  // 2 + 3 > 4: the first runs alone, now
  const auto pick = GatherBatch(q, BatchingConfig{4, {}, milliseconds(100)}, t0, false);
  ASSERT_TRUE(pick.ready);
  EXPECT_EQ(pick.rows, 2);
  EXPECT_TRUE(GatherBatch(q, BatchingConfig{8, {}, milliseconds(100)}, t0, /*flush=*/true).ready);
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

}  // namespace
}  // namespace loom::sched
