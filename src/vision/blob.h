// Image → model input tensor, the way OpenCV's blobFromImage does it: resize to the model's H×W
// (optionally centre-cropping to keep the aspect), colour order, per-channel (x - mean) * scale /
// std, layout NCHW or NHWC, and an opaque alpha channel where the model takes 4 channels.
#ifndef LOOM_VISION_BLOB_H_
#define LOOM_VISION_BLOB_H_

#include <array>
#include <opencv2/core.hpp>

#include "loom/model_info.h"
#include "loom/tensor.h"

namespace loom::vision {

enum class ChannelOrder { kBGR, kRGB, kBGRA, kRGBA, kGray };
const char* ChannelOrderName(ChannelOrder order);
absl::StatusOr<ChannelOrder> ParseChannelOrder(const std::string& name);
int ChannelCount(ChannelOrder order);

struct BlobOptions {
  int width = 0;   // target width in pixels (> 0)
  int height = 0;  // target height in pixels (> 0)
  ImageLayout layout = ImageLayout::kNCHW;
  ChannelOrder channels = ChannelOrder::kRGB;
  // Per output channel (in output order; alpha included): value = (pixel - mean) * scale / std.
  double scale = 1.0 / 255.0;
  std::array<double, 4> mean = {0, 0, 0, 0};
  std::array<double, 4> std = {1, 1, 1, 1};
  // Resize keeping the aspect ratio, then crop the centre (blobFromImage's crop=true).
  bool center_crop = false;
  // Resize keeping the aspect ratio to fit inside, centred, the rest filled with pad_value
  // (in pixel units, before normalisation). Exclusive with center_crop.
  bool letterbox = false;
  double pad_value = 0;
  // Applied to the resized image before the channel order: kSobel replaces it with the gradient
  // magnitude of its gray levels (3x3 Sobel in x and y, sqrt(dx^2 + dy^2), saturated to 8 bits),
  // the edge map some classifiers are trained on; every output channel then carries it.
  enum class Filter { kNone, kSobel };
  Filter filter = Filter::kNone;
};

// Where a pixel of the model's input came from in the image: image = (input - offset) / scale.
struct ImageTransform {
  double scale_x = 1, scale_y = 1;    // input pixels per image pixel
  double offset_x = 0, offset_y = 0;  // input pixels of padding (letterbox) or crop (negative)
  cv::Point2f ToImage(cv::Point2f input) const {
    return {static_cast<float>((input.x - offset_x) / scale_x),
            static_cast<float>((input.y - offset_y) / scale_y)};
  }
};
// The transform BlobFromImage applies to an image of `image` size under `options`.
ImageTransform TransformFor(cv::Size image, const BlobOptions& options);

// Defaults for a model input: layout and channel order from its shape (3 → RGB, 4 → RGBA,
// 1 → gray), size from its fixed H and W, else from `fallback_size` (width, height).
absl::StatusOr<BlobOptions> BlobOptionsFor(const TensorInfo& input, cv::Size fallback_size);

// Converts one 8-bit BGR (or gray, or BGRA) image into a [1,C,H,W] or [1,H,W,C] f32 tensor.
absl::StatusOr<Tensor> BlobFromImage(const cv::Mat& image, const BlobOptions& options);

// Reads an image file (any format OpenCV decodes) as 8-bit BGR. The error names the file.
absl::StatusOr<cv::Mat> ReadImage(const std::string& path);

}  // namespace loom::vision

#endif  // LOOM_VISION_BLOB_H_
