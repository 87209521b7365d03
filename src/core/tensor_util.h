// Helpers over tensors used by the CLI, tests and benchmarks: random fill, summaries,
// comparison. Not on any hot path.
#ifndef LOOM_CORE_TENSOR_UTIL_H_
#define LOOM_CORE_TENSOR_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "loom/tensor.h"

namespace loom {

// Fills a tensor with deterministic pseudo-random values: floats uniform in [0, 1), integers
// uniform in [0, 10), bools 0/1. Same seed → same values.
void FillRandom(Tensor& tensor, uint64_t seed);

struct TensorSummary {
  double min = 0, max = 0, mean = 0;
  int64_t count = 0;
  int64_t non_finite = 0;  // NaN or Inf values (excluded from min/max/mean)
};
// Statistics over all elements, converted to double. f16 tensors are not summarised (count 0).
TensorSummary Summarize(const Tensor& tensor);

// The k largest values of a float tensor with their flat indices, largest first.
std::vector<std::pair<int64_t, float>> TopK(const Tensor& tensor, int k);

// A tensor is "vector-like" when at most one dim is larger than 1 (e.g. [1,1000]).
bool IsVectorLike(const Tensor& tensor);

struct Difference {
  double max_abs = 0;  // max |a - b|
  double max_rel = 0;  // max |a - b| / max(|b|, floor), floor = 1e-3 × max|b| (avoids 0 ÷ 0)
  int64_t worst_index = -1;
};
// Element-wise comparison of two f32 tensors with the same element count (shapes may differ,
// as OpenCV DNN reshapes some outputs). INVALID_ARGUMENT otherwise.
absl::StatusOr<Difference> Compare(const Tensor& a, const Tensor& b);

}  // namespace loom

#endif  // LOOM_CORE_TENSOR_UTIL_H_
