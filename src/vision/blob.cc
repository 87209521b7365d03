#include "vision/blob.h"

#include <cmath>
#include <filesystem>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace loom::vision {

const char* ChannelOrderName(ChannelOrder order) {
  switch (order) {
    case ChannelOrder::kBGR: return "BGR";
    case ChannelOrder::kRGB: return "RGB";
    case ChannelOrder::kBGRA: return "BGRA";
    case ChannelOrder::kRGBA: return "RGBA";
    case ChannelOrder::kGray: return "GRAY";
  }
  return "?";
}

absl::StatusOr<ChannelOrder> ParseChannelOrder(const std::string& name) {
  for (ChannelOrder o : {ChannelOrder::kBGR, ChannelOrder::kRGB, ChannelOrder::kBGRA,
                         ChannelOrder::kRGBA, ChannelOrder::kGray}) {
    if (absl::EqualsIgnoreCase(name, ChannelOrderName(o))) return o;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown channel order '", name, "' (expected BGR, RGB, BGRA, RGBA or GRAY)"));
}

int ChannelCount(ChannelOrder order) {
  switch (order) {
    case ChannelOrder::kBGR:
    case ChannelOrder::kRGB: return 3;
    case ChannelOrder::kBGRA:
    case ChannelOrder::kRGBA: return 4;
    case ChannelOrder::kGray: return 1;
  }
  return 3;
}

absl::StatusOr<BlobOptions> BlobOptionsFor(const TensorInfo& input, cv::Size fallback_size) {
  const ImageLayout layout = input.image_layout();
  if (layout == ImageLayout::kNone) {
    return absl::InvalidArgumentError(absl::StrCat("input '", input.name, "' ",
                                                   input.Describe(), " is not an image input"));
  }
  BlobOptions options;
  options.layout = layout;
  const Dim& c = input.shape[layout == ImageLayout::kNCHW ? 1 : 3];
  const Dim& h = input.shape[layout == ImageLayout::kNCHW ? 2 : 1];
  const Dim& w = input.shape[layout == ImageLayout::kNCHW ? 3 : 2];
  options.channels = c.value == 4   ? ChannelOrder::kRGBA
                     : c.value == 1 ? ChannelOrder::kGray
                                    : ChannelOrder::kRGB;
  options.height = h.is_dynamic() ? fallback_size.height : static_cast<int>(h.value);
  options.width = w.is_dynamic() ? fallback_size.width : static_cast<int>(w.value);
  if (options.width <= 0 || options.height <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("input '", input.name, "' ",
                                                   input.Describe(),
                                                   ": height/width are dynamic; give a size"));
  }
  return options;
}

namespace {

absl::StatusOr<Tensor> BlobFromImageImpl(const cv::Mat& image, const BlobOptions& options);

}  // namespace

absl::StatusOr<Tensor> BlobFromImage(const cv::Mat& image, const BlobOptions& options) {
  // The output, and the largest intermediate (the centre crop's scaled image), are checked
  // before OpenCV allocates them; OpenCV's own failures become statuses here.
  LOOM_RETURN_IF_ERROR(CheckShape(DType::kFloat32, {1, 4, options.height, options.width}));
  if (options.center_crop && !image.empty()) {
    const double f = std::max(static_cast<double>(options.width) / image.cols,
                              static_cast<double>(options.height) / image.rows);
    const double pixels = f * image.cols * f * image.rows;
    if (pixels > static_cast<double>(TensorLimits().max_elements) / 4) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "a centre crop of a %dx%d image to %dx%d scales it to %.4g pixels, over the limit",
          image.cols, image.rows, options.width, options.height, pixels));
    }
  }
  try {
    return BlobFromImageImpl(image, options);
  } catch (const cv::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("image to tensor: OpenCV: ", e.err));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "image to tensor: out of memory for %dx%d", options.width, options.height));
  }
}

namespace {

absl::StatusOr<Tensor> BlobFromImageImpl(const cv::Mat& image, const BlobOptions& options) {
  if (image.empty() || image.depth() != CV_8U ||
      (image.channels() != 1 && image.channels() != 3 && image.channels() != 4)) {
    return absl::InvalidArgumentError("BlobFromImage needs a non-empty 8-bit 1/3/4-channel image");
  }
  if (options.width <= 0 || options.height <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("blob size must be positive, got ",
                                                   options.width, "x", options.height));
  }
  cv::Mat resized;
  const cv::Size target(options.width, options.height);
  if (options.letterbox) {
    const ImageTransform t = TransformFor(image.size(), options);
    const cv::Size inner(std::max(1, static_cast<int>(std::lround(image.cols * t.scale_x))),
                         std::max(1, static_cast<int>(std::lround(image.rows * t.scale_y))));
    cv::Mat scaled;
    cv::resize(image, scaled, inner, 0, 0, cv::INTER_LINEAR);
    const int left = static_cast<int>(t.offset_x), top = static_cast<int>(t.offset_y);
    cv::copyMakeBorder(scaled, resized, top, target.height - inner.height - top, left,
                       target.width - inner.width - left, cv::BORDER_CONSTANT, cv::Scalar::all(options.pad_value));
  } else if (options.center_crop) {
    const double f = std::max(static_cast<double>(target.width) / image.cols,
                              static_cast<double>(target.height) / image.rows);
    cv::Mat scaled;
    cv::resize(image, scaled, cv::Size(), f, f, cv::INTER_LINEAR);
    const cv::Rect roi((scaled.cols - target.width) / 2, (scaled.rows - target.height) / 2,
                       target.width, target.height);
    resized = scaled(roi);
  } else if (image.size() != target) {
    cv::resize(image, resized, target, 0, 0, cv::INTER_LINEAR);
  } else {
    resized = image;
  }

  // Convert to the requested channel order.
  const int in_c = resized.channels();
  int code = -1;
  switch (options.channels) {
    case ChannelOrder::kBGR: code = in_c == 1 ? cv::COLOR_GRAY2BGR : in_c == 4 ? cv::COLOR_BGRA2BGR : -1; break;
    case ChannelOrder::kRGB: code = in_c == 1 ? cv::COLOR_GRAY2RGB : in_c == 4 ? cv::COLOR_BGRA2RGB : cv::COLOR_BGR2RGB; break;
    case ChannelOrder::kBGRA: code = in_c == 1 ? cv::COLOR_GRAY2BGRA : in_c == 3 ? cv::COLOR_BGR2BGRA : -1; break;
    case ChannelOrder::kRGBA: code = in_c == 1 ? cv::COLOR_GRAY2RGBA : in_c == 3 ? cv::COLOR_BGR2RGBA : cv::COLOR_BGRA2RGBA; break;
    case ChannelOrder::kGray: code = in_c == 3 ? cv::COLOR_BGR2GRAY : in_c == 4 ? cv::COLOR_BGRA2GRAY : -1; break;
  }
  cv::Mat ordered;
  if (code >= 0) {
    cv::cvtColor(resized, ordered, code);
  } else {
    ordered = resized;
  }
  const int channels = ordered.channels();

  // Per-channel affine map: v = (p - mean) * scale / std = p * alpha + beta.
  cv::Mat as_float;
  ordered.convertTo(as_float, CV_32F);
  std::vector<cv::Mat> planes;
  cv::split(as_float, planes);
  for (int ch = 0; ch < channels; ++ch) {
    const double alpha = options.scale / options.std[ch];
    const double beta = -options.mean[ch] * alpha;
    planes[ch].convertTo(planes[ch], CV_32F, alpha, beta);
  }

  const int h = options.height, w = options.width;
  if (options.layout == ImageLayout::kNHWC) {
    Tensor out = Tensor::Allocate(DType::kFloat32, {1, h, w, channels});  // [1,H,W,C] f32
    cv::Mat dst(h, w, CV_32FC(channels), out.data());
    cv::merge(planes, dst);
    return out;
  }
  Tensor out = Tensor::Allocate(DType::kFloat32, {1, channels, h, w});  // [1,C,H,W] f32
  auto* base = out.data_as<float>();
  for (int ch = 0; ch < channels; ++ch) {
    cv::Mat dst(h, w, CV_32F, base + static_cast<size_t>(ch) * h * w);
    planes[ch].copyTo(dst);
  }
  return out;
}

}  // namespace

ImageTransform TransformFor(cv::Size image, const BlobOptions& options) {
  ImageTransform t;
  const double fx = static_cast<double>(options.width) / std::max(image.width, 1);
  const double fy = static_cast<double>(options.height) / std::max(image.height, 1);
  if (options.letterbox) {
    t.scale_x = t.scale_y = std::min(fx, fy);
    t.offset_x = std::floor((options.width - std::lround(image.width * t.scale_x)) / 2.0);
    t.offset_y = std::floor((options.height - std::lround(image.height * t.scale_y)) / 2.0);
  } else if (options.center_crop) {
    t.scale_x = t.scale_y = std::max(fx, fy);
    t.offset_x = -std::floor((image.width * t.scale_x - options.width) / 2.0);
    t.offset_y = -std::floor((image.height * t.scale_y - options.height) / 2.0);
  } else {
    t.scale_x = fx;
    t.scale_y = fy;
  }
  return t;
}

absl::StatusOr<cv::Mat> ReadImage(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::NotFoundError(absl::StrCat("image file '", path, "' does not exist"));
  }
  cv::Mat image;
  try {
    image = cv::imread(path, cv::IMREAD_COLOR);
  } catch (const cv::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("image file '", path, "' cannot be decoded: ", e.err));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat("image file '", path, "': out of memory decoding it"));
  }
  if (image.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "image file '", path, "' cannot be decoded (not an image OpenCV reads, or corrupt)"));
  }
  return image;
}

}  // namespace loom::vision
