#include "serve/types.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace loom::serve {
namespace {

struct TypeRow {
  WireType type;
  const char* name;
  size_t size;
  std::optional<DType> dtype;
};

constexpr TypeRow kTypes[] = {
    {WireType::kBool, "BOOL", 1, DType::kBool},     {WireType::kUInt8, "UINT8", 1, DType::kUInt8},
    {WireType::kUInt16, "UINT16", 2, std::nullopt}, {WireType::kUInt32, "UINT32", 4, std::nullopt},
    {WireType::kUInt64, "UINT64", 8, std::nullopt}, {WireType::kInt8, "INT8", 1, DType::kInt8},
    {WireType::kInt16, "INT16", 2, DType::kInt16},  {WireType::kInt32, "INT32", 4, DType::kInt32},
    {WireType::kInt64, "INT64", 8, DType::kInt64},  {WireType::kFp16, "FP16", 2, DType::kFloat16},
    {WireType::kFp32, "FP32", 4, DType::kFloat32},  {WireType::kFp64, "FP64", 8, DType::kFloat64},
    {WireType::kBytes, "BYTES", 0, std::nullopt},
};

const TypeRow& Row(WireType type) {
  for (const TypeRow& r : kTypes) {
    if (r.type == type) return r;
  }
  return kTypes[0];
}

}  // namespace

absl::StatusOr<WireType> ParseWireType(std::string_view name) {
  for (const TypeRow& r : kTypes) {
    if (name == r.name) return r.type;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown datatype '", std::string(name),
                   "' (the protocol's: BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, "
                   "INT64, FP16, FP32, FP64, BYTES)"));
}

const char* WireTypeName(WireType type) { return Row(type).name; }
size_t WireTypeSize(WireType type) { return Row(type).size; }
std::optional<DType> ToDType(WireType type) { return Row(type).dtype; }

WireType FromDType(DType dtype) {
  for (const TypeRow& r : kTypes) {
    if (r.dtype == dtype) return r.type;
  }
  return WireType::kBytes;
}

absl::Status CheckWireShape(const std::string& name, const Shape& shape, const ServeLimits& limits,
                            int64_t* elements) {
  if (static_cast<int64_t>(shape.size()) > limits.max_rank) {
    return absl::InvalidArgumentError(absl::StrCat("input '", name, "': rank ", shape.size(),
                                                   " is over the limit of ", limits.max_rank,
                                                   " (max_rank)"));
  }
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0)
      return absl::InvalidArgumentError(
          absl::StrCat("input '", name, "': shape ", ShapeToString(shape), " has a negative dim"));
    // Each dim is bounded too: [0, 2^62] holds no element but is no shape to pass on.
    if (d > limits.max_tensor_elements || __builtin_mul_overflow(n, d, &n) ||
        n > limits.max_tensor_elements) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", name, "': shape ", ShapeToString(shape),
                       " has more elements than the limit of ", limits.max_tensor_elements,
                       " (max_tensor_elements)"));
    }
  }
  if (elements) *elements = n;
  return absl::OkStatus();
}

absl::Status CheckName(std::string_view what, std::string_view name, const ServeLimits& limits) {
  if (name.empty())
    return absl::InvalidArgumentError(absl::StrCat(std::string(what), ": an empty name"));
  if (static_cast<int64_t>(name.size()) > limits.max_name_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(what), ": a name of ", name.size(),
                                                   " bytes, over the limit of ",
                                                   limits.max_name_bytes));
  }
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      return absl::InvalidArgumentError(
          absl::StrCat(std::string(what), ": a name with a control character (NUL, newline, ...)"));
    }
  }
  return absl::OkStatus();
}

WireTensor OwnedBytesTensor(std::string name, Shape shape, std::string wire) {
  WireTensor t;
  t.name = std::move(name);
  t.type = WireType::kBytes;
  t.shape = std::move(shape);
  t.owned_bytes = std::make_shared<const std::string>(std::move(wire));
  t.bytes = *t.owned_bytes;
  return t;
}

void AppendBytesElement(std::string& wire, std::string_view element) {
  const auto n = static_cast<uint32_t>(element.size());
  const char length[4] = {static_cast<char>(n & 0xff), static_cast<char>((n >> 8) & 0xff),
                          static_cast<char>((n >> 16) & 0xff), static_cast<char>(n >> 24)};
  wire.append(length, 4);
  wire.append(element);
}

absl::StatusOr<WireTensor> TensorFromBytes(const std::string& name, WireType type,
                                           const Shape& shape, std::string_view data,
                                           const ServeLimits& limits) {
  int64_t elements = 0;
  LOOM_RETURN_IF_ERROR(CheckWireShape(name, shape, limits, &elements));
  WireTensor t;
  t.name = name;
  t.type = type;
  t.shape = shape;
  if (type == WireType::kBytes) {
    size_t at = 0;
    for (int64_t i = 0; i < elements; ++i) {
      if (data.size() - at < 4) {
        return absl::InvalidArgumentError(absl::StrCat("input '", name, "': BYTES element ", i,
                                                       " of ", elements,
                                                       " has no complete 4-byte length"));
      }
      uint32_t length = 0;
      for (int b = 3; b >= 0; --b) {
        length = (length << 8) | static_cast<uint8_t>(data[at + static_cast<size_t>(b)]);
      }
      at += 4;
      if (length > data.size() - at) {
        return absl::InvalidArgumentError(absl::StrCat("input '", name, "': BYTES element ", i,
                                                       " claims ", length, " bytes but only ",
                                                       data.size() - at, " remain"));
      }
      at += length;
    }
    if (at != data.size()) {
      return absl::InvalidArgumentError(absl::StrCat("input '", name, "': ", data.size() - at,
                                                     " bytes left over after its ", elements,
                                                     " BYTES elements"));
    }
    t.bytes = data;
    return t;
  }
  const int64_t expected = elements * static_cast<int64_t>(WireTypeSize(type));  // bounded
  if (static_cast<int64_t>(data.size()) != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("input '", name, "': shape ", ShapeToString(shape), " ", WireTypeName(type),
                     " needs ", expected, " bytes, got ", data.size()));
  }
  const std::optional<DType> dtype = ToDType(type);
  if (!dtype) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input '", name, "': datatype ", WireTypeName(type), " is not one Loom's models take"));
  }
  static char empty[8];
  t.tensor = Tensor::Borrow(
      *dtype, shape, data.empty() ? static_cast<void*>(empty) : const_cast<char*>(data.data()));
  return t;
}

std::string_view TensorBytes(const WireTensor& t) {
  if (t.type == WireType::kBytes) return t.bytes;
  return {static_cast<const char*>(t.tensor.data()), t.tensor.byte_size()};
}

int64_t ResponseBytes(const InferResponse& r) {
  int64_t bytes = 0;
  for (const WireTensor& t : r.outputs) bytes += static_cast<int64_t>(TensorBytes(t).size());
  return bytes;
}

InflightBudget::Charge& InflightBudget::Charge::operator=(Charge&& other) noexcept {
  if (this != &other) {
    Release();
    budget_ = other.budget_;
    bytes_ = other.bytes_;
    other.bytes_ = 0;
  }
  return *this;
}

void InflightBudget::Charge::Release() {
  if (budget_ != nullptr && bytes_ > 0) budget_->used_.fetch_sub(bytes_);
  bytes_ = 0;
}

bool InflightBudget::Charge::Add(int64_t bytes) {
  if (bytes <= 0) return true;
  if (budget_ == nullptr || !budget_->Take(bytes)) return false;
  bytes_ += bytes;
  return true;
}

void InflightBudget::Charge::Hold(int64_t bytes) {
  if (budget_ == nullptr || bytes <= 0) return;
  budget_->used_.fetch_add(bytes);
  bytes_ += bytes;
}

absl::Status InflightBudget::Charge::Take(int64_t bytes) {
  if (Add(bytes)) return absl::OkStatus();
  if (budget_ == nullptr) return absl::ResourceExhaustedError("no in-flight budget");
  return OverBudget(bytes, *budget_);
}

bool InflightBudget::Take(int64_t bytes) {
  int64_t used = used_.load(std::memory_order_relaxed);
  do {
    if (bytes > limit_ - used) return false;
  } while (!used_.compare_exchange_weak(used, used + bytes));
  return true;
}

absl::Status OverBudget(int64_t bytes, const InflightBudget& budget) {
  return absl::ResourceExhaustedError(absl::StrCat(
      "the server holds ", budget.used() >> 20, " MiB of requests in flight; this one needs ",
      (bytes + (1 << 20) - 1) >> 20, " MiB more than the ", budget.limit() >> 20,
      " MiB allowed (--max-inflight-mib): try again later"));
}

int HttpStatus(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kCancelled:  // the client went away first (nginx's 499)
      return 499;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
      return 409;
    case absl::StatusCode::kResourceExhausted:  // the model's queue is full: try again later
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    case absl::StatusCode::kUnimplemented:
      return 501;
    default:
      return 500;
  }
}

int GrpcCode(const absl::Status& status) {
  // absl's codes are gRPC's codes, number for number; only the overload differs.
  if (status.code() == absl::StatusCode::kResourceExhausted)
    return static_cast<int>(absl::StatusCode::kUnavailable);
  return static_cast<int>(status.code());
}

}  // namespace loom::serve
