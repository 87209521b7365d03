// Inputs for a model when no real ones are at hand: the engine's warm-up and cost measurement,
// `loom run --random`, the hostile tests. Dynamic dims are resolved from a ShapeSpec; every
// resolved shape is checked against TensorLimits before it is allocated (a model file may declare
// any size).
#ifndef LOOM_RUNTIME_WARMUP_INPUTS_H_
#define LOOM_RUNTIME_WARMUP_INPUTS_H_

#include <cstdint>
#include <functional>
#include <optional>

#include "loom/model_info.h"
#include "loom/tensor.h"

namespace loom {

struct ShapeSpec {
  int64_t batch = 1;                  // a dynamic dim 0
  int64_t height = 320, width = 320;  // dynamic spatial dims of an image-like input
  int64_t other_dynamic_dims = 1;     // every other dynamic dim
};

// The concrete shape of `input` under `spec`.
Shape ResolveShape(const TensorInfo& input, const ShapeSpec& spec);

// Supplies input `index` of a model, of `shape` (already checked against the limits), in place of
// random values; nothing: random values after all.
using InputOverride =
    std::function<absl::StatusOr<std::optional<Tensor>>(size_t index, const Shape& shape)>;

// Every input of the model: deterministic pseudo-random values (FillRandom, seed + the input's
// index), shapes from ResolveShape, except where `override` supplies one (vision::MakeInputs: an
// image). INVALID_ARGUMENT naming the model and input when a shape is over `limits`;
// UNIMPLEMENTED for an input dtype Loom cannot generate.
absl::StatusOr<NamedTensors> RandomInputs(const ModelInfo& info, const ShapeSpec& spec,
                                          uint64_t seed = 1, const TensorLimits& limits = {},
                                          const InputOverride& override = nullptr);

}  // namespace loom

#endif  // LOOM_RUNTIME_WARMUP_INPUTS_H_
