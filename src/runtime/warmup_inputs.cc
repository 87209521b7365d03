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
                                          uint64_t seed, const TensorLimits& limits,
                                          const InputOverride& override) {
  NamedTensors inputs;
  for (size_t i = 0; i < info.inputs.size(); ++i) {
    const TensorInfo& input = info.inputs[i];
    const std::string who = absl::StrCat("model '", info.name, "' input '", input.name, "'");
    if (input.dtype == DType::kUnknown || input.dtype == DType::kFloat16) {
      return absl::UnimplementedError(
          absl::StrCat(who, " has dtype ", DTypeName(input.dtype), ", which Loom cannot generate"));
    }
    const Shape shape = ResolveShape(input, spec);
    if (absl::Status s = CheckShape(input.dtype, shape, limits); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat(who, ": ", s.message()));
    }
    if (override) {
      LOOM_ASSIGN_OR_RETURN(std::optional<Tensor> given, override(i, shape));
      if (given) {
        inputs.push_back({input.name, std::move(*given)});
        continue;
      }
    }
    auto tensor = Tensor::TryAllocate(input.dtype, shape, limits);
    if (!tensor.ok()) {
      return absl::Status(tensor.status().code(),
                          absl::StrCat(who, ": ", tensor.status().message()));
    }
    FillRandom(*tensor, seed + i);
    inputs.push_back({input.name, std::move(*tensor)});
  }
  return inputs;
}

}  // namespace loom
