// Histogram: a streaming, lock-free distribution of non-negative integer samples (microseconds,
// rows), for the engine's statistics and the server's Prometheus metrics.
//
// Buckets are log-linear: values 0..7 exactly, then 8 buckets per power of two (each at most
// 12.5% wide), up to 2^64. Record is one relaxed atomic increment, so workers record on the hot
// path without a lock; readers take a Snapshot (relaxed loads) whenever they like. Quantiles are
// the midpoint of the bucket holding the nearest-rank sample: exact below 16, within ±6.25% above.
//
// Thread safety: Record and Snapshot may be called from any number of threads at once.
#ifndef LOOM_CORE_HISTOGRAM_H_
#define LOOM_CORE_HISTOGRAM_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <vector>

namespace loom {

class Histogram {
 public:
  static constexpr int kBuckets = 8 + 61 * 8;

  // Bucket of `value`, and the bucket's bounds [lower, upper).
  static int BucketOf(uint64_t value);
  static uint64_t BucketLower(int bucket);
  static uint64_t BucketUpper(int bucket);  // saturates at UINT64_MAX for the last bucket

  void Record(uint64_t value) {
    counts_[static_cast<size_t>(BucketOf(value))].fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(value, std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
  }

  struct Snapshot {
    std::vector<uint64_t> counts;  // per bucket
    uint64_t count = 0;            // samples (may lag counts by in-flight records)
    uint64_t sum = 0;              // of the values
    // The p-th percentile (0..100), nearest rank, as the bucket midpoint; 0 when empty.
    double Quantile(double p) const;
    // Samples <= `bound` (exact when `bound` + 1 is a bucket edge, e.g. a power of two minus 1).
    uint64_t CountAtMost(uint64_t bound) const;
  };
  Snapshot Take() const;

 private:
  std::array<std::atomic<uint64_t>, kBuckets> counts_{};
  std::atomic<uint64_t> sum_{0};
  std::atomic<uint64_t> count_{0};
};

}  // namespace loom

#endif  // LOOM_CORE_HISTOGRAM_H_
