#include "vision/blob.h"

#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace loom::vision {

const char* ChannelOrderName(ChannelOrder order) {
  switch (order) {
    case ChannelOrder::kBGR:
      return "BGR";
    case ChannelOrder::kRGB:
      return "RGB";
    case ChannelOrder::kBGRA:
      return "BGRA";
    case ChannelOrder::kRGBA:
      return "RGBA";
    case ChannelOrder::kGray:
      return "GRAY";
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
    case ChannelOrder::kRGB:
      return 3;
    case ChannelOrder::kBGRA:
    case ChannelOrder::kRGBA:
      return 4;
    case ChannelOrder::kGray:
      return 1;
  }
  return 3;
}

absl::StatusOr<BlobOptions> BlobOptionsFor(const TensorInfo& input, cv::Size fallback_size) {
  const ImageLayout layout = input.image_layout();
  if (layout == ImageLayout::kNone) {
    return absl::InvalidArgumentError(
        absl::StrCat("input '", input.name, "' ", input.Describe(), " is not an image input"));
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
    return absl::InvalidArgumentError(absl::StrCat("input '", input.name, "' ", input.Describe(),
                                                   ": height/width are dynamic; give a size"));
  }
  return options;
}

namespace {

absl::StatusOr<Tensor> BlobFromImageImpl(const cv::Mat& image, const BlobOptions& options);
Tensor Normalize(const cv::Mat& image, const BlobOptions& options);

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
    return absl::ResourceExhaustedError(
        absl::StrFormat("image to tensor: out of memory for %dx%d", options.width, options.height));
  }
}

namespace {

// The 8-bit gradient magnitude of an image's gray levels (BlobOptions::Filter::kSobel).
cv::Mat SobelMagnitude(const cv::Mat& image) {
  cv::Mat gray = image;
  if (image.channels() == 3) cv::cvtColor(image, gray, cv::COLOR_BGR2GRAY);
  if (image.channels() == 4) cv::cvtColor(image, gray, cv::COLOR_BGRA2GRAY);
  cv::Mat dx, dy, magnitude, out;
  cv::Sobel(gray, dx, CV_32F, 1, 0, 3);
  cv::Sobel(gray, dy, CV_32F, 0, 1, 3);
  cv::magnitude(dx, dy, magnitude);
  magnitude.convertTo(out, CV_8U);  // rounded, saturated at 255
  return out;
}

absl::StatusOr<Tensor> BlobFromImageImpl(const cv::Mat& image, const BlobOptions& options) {
  if (image.empty() || image.depth() != CV_8U ||
      (image.channels() != 1 && image.channels() != 3 && image.channels() != 4)) {
    return absl::InvalidArgumentError("BlobFromImage needs a non-empty 8-bit 1/3/4-channel image");
  }
  if (options.width <= 0 || options.height <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("blob size must be positive, got ", options.width, "x", options.height));
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
                       target.width - inner.width - left, cv::BORDER_CONSTANT,
                       cv::Scalar::all(options.pad_value));
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

  if (options.filter == BlobOptions::Filter::kSobel) resized = SobelMagnitude(resized);
  if (options.channels == ChannelOrder::kGray && resized.channels() != 1) {
    cv::Mat gray;
    cv::cvtColor(resized, gray, resized.channels() == 3 ? cv::COLOR_BGR2GRAY : cv::COLOR_BGRA2GRAY);
    resized = gray;
  }
  return Normalize(resized, options);
}

// The resized 8-bit image (1, 3 or 4 channels; gray already when the model takes gray) into the
// tensor in one pass: per output channel, the source channel it reads (or an opaque alpha) and a
// 256-entry table of (p - mean) * scale / std.
Tensor Normalize(const cv::Mat& image, const BlobOptions& options) {
  const int in_c = image.channels();
  const int out_c = ChannelCount(options.channels);
  constexpr int kOpaque = -1;  // an alpha channel the image does not have: 255
  std::array<int, 4> source{};
  switch (options.channels) {
    case ChannelOrder::kBGR:
      source = {0, 1, 2, 0};
      break;
    case ChannelOrder::kRGB:
      source = {2, 1, 0, 0};
      break;
    case ChannelOrder::kBGRA:
      source = {0, 1, 2, 3};
      break;
    case ChannelOrder::kRGBA:
      source = {2, 1, 0, 3};
      break;
    case ChannelOrder::kGray:
      source = {0, 0, 0, 0};
      break;
  }
  for (int c = 0; c < out_c; ++c) {
    if (in_c == 1 && source[c] != 3) source[c] = 0;  // gray into every colour channel
    if (source[c] == 3 && in_c != 4) source[c] = kOpaque;
  }
  std::array<std::array<float, 256>, 4> table;
  for (int c = 0; c < out_c; ++c) {
    const double alpha = options.scale / options.std[c];
    for (int p = 0; p < 256; ++p) table[c][p] = static_cast<float>((p - options.mean[c]) * alpha);
  }
  const int h = options.height, w = options.width;
  const bool nhwc = options.layout == ImageLayout::kNHWC;
  Tensor out =
      Tensor::Allocate(DType::kFloat32, nhwc ? Shape{1, h, w, out_c} : Shape{1, out_c, h, w});
  float* base = out.data_as<float>();
  const size_t plane = static_cast<size_t>(h) * w;
  for (int y = 0; y < h; ++y) {
    const uint8_t* row = image.ptr<uint8_t>(y);
    for (int c = 0; c < out_c; ++c) {
      const std::array<float, 256>& t = table[c];
      const int s = source[c];
      // [1,H,W,C]: element (y, x, c); [1,C,H,W]: element (c, y, x).
      float* dst = nhwc ? base + static_cast<size_t>(y) * w * out_c + c
                        : base + c * plane + static_cast<size_t>(y) * w;
      const ptrdiff_t step = nhwc ? out_c : 1;
      if (s == kOpaque) {
        for (int x = 0; x < w; ++x) dst[x * step] = t[255];
      } else {
        for (int x = 0; x < w; ++x) dst[x * step] = t[row[x * in_c + s]];
      }
    }
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

namespace {

// libjpeg decodes a JPEG cut short (a copy interrupted, a download stopped) into an image whose
// missing rows are gray, and OpenCV only warns: a file that starts as a JPEG must end with its
// end-of-image marker (trailing zero padding allowed), or it is refused.
absl::Status CheckJpegEnd(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char head[2] = {0, 0};
  if (!in.read(reinterpret_cast<char*>(head), 2) || head[0] != 0xFF || head[1] != 0xD8)
    return absl::OkStatus();
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff tail = std::min<std::streamoff>(size, 4096);
  std::string bytes(static_cast<size_t>(tail), '\0');
  in.seekg(size - tail);
  if (!in.read(bytes.data(), tail)) return absl::OkStatus();  // unreadable: imread says why
  size_t end = bytes.size();
  while (end > 0 && bytes[end - 1] == '\0') --end;
  if (end >= 2 && static_cast<unsigned char>(bytes[end - 2]) == 0xFF &&
      static_cast<unsigned char>(bytes[end - 1]) == 0xD9) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("image file '", path,
                   "' is a truncated JPEG (it does not end with the end-of-image marker)"));
}

}  // namespace

absl::StatusOr<cv::Mat> ReadImage(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::NotFoundError(absl::StrCat("image file '", path, "' does not exist"));
  }
  if (absl::Status whole = CheckJpegEnd(path); !whole.ok()) return whole;
  cv::Mat image;
  try {
    image = cv::imread(path, cv::IMREAD_COLOR);
  } catch (const cv::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("image file '", path, "' cannot be decoded: ", e.err));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("image file '", path, "': out of memory decoding it"));
  }
  if (image.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "image file '", path, "' cannot be decoded (not an image OpenCV reads, or corrupt)"));
  }
  return image;
}

}  // namespace loom::vision
