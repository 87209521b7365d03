#include "core/histogram.h"

#include <gtest/gtest.h>

#include <random>
#include <thread>

#include "core/stats.h"

namespace loom {
namespace {

TEST(Histogram, BucketsAreExactBelowSixteenAndTightAbove) {
  for (uint64_t v = 0; v < 16; ++v) {
    const int b = Histogram::BucketOf(v);
    EXPECT_EQ(Histogram::BucketLower(b), v);
    EXPECT_EQ(Histogram::BucketUpper(b), v + 1);
  }
  for (uint64_t v : {16ull, 17ull, 100ull, 1000ull, 123456ull, 1ull << 40, ~0ull}) {
    const int b = Histogram::BucketOf(v);
    ASSERT_LT(b, Histogram::kBuckets);
    EXPECT_LE(Histogram::BucketLower(b), v);
    if (b + 1 < Histogram::kBuckets) {
      EXPECT_GT(Histogram::BucketUpper(b), v);
      EXPECT_LE(Histogram::BucketUpper(b) - Histogram::BucketLower(b),
                Histogram::BucketLower(b) / 8);
    }
  }
}

TEST(Histogram, QuantilesAgreeWithExactPercentilesWithinTheBucketWidth) {
  Histogram h;
  std::vector<double> exact;
  std::mt19937 rng(7);
  std::lognormal_distribution<double> dist(8, 1);
  for (int i = 0; i < 20000; ++i) {
    const uint64_t v = static_cast<uint64_t>(dist(rng));
    h.Record(v);
    exact.push_back(static_cast<double>(v));
  }
  const Histogram::Snapshot s = h.Take();
  EXPECT_EQ(s.count, 20000u);
  for (double p : {50.0, 95.0, 99.0}) {
    const double want = Percentile(exact, p);
    EXPECT_NEAR(s.Quantile(p), want, want * 0.07) << "p" << p;
  }
  EXPECT_EQ(s.CountAtMost(~0ull), 20000u);
  EXPECT_EQ(Histogram().Take().Quantile(50), 0);
}

TEST(Histogram, RecordsFromManyThreadsWithoutLosingASample) {
  Histogram h;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&h, t] {
      for (int i = 0; i < 10000; ++i) h.Record(static_cast<uint64_t>(t * 100 + i % 50));
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(h.Take().count, 40000u);
  EXPECT_EQ(h.Take().CountAtMost(49), 10000u);
}

}  // namespace
}  // namespace loom
