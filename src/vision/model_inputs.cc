#include "vision/model_inputs.h"

#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/warmup_inputs.h"

namespace loom::vision {
namespace {

int RoundUp32(int v) { return (v + 31) / 32 * 32; }

cv::Size SpatialSize(const InputSpec& spec) {
  if (spec.size.width > 0 && spec.size.height > 0) return spec.size;
  if (!spec.image.empty()) return {RoundUp32(spec.image.cols), RoundUp32(spec.image.rows)};
  return {320, 320};
}

int FirstImageInput(const ModelInfo& info) {
  for (size_t i = 0; i < info.inputs.size(); ++i) {
    if (info.inputs[i].image_layout() != ImageLayout::kNone &&
        info.inputs[i].dtype == DType::kFloat32) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

absl::StatusOr<BlobOptions> OptionsFor(const TensorInfo& input, const InputSpec& spec) {
  LOOM_ASSIGN_OR_RETURN(BlobOptions options, BlobOptionsFor(input, SpatialSize(spec)));
  if (spec.channels) {
    const int want =
        static_cast<int>(input.shape[options.layout == ImageLayout::kNCHW ? 1 : 3].value);
    if (ChannelCount(*spec.channels) != want) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", input.name, "' takes ", want, " channels; channel order ",
                       ChannelOrderName(*spec.channels), " has ", ChannelCount(*spec.channels)));
    }
    options.channels = *spec.channels;
  }
  if (spec.scale) options.scale = *spec.scale;
  if (spec.mean) options.mean = *spec.mean;
  if (spec.std) options.std = *spec.std;
  options.center_crop = spec.center_crop;
  return options;
}

}  // namespace

ShapeSpec ShapeSpecOf(const InputSpec& spec) {
  const cv::Size spatial = SpatialSize(spec);
  return ShapeSpec{.batch = spec.batch,
                   .height = spatial.height,
                   .width = spatial.width,
                   .other_dynamic_dims = spec.other_dynamic_dims};
}

Shape ResolveShape(const TensorInfo& input, const InputSpec& spec) {
  return loom::ResolveShape(input, ShapeSpecOf(spec));
}

absl::StatusOr<NamedTensors> MakeInputs(const ModelInfo& info, const InputSpec& spec) {
  const int image_input = spec.image.empty() ? -1 : FirstImageInput(info);
  if (!spec.image.empty() && image_input < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", info.name, "' has no image-like input (rank 4, f32, 1/3/4 channels)"));
  }
  auto image = [&](size_t i, const Shape& shape) -> absl::StatusOr<std::optional<Tensor>> {
    if (static_cast<int>(i) != image_input) return std::nullopt;  // random values
    LOOM_ASSIGN_OR_RETURN(BlobOptions options, OptionsFor(info.inputs[i], spec));
    LOOM_ASSIGN_OR_RETURN(Tensor one, BlobFromImage(spec.image, options));
    if (shape[0] == 1) return one;
    // Batch > 1: the same image in every row.
    Shape batched = one.shape();
    batched[0] = shape[0];
    LOOM_ASSIGN_OR_RETURN(Tensor t, Tensor::TryAllocate(DType::kFloat32, batched, spec.limits));
    for (int64_t row = 0; row < shape[0]; ++row) {
      std::memcpy(static_cast<std::byte*>(t.data()) + row * one.byte_size(), one.data(),
                  one.byte_size());
    }
    return t;
  };
  return RandomInputs(info, ShapeSpecOf(spec), spec.seed, spec.limits, image);
}

std::string DescribePreprocessing(const ModelInfo& info, const InputSpec& spec) {
  const int i = FirstImageInput(info);
  if (spec.image.empty() || i < 0) return "random values";
  auto options = OptionsFor(info.inputs[i], spec);
  if (!options.ok()) return std::string(options.status().message());
  const std::string mean =
      absl::StrFormat("%g,%g,%g", options->mean[0], options->mean[1], options->mean[2]);
  const std::string std =
      absl::StrFormat("%g,%g,%g", options->std[0], options->std[1], options->std[2]);
  return absl::StrFormat("%s %s %dx%d, (x - [%s]) * %g / [%s]%s",
                         ChannelOrderName(options->channels), ImageLayoutName(options->layout),
                         options->width, options->height, mean, options->scale, std,
                         options->center_crop ? ", centre crop" : "");
}

}  // namespace loom::vision
