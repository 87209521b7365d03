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

}  // namespace
}  // namespace loom::sched
