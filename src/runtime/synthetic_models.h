// Small ONNX graphs written through libonnx, so that tests and benchmarks know the exact answer.
#ifndef LOOM_RUNTIME_SYNTHETIC_MODELS_H_
#define LOOM_RUNTIME_SYNTHETIC_MODELS_H_

#include <cstdint>
#include <string>

#include "loom/status.h"

namespace loom {

// y = x + 1, with x and y [N, width] f32 and N a dynamic batch ("batch"); width <= 0 makes the
// width dynamic too ("width"). Input "x", output "y".
absl::Status WriteAddModel(const std::string& path, int64_t width);

// y = table[index], with index [N, 1] i64 and y [N, 1] f32, table[i] = 10 * i for i < table_size.
// An index outside [-table_size, table_size) makes ONNX Runtime fail the run: a real, exactly
// controllable run failure. Input "index", output "y".
absl::Status WriteGatherModel(const std::string& path, int64_t table_size);

// y = mean of x over the batch (ReduceMean, axes [0], keepdims), while the graph declares y as
// [batch, width] like x [batch, width]: a model exported with a wrong batch declaration. Batching
// two requests of it must fail (its output cannot be split back), not answer wrong rows.
absl::Status WritePooledModel(const std::string& path, int64_t width);

}  // namespace loom

#endif  // LOOM_RUNTIME_SYNTHETIC_MODELS_H_
