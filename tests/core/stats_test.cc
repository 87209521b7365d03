#include "core/stats.h"

#include <gtest/gtest.h>

namespace loom {
namespace {

TEST(Stats, MedianOfAnEvenCountIsTheMeanOfTheTwoMiddleSamples) {
  EXPECT_EQ(Median({}), 0);
  EXPECT_EQ(Median({7}), 7);
  EXPECT_EQ(Median({3, 1, 2}), 2);
  // Two repetitions: neither one alone (nearest rank would quote the lower, 0.9).
  EXPECT_DOUBLE_EQ(Median({1.0, 0.9}), 0.95);
  EXPECT_DOUBLE_EQ(Median({4, 1, 3, 2}), 2.5);
  EXPECT_DOUBLE_EQ(Median({5, 5, 1, 9}), 5);
}

TEST(Stats, PercentilesAreNearestRank) {
  const std::vector<double> v = {10, 20, 30, 40};
  EXPECT_EQ(Percentile(v, 50), 20);
  EXPECT_EQ(Percentile(v, 75), 30);
  EXPECT_EQ(Percentile(v, 99), 40);
  EXPECT_EQ(Percentile(v, 0), 10);
  EXPECT_EQ(Percentile({}, 50), 0);
}

}  // namespace
}  // namespace loom
