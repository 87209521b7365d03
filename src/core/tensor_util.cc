#include "core/tensor_util.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"

namespace loom {
namespace {

template <typename T>
double At(const Tensor& t, int64_t i) {
  return static_cast<double>(static_cast<const T*>(t.data())[i]);
}

double ValueAt(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kFloat32:
      return At<float>(t, i);
    case DType::kFloat64:
      return At<double>(t, i);
    case DType::kInt8:
      return At<int8_t>(t, i);
    case DType::kUInt8:
      return At<uint8_t>(t, i);
    case DType::kInt16:
      return At<int16_t>(t, i);
    case DType::kInt32:
      return At<int32_t>(t, i);
    case DType::kInt64:
      return At<int64_t>(t, i);
    case DType::kBool:
      return At<uint8_t>(t, i);
    default:
      return 0;
  }
}

}  // namespace

void FillRandom(Tensor& tensor, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int64_t n = tensor.element_count();
  switch (tensor.dtype()) {
    case DType::kFloat32: {
      std::uniform_real_distribution<float> dist(0.0f, 1.0f);
      float* p = tensor.data_as<float>();
      for (int64_t i = 0; i < n; ++i) p[i] = dist(rng);
      break;
    }
    case DType::kFloat64: {
      std::uniform_real_distribution<double> dist(0.0, 1.0);
      double* p = tensor.data_as<double>();
      for (int64_t i = 0; i < n; ++i) p[i] = dist(rng);
      break;
    }
    default: {
      // Integers and bools: small non-negative values, written at the element's width.
      const size_t width = DTypeSize(tensor.dtype());
      const int modulus = tensor.dtype() == DType::kBool ? 2 : 10;
      auto* bytes = static_cast<uint8_t*>(tensor.data());
      for (int64_t i = 0; i < n; ++i) {
        const uint64_t v = rng() % modulus;
        for (size_t b = 0; b < width; ++b)
          bytes[i * width + b] = b == 0 ? static_cast<uint8_t>(v) : 0;
      }
    }
  }
}

TensorSummary Summarize(const Tensor& tensor) {
  TensorSummary s;
  if (tensor.dtype() == DType::kFloat16 || tensor.dtype() == DType::kUnknown) return s;
  double sum = 0;
  bool first = true;
  const int64_t n = tensor.element_count();
  for (int64_t i = 0; i < n; ++i) {
    const double v = ValueAt(tensor, i);
    if (!std::isfinite(v)) {
      ++s.non_finite;
      continue;
    }
    if (first) {
      s.min = s.max = v;
      first = false;
    }
    s.min = std::min(s.min, v);
    s.max = std::max(s.max, v);
    sum += v;
    ++s.count;
  }
  s.mean = s.count > 0 ? sum / static_cast<double>(s.count) : 0;
  return s;
}

std::vector<std::pair<int64_t, float>> TopK(const Tensor& tensor, int k) {
  std::vector<std::pair<int64_t, float>> all;
  if (tensor.dtype() != DType::kFloat32) return all;
  const float* p = tensor.data_as<float>();
  const int64_t n = tensor.element_count();
  all.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) all.emplace_back(i, p[i]);
  const size_t keep = std::min<size_t>(static_cast<size_t>(std::max(k, 0)), all.size());
  std::partial_sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(keep), all.end(),
                    [](const auto& a, const auto& b) { return a.second > b.second; });
  all.resize(keep);
  return all;
}

bool IsVectorLike(const Tensor& tensor) {
  int big = 0;
  for (int64_t d : tensor.shape()) big += d > 1 ? 1 : 0;
  return big <= 1 && tensor.element_count() > 1;
}

absl::StatusOr<Difference> Compare(const Tensor& a, const Tensor& b) {
  if (a.dtype() != DType::kFloat32 || b.dtype() != DType::kFloat32 ||
      a.element_count() != b.element_count()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot compare ", a.Describe(), " with ", b.Describe()));
  }
  const float* pa = a.data_as<float>();
  const float* pb = b.data_as<float>();
  const int64_t n = a.element_count();
  double scale = 0;
  for (int64_t i = 0; i < n; ++i) scale = std::max(scale, std::fabs(static_cast<double>(pb[i])));
  const double floor = std::max(1e-3 * scale, 1e-12);
  Difference d;
  for (int64_t i = 0; i < n; ++i) {
    const double diff = std::fabs(static_cast<double>(pa[i]) - pb[i]);
    const double rel = diff / std::max(std::fabs(static_cast<double>(pb[i])), floor);
    if (!(diff <= d.max_abs)) d.max_abs = diff;  // NaN propagates as a failure
    if (!(rel <= d.max_rel)) {
      d.max_rel = rel;
      d.worst_index = i;
    }
  }
  return d;
}

}  // namespace loom
