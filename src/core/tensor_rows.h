// Row operations along dim 0: joining requests into one batch, and splitting a batch's outputs
// back into each request's rows. Used by the batcher, the pipeline's fan-out joins and `loom
// bench`. Every size is checked before it is copied: parts from different runs or different callers
// may disagree, and that is an error, never a write past a buffer.
#ifndef LOOM_CORE_TENSOR_ROWS_H_
#define LOOM_CORE_TENSOR_ROWS_H_

#include <string>
#include <vector>

#include "loom/tensor.h"

namespace loom {

// Concatenates `parts` along dim 0, tensor by tensor. Every part must hold the same tensor names
// in the same order, and each tensor the same dtype and the same dims after dim 0 (rank >= 1) as
// the first part's; otherwise INVALID_ARGUMENT naming the tensor, the part and both shapes. The
// joined tensor is checked against `limits`. A single part is returned as is (no copy).
absl::StatusOr<NamedTensors> ConcatRows(const std::vector<const NamedTensors*>& parts,
                                        const TensorLimits& limits = {});

// Splits each output along dim 0 into consecutive views of `rows[i]` rows (no copy). Fails,
// naming the model and output, when an output's dim 0 is not the total of `rows` (a model that
// declares a dynamic batch but does not keep rows independent). A single part gets the outputs
// as they are.
absl::StatusOr<std::vector<NamedTensors>> SplitRows(const std::string& model,
                                                    const NamedTensors& outputs,
                                                    const std::vector<int64_t>& rows);

}  // namespace loom

#endif  // LOOM_CORE_TENSOR_ROWS_H_
