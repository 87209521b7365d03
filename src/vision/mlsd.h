// M-LSD (line segment detection) outputs → segments. The model takes RGBA in 0..255 (alpha 1) at
// S×S and gives, on an (S/2)×(S/2) grid, "scores" [1,G,G,1] (centre-point confidence) and
// "offsets" [1,G,G,4] (start dx, dy and end dx, dy from the cell, in grid units).
#ifndef LOOM_VISION_MLSD_H_
#define LOOM_VISION_MLSD_H_

#include <vector>

#include "loom/tensor.h"

namespace loom::vision {

struct LineSegment {
  float x1 = 0, y1 = 0, x2 = 0, y2 = 0;
  float score = 0;
  float length() const;
};

struct MlsdOptions {
  float score_threshold = 0.1f;
  float min_length = 20;  // in model-input pixels
  // Output coordinates: the model-input frame scaled to this size ({0,0}: model-input pixels).
  float image_width = 0, image_height = 0;
};

// Cells at or above the threshold that are the maximum of their 3×3 neighbourhood become segments,
// highest score first. INVALID_ARGUMENT naming the tensor if the shapes are not as above.
absl::StatusOr<std::vector<LineSegment>> DecodeMlsd(const Tensor& scores, const Tensor& offsets,
                                                    const MlsdOptions& options);

}  // namespace loom::vision

#endif  // LOOM_VISION_MLSD_H_
