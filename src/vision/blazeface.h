// BlazeFace (MediaPipe short/full-range face detector, as exported to ONNX with NHWC input and
// outputs [1,512,1] scores, [1,384,1] scores, [1,512,16] and [1,384,16] regressors) → face boxes
// with their 6 keypoints (right eye, left eye, nose tip, mouth, right ear, left ear).
//
// Anchors: a 16×16 grid with 2 anchors per cell, then an 8×8 grid with 6 per cell (896 in all),
// centred at (cell + 0.5) / cells. A regressor row is (dx, dy, w, h, then 6 × (dx, dy)) in input
// pixels, relative to its anchor's centre.
#ifndef LOOM_VISION_BLAZEFACE_H_
#define LOOM_VISION_BLAZEFACE_H_

#include <vector>

#include "loom/tensor.h"
#include "vision/detection.h"

namespace loom::vision {

struct BlazeFaceOptions {
  float score_threshold = 0.5f;  // after the sigmoid
  float iou_threshold = 0.3f;    // weighted NMS
  // Output coordinates: normalised [0,1] × this size (the original image's size in pixels to map
  // back onto a resized, not letterboxed, input). {1, 1} keeps them normalised.
  float image_width = 1, image_height = 1;
};

// Decodes the four outputs (in model order: scores 512, scores 384, boxes 512, boxes 384) of a
// model whose input is `input_size` × `input_size` pixels. INVALID_ARGUMENT, naming the output,
// when a shape differs from the above.
absl::StatusOr<std::vector<Detection>> DecodeBlazeFace(const NamedTensors& outputs, int input_size,
                                                       const BlazeFaceOptions& options);

}  // namespace loom::vision

#endif  // LOOM_VISION_BLAZEFACE_H_
