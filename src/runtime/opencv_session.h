// The OpenCV DNN backend of Session (cv::dnn::readNetFromONNX, CPU target).
#ifndef LOOM_RUNTIME_OPENCV_SESSION_H_
#define LOOM_RUNTIME_OPENCV_SESSION_H_

#include <memory>

#include "loom/session.h"

namespace loom {

// Loads `info.path` with OpenCV DNN. OpenCV cannot import every ONNX graph; such a model fails
// here with UNIMPLEMENTED and OpenCV's own reason. cv::Exception never leaves this backend.
absl::StatusOr<std::unique_ptr<Session>> CreateOpenCvSession(ModelInfo info,
                                                             const SessionOptions& options);

}  // namespace loom

#endif  // LOOM_RUNTIME_OPENCV_SESSION_H_
