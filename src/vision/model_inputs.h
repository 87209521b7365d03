// Builds a model's full set of inputs from an image (or from random data), resolving dynamic dims:
// the image-like input gets the image as blobFromImage would make it; any other input, and every
// input when no image is given, gets deterministic random values.
#ifndef LOOM_VISION_MODEL_INPUTS_H_
#define LOOM_VISION_MODEL_INPUTS_H_

#include <array>
#include <opencv2/core.hpp>
#include <optional>

#include "loom/model_info.h"
#include "loom/tensor.h"
#include "runtime/warmup_inputs.h"
#include "vision/blob.h"

namespace loom::vision {

struct InputSpec {
  cv::Mat image;  // 8-bit BGR; empty = random inputs
  // Value for a dynamic dim 0.
  int batch = 1;
  // Size (width, height) for dynamic spatial dims of an image input. 0 = the image's own size
  // rounded up to a multiple of 32 (what detectors such as PP-OCR expect), or 320 without an image.
  cv::Size size{0, 0};
  // Dims still dynamic after that (non-image inputs) take this value.
  int other_dynamic_dims = 1;
  uint64_t seed = 1;
  // Every input's shape (the image's included) is checked against these before it is made.
  TensorLimits limits = {};

  // Overrides of the per-model defaults of BlobOptionsFor.
  std::optional<ChannelOrder> channels;
  std::optional<double> scale;
  std::optional<std::array<double, 4>> mean;
  std::optional<std::array<double, 4>> std;
  bool center_crop = false;
};

// The concrete shape of `input` under `spec` (dynamic dims resolved as InputSpec says).
Shape ResolveShape(const TensorInfo& input, const InputSpec& spec);
ShapeSpec ShapeSpecOf(const InputSpec& spec);

// The inputs for one run of the model (RandomInputs, with the image where there is one). With an
// image, the first image-like input takes it; it is an error (naming the model) to give an image
// to a model with no image-like input.
absl::StatusOr<NamedTensors> MakeInputs(const ModelInfo& info, const InputSpec& spec);

// Describes how the image input was made ("RGBA NHWC 320x320, (x-127.5)*0.00784").
std::string DescribePreprocessing(const ModelInfo& info, const InputSpec& spec);

}  // namespace loom::vision

#endif  // LOOM_VISION_MODEL_INPUTS_H_
