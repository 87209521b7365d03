#include "core/histogram.h"

#include <cmath>
#include <limits>

namespace loom {

int Histogram::BucketOf(uint64_t value) {
  if (value < 8) return static_cast<int>(value);
  const int exponent = 63 - __builtin_clzll(value);  // >= 3
  const int sub = static_cast<int>((value >> (exponent - 3)) & 7);
  return 8 + (exponent - 3) * 8 + sub;
}

uint64_t Histogram::BucketLower(int bucket) {
  if (bucket < 8) return static_cast<uint64_t>(bucket);
  const int exponent = 3 + (bucket - 8) / 8, sub = (bucket - 8) % 8;
  return static_cast<uint64_t>(8 + sub) << (exponent - 3);
}

uint64_t Histogram::BucketUpper(int bucket) {
  if (bucket + 1 >= kBuckets) return std::numeric_limits<uint64_t>::max();
  return BucketLower(bucket + 1);
}

Histogram::Snapshot Histogram::Take() const {
  Snapshot s;
  s.counts.resize(kBuckets);
  for (int b = 0; b < kBuckets; ++b) {
    s.counts[static_cast<size_t>(b)] =
        counts_[static_cast<size_t>(b)].load(std::memory_order_relaxed);
    s.count += s.counts[static_cast<size_t>(b)];
  }
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

double Histogram::Snapshot::Quantile(double p) const {
  if (count == 0) return 0;
  const double rank = std::ceil(p / 100.0 * static_cast<double>(count));
  const uint64_t target = rank < 1 ? 1 : static_cast<uint64_t>(rank);
  uint64_t seen = 0;
  for (int b = 0; b < kBuckets; ++b) {
    seen += counts[static_cast<size_t>(b)];
    if (seen >= target) {
      const uint64_t lower = BucketLower(b), upper = BucketUpper(b);
      if (upper - lower <= 1) return static_cast<double>(lower);
      return (static_cast<double>(lower) + static_cast<double>(upper)) / 2;
    }
  }
  return static_cast<double>(BucketLower(kBuckets - 1));
}

uint64_t Histogram::Snapshot::CountAtMost(uint64_t bound) const {
  uint64_t n = 0;
  for (int b = 0; b < kBuckets && BucketLower(b) <= bound; ++b) n += counts[static_cast<size_t>(b)];
  return n;
}

}  // namespace loom
