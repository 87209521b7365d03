#include "sched/batcher.h"

#include <gtest/gtest.h>

namespace loom::sched {
namespace {

using std::chrono::microseconds;
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

TEST(Batcher, ConcatThenSplitGivesEachPartItsOwnRows) {
  NamedTensors a = {{"x", Rows(1, 3, 0)}}, b = {{"x", Rows(2, 3, 100)}}, c = {{"x", Rows(3, 3, 200)}};
  NamedTensors batch = ConcatRows({&a, &b, &c});
  ASSERT_EQ(batch[0].tensor.Describe(), "[6,3] f32");
  EXPECT_EQ(batch[0].tensor.data_as<float>()[3], 100.0f);
  EXPECT_EQ(batch[0].tensor.data_as<float>()[9], 200.0f);
  auto parts = SplitRows("m", batch, {1, 2, 3});
  ASSERT_TRUE(parts.ok());
  ASSERT_EQ(parts->size(), 3u);
  EXPECT_EQ((*parts)[1][0].tensor.Describe(), "[2,3] f32");
  EXPECT_EQ((*parts)[1][0].tensor.data_as<float>()[5], 105.0f);
  EXPECT_EQ((*parts)[2][0].tensor.data_as<float>()[0], 200.0f);
}

TEST(Batcher, SingleRequestIsPassedThroughWithoutCopy) {
  NamedTensors a = {{"x", Rows(2, 3, 0)}};
  NamedTensors batch = ConcatRows({&a});
  EXPECT_EQ(batch[0].tensor.data(), a[0].tensor.data());
}

TEST(Batcher, SplitRefusesOutputsWhoseDimZeroIsNotTheBatch) {
  NamedTensors outputs = {{"y", Rows(1, 3, 0)}};
  auto parts = SplitRows("pooled", outputs, {2, 1});
  ASSERT_FALSE(parts.ok());
  EXPECT_EQ(parts.status().message(),
            "model 'pooled' output 'y' is [1,3] f32 for a batch of 3 rows: its dim 0 does not follow "
            "the batch, so the batch cannot be split (set max_batch_size: 1 for this model)");
}

}  // namespace
}  // namespace loom::sched
