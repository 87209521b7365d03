// YOLO-style detection heads (YOLOv5 and its relatives) → boxes with a class and a score, and the
// class-wise non-maximum suppression they need.
//
// Two output formats:
//  - raw: the head's maps, one output per stride, each [1, A * (5 + C), H, W] (A anchors per cell,
//    C classes; per anchor: x, y, w, h, objectness, C class logits). Decoded here, as YOLOv5
//    defines it: xy = (sigmoid * 2 - 0.5 + cell) * stride, wh = (sigmoid * 2)^2 * anchor; only the
//    anchors whose objectness passes the threshold are decoded further.
//  - decoded: one output [1, K, 5 + C] of boxes already decoded in input pixels: centre x, centre
//    y, width, height, objectness, C class probabilities (YOLOv5's own ONNX export).
// A box's score is objectness x its best class's probability.
#ifndef LOOM_VISION_YOLO_H_
#define LOOM_VISION_YOLO_H_

#include <vector>

#include "loom/tensor.h"
#include "vision/detection.h"

namespace loom::vision {

struct YoloOptions {
  bool raw = true;                          // the format (above)
  std::vector<std::vector<float>> anchors;  // raw: per stride, (w, h) pairs in input pixels
  std::vector<int> strides;                 // raw: per output, in input pixels
  float score_threshold = 0.25f;            // objectness, then objectness x class
  float iou_threshold = 0.45f;              // class-wise NMS
  int max_detections = 300;
  int max_candidates = 30000;  // boxes kept for NMS, highest scores first
};

// Boxes in the model input's pixels, after NMS, highest score first. INVALID_ARGUMENT naming the
// output when a shape does not fit the options.
absl::StatusOr<std::vector<Detection>> DecodeYolo(const NamedTensors& outputs,
                                                  const YoloOptions& options);

// Greedy NMS within each class (class_id): from the highest score down, a box is kept unless it
// overlaps a kept box of its class by more than `iou_threshold`; at most `max_detections` kept.
std::vector<Detection> ClassNms(std::vector<Detection> detections, float iou_threshold,
                                int max_detections);

}  // namespace loom::vision

#endif  // LOOM_VISION_YOLO_H_
