#include "vision/model_inputs.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/tensor_util.h"
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
    const int want = static_cast<int>(
        input.shape[options.layout == ImageLayout::kNCHW ? 1 : 3].value);
    if (ChannelCount(*spec.channels) != want) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", input.name, "' takes ", want, " channels; channel order ",
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
  return ShapeSpec{.batch = spec.batch, .height = spatial.height, .width = spatial.width,
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
  NamedTensors inputs;
  for (size_t i = 0; i < info.inputs.size(); ++i) {
    const TensorInfo& input = info.inputs[i];
    if (input.dtype == DType::kUnknown || input.dtype == DType::kFloat16) {
      return absl::UnimplementedError(absl::StrCat("model '", info.name, "' input '", input.name,
                                                   "' has dtype ", DTypeName(input.dtype),
                                                   ", which Loom cannot generate"));
    }
    const Shape shape = ResolveShape(input, spec);
    if (static_cast<int>(i) != image_input) {
      auto t = Tensor::TryAllocate(input.dtype, shape);
      if (!t.ok()) {
        return absl::Status(t.status().code(), absl::StrCat("model '", info.name, "' input '",
                                                            input.name, "': ", t.status().message()));
      }
      FillRandom(*t, spec.seed + i);
      inputs.push_back({input.name, std::move(*t)});
      continue;
    }
    LOOM_ASSIGN_OR_RETURN(BlobOptions options, OptionsFor(input, spec));
    LOOM_ASSIGN_OR_RETURN(Tensor one, BlobFromImage(spec.image, options));
    if (shape[0] == 1) {
      inputs.push_back({input.name, std::move(one)});
      continue;
    }
    // Batch > 1: the same image in every row.
    Shape batched = one.shape();
    batched[0] = shape[0];
    LOOM_ASSIGN_OR_RETURN(Tensor t, Tensor::TryAllocate(DType::kFloat32, batched));
    for (int64_t row = 0; row < shape[0]; ++row) {
      std::memcpy(static_cast<std::byte*>(t.data()) + row * one.byte_size(), one.data(),
                  one.byte_size());
    }
    inputs.push_back({input.name, std::move(t)});
  }
  return inputs;
}

std::string DescribePreprocessing(const ModelInfo& info, const InputSpec& spec) {
  const int i = FirstImageInput(info);
  if (spec.image.empty() || i < 0) return "random values";
  auto options = OptionsFor(info.inputs[i], spec);
  if (!options.ok()) return std::string(options.status().message());
  const std::string mean = absl::StrFormat("%g,%g,%g", options->mean[0], options->mean[1], options->mean[2]);
  const std::string std = absl::StrFormat("%g,%g,%g", options->std[0], options->std[1], options->std[2]);
  return absl::StrFormat("%s %s %dx%d, (x - [%s]) * %g / [%s]%s", ChannelOrderName(options->channels),
                         ImageLayoutName(options->layout), options->width, options->height, mean,
                         options->scale, std, options->center_crop ? ", centre crop" : "");
}

}  // namespace loom::vision
