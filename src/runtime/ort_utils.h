// ONNX Runtime glue: the one process-wide Ort::Env, dtype mapping, and the one place where
// Ort::Exception becomes absl::Status. Nothing outside src/runtime/ sees ONNX Runtime types.
#ifndef LOOM_RUNTIME_ORT_UTILS_H_
#define LOOM_RUNTIME_ORT_UTILS_H_

#include <string_view>

#include "loom/status.h"
#include "loom/tensor.h"
#include "onnxruntime_cxx_api.h"

namespace loom::ort {

// The process's Ort::Env, created on first use (ONNX Runtime allows one per process). If
// ConfigureGlobalThreadPool was called before, the env owns a global intra-op pool that sessions
// with use_global_thread_pool share.
// Logging is at FATAL: every error reaches the caller as a status, so ORT need not print it.
Ort::Env& GetEnv();

// Sizes the process-wide intra-op pool (ONNX Runtime's DisablePerSessionThreads remedy). Must be
// called before the first session is created; FAILED_PRECONDITION otherwise.
absl::Status ConfigureGlobalThreadPool(int intra_op_threads, bool allow_spinning);
bool HasGlobalThreadPool();

ONNXTensorElementDataType ToOrtType(DType dtype);
DType FromOrtType(ONNXTensorElementDataType type);

// Converts an ONNX Runtime error into a status with a matching canonical code, prefixed by
// `context` ("model 'x': ").
absl::Status ToStatus(const Ort::Exception& e, const std::string& context);

// Runs `fn`, converting any exception it throws into a status prefixed by `context`.
template <typename Fn>
absl::Status Call(const std::string& context, Fn&& fn) {
  try {
    fn();
    return absl::OkStatus();
  } catch (const Ort::Exception& e) {
    return ToStatus(e, context);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(std::string(context) + "out of memory");
  } catch (const std::exception& e) {
    return absl::InternalError(std::string(context) + e.what());
  } catch (...) {
    return absl::InternalError(std::string(context) + "unknown exception");
  }
}

}  // namespace loom::ort

#endif  // LOOM_RUNTIME_ORT_UTILS_H_
