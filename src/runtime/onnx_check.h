// ONNX's own model checker (libonnx), to tell a broken model file from a valid one that a backend
// does not support.
#ifndef LOOM_RUNTIME_ONNX_CHECK_H_
#define LOOM_RUNTIME_ONNX_CHECK_H_

#include <string>

#include "loom/status.h"

namespace loom {

// OK if onnx::checker accepts the model at `path`; INVALID_ARGUMENT "model file 'P' is not a valid
// ONNX model: <the checker's reason>" otherwise (NOT_FOUND if it cannot be read).
absl::Status CheckOnnxModel(const std::string& path);

}  // namespace loom

#endif  // LOOM_RUNTIME_ONNX_CHECK_H_
