// Tensor: a dtype, a shape and a buffer, owned or borrowed.
//
// A Tensor is a cheap handle: copying one shares the same buffer (like cv::Mat), so it can travel
// through queues and futures without copying data. An *owned* tensor keeps its buffer alive for as
// long as any copy lives (the buffer may be Loom's own allocation or a backend's output value it
// adopted). A *borrowed* tensor points at memory the caller owns and must keep alive and unchanged
// until every use of the tensor has finished (for an inference, until its result is delivered).
// Backends hand a tensor's buffer to ONNX Runtime without copying it.
//
// Thread safety: a Tensor may be read from several threads; writing its data while others read it
// is the caller's race.
#ifndef LOOM_TENSOR_H_
#define LOOM_TENSOR_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "loom/status.h"

namespace loom {

// Element types Loom moves around. Names follow ONNX's (float32 is "f32" in short form).
enum class DType : uint8_t {
  kUnknown = 0,
  kFloat32,
  kFloat16,
  kFloat64,
  kInt8,
  kUInt8,
  kInt16,
  kInt32,
  kInt64,
  kBool,
};

// Size of one element in bytes (0 for kUnknown).
size_t DTypeSize(DType dtype);
// Short name: "f32", "f16", "f64", "i8", "u8", "i16", "i32", "i64", "bool", "unknown".
const char* DTypeName(DType dtype);
// Inverse of DTypeName, also accepting "float32", "float", "uint8", "int64"...
absl::StatusOr<DType> ParseDType(const std::string& name);
// C++ type to DType, for the typed accessors.
template <typename T>
constexpr DType DTypeOf();

using Shape = std::vector<int64_t>;
// "[1,3,320,320]".
std::string ShapeToString(const Shape& shape);

// Limits on the sizes that come from outside Loom (model files, requests, configs, images). Every
// such shape is checked against them before anything is multiplied or allocated, so that a hostile
// or mistaken size is an error naming the limit, not an overflow or an out-of-memory crash.
struct TensorLimits {
  int64_t max_rank = 8;                     // dims per tensor
  int64_t max_elements = int64_t{1} << 31;  // elements per tensor
  int64_t max_bytes = int64_t{2} << 30;     // bytes per tensor (2 GiB)
};

// Checks `shape` (of `dtype`, which may be kUnknown to skip the byte limit) against `limits`:
// rank, no negative dim, element count and byte size computed without overflow and within the
// limits. INVALID_ARGUMENT naming the shape and the limit otherwise, e.g.
//   "tensor [1,3,99999,99999] f32 needs 120.0 GB, over the limit of 2.1 GB per tensor (max_bytes)".
absl::Status CheckShape(DType dtype, const Shape& shape, const TensorLimits& limits = {});
// The element count of a checked shape (CheckShape's checks), or its error.
absl::StatusOr<int64_t> CheckedElementCount(DType dtype, const Shape& shape,
                                            const TensorLimits& limits = {});
// Product of the dims (1 for a scalar). Only for shapes already checked (every Tensor's shape is):
// a negative dim or an overflow is an internal invariant failure.
int64_t ElementCount(const Shape& shape);

class Tensor {
 public:
  // An empty tensor: kUnknown dtype, no data. Use the factories below.
  Tensor() = default;

  // A new owned tensor, zero-filled, 64-byte aligned. For shapes Loom computed itself; a shape
  // that came from outside goes through TryAllocate.
  static Tensor Allocate(DType dtype, Shape shape);
  // Allocate for a shape from outside: CheckShape first (INVALID_ARGUMENT), and
  // RESOURCE_EXHAUSTED, naming the size, when the memory cannot be had.
  static absl::StatusOr<Tensor> TryAllocate(DType dtype, Shape shape,
                                            const TensorLimits& limits = {});
  // A tensor over caller memory (not copied; see the class comment for lifetime).
  static Tensor Borrow(DType dtype, Shape shape, void* data);
  // A tensor over memory kept alive by `owner` (e.g. a backend's output value).
  static Tensor Adopt(DType dtype, Shape shape, void* data, std::shared_ptr<void> owner);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t rank() const { return static_cast<int64_t>(shape_.size()); }
  int64_t dim(int64_t i) const { return shape_.at(static_cast<size_t>(i)); }
  int64_t element_count() const { return ElementCount(shape_); }
  size_t byte_size() const { return static_cast<size_t>(element_count()) * DTypeSize(dtype_); }
  bool empty() const { return data_ == nullptr; }
  // True when the tensor keeps its buffer alive itself (Allocate, Adopt).
  bool owns_data() const { return owner_ != nullptr; }

  void* data() const { return data_; }
  // Typed view; LOOM_CHECKs that T matches the dtype.
  template <typename T>
  T* data_as() const {
    LOOM_CHECK(DTypeOf<T>() == dtype_);
    return static_cast<T*>(data_);
  }

  // A deep copy into a new owned tensor.
  Tensor Clone() const;
  // Rows [begin, end) along dim 0, sharing this tensor's buffer (no copy).
  Tensor SliceRows(int64_t begin, int64_t end) const;
  // Same buffer, another shape with the same element count.
  absl::StatusOr<Tensor> Reshape(Shape shape) const;

  // "[1,3,320,320] f32".
  std::string Describe() const;

 private:
  Tensor(DType dtype, Shape shape, void* data, std::shared_ptr<void> owner)
      : dtype_(dtype), shape_(std::move(shape)), data_(data), owner_(std::move(owner)) {}

  DType dtype_ = DType::kUnknown;
  Shape shape_;
  void* data_ = nullptr;
  std::shared_ptr<void> owner_;  // null for a borrowed tensor
};

// An input or output by name.
struct NamedTensor {
  std::string name;
  Tensor tensor;
};
using NamedTensors = std::vector<NamedTensor>;

// Elements of all the tensors together (validated tensors: their shapes were checked).
int64_t ElementCount(const NamedTensors& tensors);

template <typename T>
constexpr DType DTypeOf() {
  if constexpr (std::is_same_v<T, float>)
    return DType::kFloat32;
  else if constexpr (std::is_same_v<T, double>)
    return DType::kFloat64;
  else if constexpr (std::is_same_v<T, int8_t>)
    return DType::kInt8;
  else if constexpr (std::is_same_v<T, uint8_t>)
    return DType::kUInt8;
  else if constexpr (std::is_same_v<T, int16_t>)
    return DType::kInt16;
  else if constexpr (std::is_same_v<T, int32_t>)
    return DType::kInt32;
  else if constexpr (std::is_same_v<T, int64_t>)
    return DType::kInt64;
  else if constexpr (std::is_same_v<T, bool>)
    return DType::kBool;
  else
    return DType::kUnknown;
}

}  // namespace loom

#endif  // LOOM_TENSOR_H_
