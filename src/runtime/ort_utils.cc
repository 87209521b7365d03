#include "runtime/ort_utils.h"

#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace loom::ort {
namespace {

struct EnvState {
  std::mutex mu;
  std::unique_ptr<Ort::Env> env;  // requires mu to create
  int global_threads = 0;         // 0: no global pool
  bool global_spinning = false;
};

EnvState& State() {
  static EnvState* state = new EnvState();  // never destroyed: sessions may outlive statics
  return *state;
}

}  // namespace

Ort::Env& GetEnv() {
  EnvState& s = State();
  std::lock_guard<std::mutex> lock(s.mu);
  if (!s.env) {
    if (s.global_threads > 0) {
      Ort::ThreadingOptions threading;
      threading.SetGlobalIntraOpNumThreads(s.global_threads);
      threading.SetGlobalInterOpNumThreads(1);
      threading.SetGlobalSpinControl(s.global_spinning ? 1 : 0);
      s.env = std::make_unique<Ort::Env>(threading.operator OrtThreadingOptions*(),
                                         ORT_LOGGING_LEVEL_FATAL, "loom");
    } else {
      s.env = std::make_unique<Ort::Env>(ORT_LOGGING_LEVEL_FATAL, "loom");
    }
  }
  return *s.env;
}

absl::Status ConfigureGlobalThreadPool(int intra_op_threads, bool allow_spinning) {
  EnvState& s = State();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.env) {
    return absl::FailedPreconditionError(
        "the ONNX Runtime global thread pool must be configured before the first session");
  }
  if (intra_op_threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("global thread pool size must be >= 1, got ", intra_op_threads));
  }
  s.global_threads = intra_op_threads;
  s.global_spinning = allow_spinning;
  return absl::OkStatus();
}

bool HasGlobalThreadPool() {
  EnvState& s = State();
  std::lock_guard<std::mutex> lock(s.mu);
  return s.global_threads > 0;
}

ONNXTensorElementDataType ToOrtType(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    case DType::kFloat16:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
    case DType::kFloat64:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE;
    case DType::kInt8:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8;
    case DType::kUInt8:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    case DType::kInt16:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16;
    case DType::kInt32:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
    case DType::kInt64:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
    case DType::kBool:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL;
    case DType::kUnknown:
      break;
  }
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}

DType FromOrtType(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
      return DType::kFloat32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
      return DType::kFloat16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
      return DType::kFloat64;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8:
      return DType::kInt8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8:
      return DType::kUInt8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16:
      return DType::kInt16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
      return DType::kInt32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
      return DType::kInt64;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL:
      return DType::kBool;
    default:
      return DType::kUnknown;
  }
}

absl::Status ToStatus(const Ort::Exception& e, const std::string& context) {
  const std::string message = absl::StrCat(context, "ONNX Runtime: ", e.what());
  switch (e.GetOrtErrorCode()) {
    case ORT_INVALID_ARGUMENT:
    case ORT_INVALID_PROTOBUF:
    case ORT_INVALID_GRAPH:
      return absl::InvalidArgumentError(message);
    case ORT_NO_SUCHFILE:
    case ORT_NO_MODEL:
      return absl::NotFoundError(message);
    case ORT_NOT_IMPLEMENTED:
      return absl::UnimplementedError(message);
    case ORT_MODEL_LOADED:
      return absl::FailedPreconditionError(message);
    default:
      return absl::InternalError(message);
  }
}

}  // namespace loom::ort
