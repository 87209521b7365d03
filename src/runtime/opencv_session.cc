#include "runtime/opencv_session.h"

#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/dnn.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "runtime/onnx_check.h"

namespace loom {
namespace {

int ToCvDepth(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return CV_32F;
    case DType::kFloat64:
      return CV_64F;
    case DType::kUInt8:
      return CV_8U;
    case DType::kInt8:
      return CV_8S;
    case DType::kInt16:
      return CV_16S;
    case DType::kInt32:
      return CV_32S;
    default:
      return -1;
  }
}

DType FromCvDepth(int depth) {
  switch (depth) {
    case CV_32F:
      return DType::kFloat32;
    case CV_64F:
      return DType::kFloat64;
    case CV_8U:
      return DType::kUInt8;
    case CV_8S:
      return DType::kInt8;
    case CV_16S:
      return DType::kInt16;
    case CV_32S:
      return DType::kInt32;
    default:
      return DType::kUnknown;
  }
}

// OpenCV's exception text spans several lines quoted with "> "; fold it into one line.
std::string CvReason(const cv::Exception& e) {
  const std::string raw = e.err.empty() ? e.what() : e.err;
  std::string reason;
  for (absl::string_view line : absl::StrSplit(raw, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    while (absl::ConsumePrefix(&line, ">")) line = absl::StripLeadingAsciiWhitespace(line);
    if (line.empty()) continue;
    if (!reason.empty()) reason += ' ';
    absl::StrAppend(&reason, line);
  }
  return reason;
}

// OpenCV DNN logs import failures to stderr itself; Loom reports them as statuses instead.
void SilenceOpenCvLogging() {
  static const bool done = [] {
    cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT);
    return true;
  }();
  (void)done;
}

class OpenCvSession final : public Session {
 public:
  OpenCvSession(ModelInfo info, cv::dnn::Net net)
      : info_(std::move(info)),
        net_(std::move(net)),
        context_(absl::StrCat("model '", info_.name, "': OpenCV DNN: ")) {
    for (const auto& out : info_.outputs) output_names_.push_back(out.name);
  }

  const ModelInfo& info() const override { return info_; }
  Backend backend() const override { return Backend::kOpenCv; }

  absl::StatusOr<NamedTensors> Run(const NamedTensors& inputs) override {
    LOOM_RETURN_IF_ERROR(ValidateInputs(info_, inputs));
    std::vector<cv::Mat> outs;
    try {
      for (const NamedTensor& in : inputs) {
        const int depth = ToCvDepth(in.tensor.dtype());
        if (depth < 0) {
          return absl::UnimplementedError(absl::StrCat(context_, "input '", in.name, "' dtype ",
                                                       DTypeName(in.tensor.dtype()),
                                                       " is not supported by OpenCV DNN"));
        }
        std::vector<int> sizes(in.tensor.shape().begin(), in.tensor.shape().end());
        // Wraps the tensor's buffer; setInput copies it into the network's blob.
        cv::Mat blob(static_cast<int>(sizes.size()), sizes.data(), depth, in.tensor.data());
        net_.setInput(blob, in.name);
      }
      net_.forward(outs, output_names_);
    } catch (const cv::Exception& e) {
      return absl::InternalError(absl::StrCat(context_, CvReason(e)));
    } catch (const std::bad_alloc&) {
      return absl::ResourceExhaustedError(absl::StrCat(context_, "out of memory"));
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat(context_, e.what()));
    } catch (...) {
      return absl::InternalError(absl::StrCat(context_, "unknown exception"));
    }
    if (outs.size() != info_.outputs.size()) {
      return absl::InternalError(absl::StrCat(context_, "returned ", outs.size(),
                                              " outputs, model declares ", info_.outputs.size()));
    }
    NamedTensors result;
    for (size_t i = 0; i < outs.size(); ++i) {
      cv::Mat mat = outs[i].isContinuous() ? outs[i] : outs[i].clone();
      const DType dtype = FromCvDepth(mat.depth());
      if (dtype == DType::kUnknown) {
        return absl::UnimplementedError(absl::StrCat(context_, "output '", info_.outputs[i].name,
                                                     "' has an unsupported element type"));
      }
      Shape shape(mat.size.p, mat.size.p + mat.dims);
      // Keep the cv::Mat (reference counted) alive as the tensor's owner: no copy.
      auto owner = std::make_shared<cv::Mat>(mat);
      result.push_back(
          {info_.outputs[i].name, Tensor::Adopt(dtype, std::move(shape), owner->data, owner)});
    }
    return result;
  }

 private:
  const ModelInfo info_;
  cv::dnn::Net net_;
  std::vector<std::string> output_names_;
  const std::string context_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Session>> CreateOpenCvSession(ModelInfo info,
                                                             const SessionOptions& options) {
  SilenceOpenCvLogging();
  if (options.intra_op_threads > 0) cv::setNumThreads(options.intra_op_threads);
  cv::dnn::Net net;
  std::string reason;
  try {
    net = cv::dnn::readNetFromONNX(info.path);
  } catch (const cv::Exception& e) {
    reason = CvReason(e);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("model '", info.name, "': OpenCV DNN ran out of memory loading it"));
  } catch (const std::exception& e) {
    reason = e.what();
  }
  if (!reason.empty()) {
    // A model that ONNX itself finds valid is one OpenCV does not support (UNIMPLEMENTED); one
    // that fails ONNX's checker is a broken file (INVALID_ARGUMENT).
    if (absl::Status valid = CheckOnnxModel(info.path); !valid.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("model '", info.name, "': ", valid.message(),
                                                     " (OpenCV DNN: ", reason, ")"));
    }
    return absl::UnimplementedError(
        absl::StrCat("model '", info.name, "': OpenCV DNN cannot load it: ", reason));
  }
  if (net.empty()) {
    return absl::UnimplementedError(
        absl::StrCat("model '", info.name, "': OpenCV DNN loaded an empty network"));
  }
  net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
  net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
  return std::unique_ptr<Session>(new OpenCvSession(std::move(info), std::move(net)));
}

}  // namespace loom
