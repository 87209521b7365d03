#include "runtime/warmup_inputs.h"

#include "absl/strings/str_cat.h"
#include "core/tensor_util.h"

namespace loom {

Shape ResolveShape(const TensorInfo& input, const ShapeSpec& spec) {
  Shape shape;
  const ImageLayout layout = input.image_layout();
  for (size_t d = 0; d < input.shape.size(); ++d) {
    const Dim& dim = input.shape[d];
    if (!dim.is_dynamic()) {
      shape.push_back(dim.value);
    } else if (d == 0) {
      shape.push_back(spec.batch);
    } else if (layout == ImageLayout::kNCHW && (d == 2 || d == 3)) {
      shape.push_back(d == 2 ? spec.height : spec.width);
    } else if (layout == ImageLayout::kNHWC && (d == 1 || d == 2)) {
      shape.push_back(d == 1 ? spec.height : spec.width);
    } else {
      shape.push_back(spec.other_dynamic_dims);
    }
  }
  return shape;
}

absl::StatusOr<NamedTensors> RandomInputs(const ModelInfo& info, const ShapeSpec& spec,
                                          uint64_t seed, const TensorLimits& limits) {
  NamedTensors inputs;
  for (size_t i = 0; i < info.inputs.size(); ++i) {
    const TensorInfo& input = info.inputs[i];
    if (input.dtype == DType::kUnknown || input.dtype == DType::kFloat16) {
      return absl::UnimplementedError(absl::StrCat("model '", info.name, "' input '", input.name,
                                                   "' has dtype ", DTypeName(input.dtype),
                                                   ", which Loom cannot generate"));
    }
    auto tensor = Tensor::TryAllocate(input.dtype, ResolveShape(input, spec), limits);
    if (!tensor.ok()) {
      return absl::Status(tensor.status().code(), absl::StrCat("model '", info.name, "' input '",
                                                               input.name, "': ", tensor.status().message()));
    }
    FillRandom(*tensor, seed + i);
    inputs.push_back({input.name, std::move(*tensor)});
  }
  return inputs;
}

}  // namespace loom
