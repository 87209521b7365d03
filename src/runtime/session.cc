#include "loom/session.h"

#include <onnxruntime_cxx_api.h>

#include <opencv2/core/utility.hpp>

#include "absl/strings/str_cat.h"
#include "runtime/opencv_session.h"
#include "runtime/ort_session.h"
#include "runtime/ort_utils.h"

namespace loom {

const char* BackendName(Backend backend) { return backend == Backend::kOpenCv ? "opencv" : "ort"; }

absl::StatusOr<Backend> ParseBackend(const std::string& name) {
  if (name == "ort" || name == "onnxruntime") return Backend::kOnnxRuntime;
  if (name == "opencv" || name == "cv") return Backend::kOpenCv;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown backend '", name, "' (expected 'ort' or 'opencv')"));
}

const std::vector<std::string>& BackendSpellings() {
  static const auto* names = new std::vector<std::string>{"ort", "opencv", "onnxruntime", "cv"};
  return *names;
}

std::string BackendVersions() {
  return absl::StrCat("ONNX Runtime ", OrtGetApiBase()->GetVersionString(), ", OpenCV ",
                      cv::getVersionString());
}

absl::Status ConfigureOrtGlobalThreadPool(int intra_op_threads, bool allow_spinning) {
  return ort::ConfigureGlobalThreadPool(intra_op_threads, allow_spinning);
}

absl::StatusOr<std::unique_ptr<Session>> CreateSession(const std::string& model_path,
                                                       const SessionOptions& options) {
  LOOM_ASSIGN_OR_RETURN(ModelInfo info, ReadModelInfo(model_path));
  switch (options.backend) {
    case Backend::kOnnxRuntime:
      return CreateOrtSession(std::move(info), options);
    case Backend::kOpenCv:
      return CreateOpenCvSession(std::move(info), options);
  }
  return absl::InvalidArgumentError("unknown backend");
}

}  // namespace loom
