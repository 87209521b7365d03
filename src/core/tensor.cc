#include "loom/tensor.h"

#include <algorithm>
#include <cstring>
#include <new>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace loom {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return 4;
    case DType::kFloat16:
      return 2;
    case DType::kFloat64:
      return 8;
    case DType::kInt8:
      return 1;
    case DType::kUInt8:
      return 1;
    case DType::kInt16:
      return 2;
    case DType::kInt32:
      return 4;
    case DType::kInt64:
      return 8;
    case DType::kBool:
      return 1;
    case DType::kUnknown:
      return 0;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "f32";
    case DType::kFloat16:
      return "f16";
    case DType::kFloat64:
      return "f64";
    case DType::kInt8:
      return "i8";
    case DType::kUInt8:
      return "u8";
    case DType::kInt16:
      return "i16";
    case DType::kInt32:
      return "i32";
    case DType::kInt64:
      return "i64";
    case DType::kBool:
      return "bool";
    case DType::kUnknown:
      return "unknown";
  }
  return "unknown";
}

absl::StatusOr<DType> ParseDType(const std::string& name) {
  const std::string n = absl::AsciiStrToLower(name);
  struct Alias {
    const char* name;
    DType dtype;
  };
  static constexpr Alias kAliases[] = {
      {"f32", DType::kFloat32},     {"float32", DType::kFloat32}, {"float", DType::kFloat32},
      {"f16", DType::kFloat16},     {"float16", DType::kFloat16}, {"f64", DType::kFloat64},
      {"float64", DType::kFloat64}, {"double", DType::kFloat64},  {"i8", DType::kInt8},
      {"int8", DType::kInt8},       {"u8", DType::kUInt8},        {"uint8", DType::kUInt8},
      {"i16", DType::kInt16},       {"int16", DType::kInt16},     {"i32", DType::kInt32},
      {"int32", DType::kInt32},     {"i64", DType::kInt64},       {"int64", DType::kInt64},
      {"bool", DType::kBool},
  };
  for (const Alias& a : kAliases) {
    if (n == a.name) return a.dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype '", name, "'"));
}

std::string ShapeToString(const Shape& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

namespace {

// "120.0 GB", "3.0 MB", "512 bytes".
std::string FormatBytes(double bytes) {
  if (bytes >= 1e9) return absl::StrFormat("%.1f GB", bytes / 1e9);
  if (bytes >= 1e6) return absl::StrFormat("%.1f MB", bytes / 1e6);
  if (bytes >= 1e3) return absl::StrFormat("%.1f kB", bytes / 1e3);
  return absl::StrFormat("%.0f bytes", bytes);
}

std::string DescribeShape(DType dtype, const Shape& shape) {
  return dtype == DType::kUnknown ? ShapeToString(shape)
                                  : absl::StrCat(ShapeToString(shape), " ", DTypeName(dtype));
}

}  // namespace

absl::StatusOr<int64_t> CheckedElementCount(DType dtype, const Shape& shape,
                                            const TensorLimits& limits) {
  if (static_cast<int64_t>(shape.size()) > limits.max_rank) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", DescribeShape(dtype, shape), " has rank ", shape.size(),
                     ", over the limit of ", limits.max_rank, " (max_rank)"));
  }
  int64_t n = 1;
  bool overflow = false;
  double exact = 1;  // for the message only
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", DescribeShape(dtype, shape), " has a negative dim"));
    }
    exact *= static_cast<double>(d);
    overflow |= __builtin_mul_overflow(n, d, &n);
  }
  if (overflow || n > limits.max_elements) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tensor %s has %.4g elements, over the limit of %d per tensor (max_elements)",
        DescribeShape(dtype, shape), exact, limits.max_elements));
  }
  const int64_t width = static_cast<int64_t>(DTypeSize(dtype));
  int64_t bytes = 0;
  if (dtype != DType::kUnknown &&
      (__builtin_mul_overflow(n, width, &bytes) || bytes > limits.max_bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor ", DescribeShape(dtype, shape), " needs ",
        FormatBytes(exact * static_cast<double>(width)), ", over the limit of ",
        FormatBytes(static_cast<double>(limits.max_bytes)), " per tensor (max_bytes)"));
  }
  return n;
}

absl::Status CheckShape(DType dtype, const Shape& shape, const TensorLimits& limits) {
  return CheckedElementCount(dtype, shape, limits).status();
}

int64_t ElementCount(const NamedTensors& tensors) {
  int64_t n = 0;
  for (const NamedTensor& t : tensors)
    LOOM_CHECK(!__builtin_add_overflow(n, t.tensor.element_count(), &n));
  return n;
}

int64_t ElementCount(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    LOOM_CHECK(d >= 0);
    LOOM_CHECK(!__builtin_mul_overflow(n, d, &n));
  }
  return n;
}

namespace {
constexpr std::align_val_t kAlignment{64};
struct AlignedDelete {
  void operator()(void* p) const { ::operator delete[](p, kAlignment); }
};
}  // namespace

Tensor Tensor::Allocate(DType dtype, Shape shape) {
  LOOM_CHECK(dtype != DType::kUnknown);
  size_t bytes = 0;
  LOOM_CHECK(
      !__builtin_mul_overflow(static_cast<size_t>(ElementCount(shape)), DTypeSize(dtype), &bytes));
  // Always allocate at least one byte so that data() of an empty-shaped tensor is non-null.
  void* p = ::operator new[](std::max<size_t>(bytes, 1), kAlignment);
  std::memset(p, 0, bytes);
  std::shared_ptr<void> owner(p, AlignedDelete());
  return Tensor(dtype, std::move(shape), p, std::move(owner));
}

absl::StatusOr<Tensor> Tensor::TryAllocate(DType dtype, Shape shape, const TensorLimits& limits) {
  if (dtype == DType::kUnknown)
    return absl::InvalidArgumentError("cannot allocate a tensor of unknown dtype");
  LOOM_RETURN_IF_ERROR(CheckShape(dtype, shape, limits));
  try {
    return Allocate(dtype, shape);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of memory allocating tensor ", DescribeShape(dtype, shape), " (",
                     FormatBytes(static_cast<double>(ElementCount(shape)) *
                                 static_cast<double>(DTypeSize(dtype))),
                     ")"));
  }
}

Tensor Tensor::Borrow(DType dtype, Shape shape, void* data) {
  LOOM_CHECK(data != nullptr);
  return Tensor(dtype, std::move(shape), data, nullptr);
}

Tensor Tensor::Adopt(DType dtype, Shape shape, void* data, std::shared_ptr<void> owner) {
  LOOM_CHECK(data != nullptr && owner != nullptr);
  return Tensor(dtype, std::move(shape), data, std::move(owner));
}

Tensor Tensor::Clone() const {
  Tensor copy = Allocate(dtype_, shape_);
  if (byte_size() > 0) std::memcpy(copy.data_, data_, byte_size());
  return copy;
}

Tensor Tensor::SliceRows(int64_t begin, int64_t end) const {
  LOOM_CHECK(rank() >= 1 && 0 <= begin && begin <= end && end <= shape_[0]);
  Shape shape = shape_;
  shape[0] = end - begin;
  const size_t row_bytes = shape_[0] == 0 ? 0 : byte_size() / static_cast<size_t>(shape_[0]);
  auto* base = static_cast<std::byte*>(data_) + static_cast<size_t>(begin) * row_bytes;
  return Tensor(dtype_, std::move(shape), base, owner_);
}

absl::StatusOr<Tensor> Tensor::Reshape(Shape shape) const {
  for (int64_t d : shape) {
    if (d < 0)
      return absl::InvalidArgumentError(absl::StrCat("cannot reshape to ", ShapeToString(shape)));
  }
  if (ElementCount(shape) != element_count()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot reshape ", Describe(), " to ", ShapeToString(shape), ": element counts differ"));
  }
  return Tensor(dtype_, std::move(shape), data_, owner_);
}

std::string Tensor::Describe() const {
  return absl::StrCat(ShapeToString(shape_), " ", DTypeName(dtype_));
}

}  // namespace loom
