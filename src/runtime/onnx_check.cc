#include "runtime/onnx_check.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "onnx/checker.h"
#include "onnx/onnx_pb.h"

namespace loom {

absl::Status CheckOnnxModel(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("model file '", path, "' cannot be read"));
  onnx::ModelProto model;
  if (!model.ParseFromIstream(&in)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model file '", path, "' is not a valid ONNX model: its protobuf does not parse"));
  }
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    std::string reason = e.what();
    if (const size_t nl = reason.find('\n'); nl != std::string::npos) reason.resize(nl);
    return absl::InvalidArgumentError(
        absl::StrCat("model file '", path, "' is not a valid ONNX model: ", reason));
  }
  return absl::OkStatus();
}

}  // namespace loom
