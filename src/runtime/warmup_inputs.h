// Inputs for a model when no real ones are at hand: the engine's warm-up and cost measurement,
// `loom run --random`, the hostile tests. Dynamic dims are resolved from a ShapeSpec; every
// resolved shape is checked against TensorLimits before it is allocated (a model file may declare
// any size).
#ifndef LOOM_RUNTIME_WARMUP_INPUTS_H_
#define LOOM_RUNTIME_WARMUP_INPUTS_H_

#include <cstdint>

#include "loom/model_info.h"
#include "loom/tensor.h"

namespace loom {

struct ShapeSpec {
  int64_t batch = 1;                 // a dynamic dim 0
  int64_t height = 320, width = 320;  // dynamic spatial dims of an image-like input
  int64_t other_dynamic_dims = 1;    // every other dynamic dim
};

// The concrete shape of `input` under `spec`.
Shape ResolveShape(const TensorInfo& input, const ShapeSpec& spec);

// Deterministic pseudo-random values (FillRandom) for every input, shapes from ResolveShape.
// INVALID_ARGUMENT naming the model and input when a shape is over `limits`; UNIMPLEMENTED for an
// input dtype Loom cannot generate.
absl::StatusOr<NamedTensors> RandomInputs(const ModelInfo& info, const ShapeSpec& spec,
                                          uint64_t seed = 1, const TensorLimits& limits = {});

}  // namespace loom

#endif  // LOOM_RUNTIME_WARMUP_INPUTS_H_
