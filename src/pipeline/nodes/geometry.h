// What the decoder nodes share: mapping coordinates from a model's input back to the frame
// (through the preprocess node's resize, letterbox or crop), and writing detections to a record.
#ifndef LOOM_PIPELINE_NODES_GEOMETRY_H_
#define LOOM_PIPELINE_NODES_GEOMETRY_H_

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

#include "pipeline/node.h"
#include "vision/blob.h"
#include "vision/detection.h"
#include "vision/mlsd.h"
#include "vision/ocr.h"

namespace loom::pipeline {

// Where a decoder's coordinates go. With `preprocess: NODE` in its parameters, the decoder works
// in that preprocess node's input pixels and maps them back through its resize (letterbox, crop);
// without, coordinates are scaled from the model's input to the whole frame (a plain resize).
struct CoordinateMap {
  std::string preprocess;  // node name, or empty
  std::string image;       // the frame value, for the plain resize
  // The transform for this frame, from input pixels of a model with `input_w` x `input_h`.
  vision::ImageTransform For(const Frame& frame, int input_w, int input_h) const;
  // The image the coordinates end up in.
  const cv::Mat& Image(const Frame& frame) const;
};
// Reads `image:` and `preprocess:` of a decoder node.
absl::StatusOr<CoordinateMap> ReadCoordinateMap(const YAML::Node& params, const std::string& node,
                                                BuildContext& context);

// Maps model-input coordinates to the frame, in place; text boxes are clamped inside `image`.
void ToImage(const vision::ImageTransform& t, std::vector<vision::Detection>& detections);
void ToImage(const vision::ImageTransform& t, std::vector<vision::LineSegment>& lines);
void ToImage(const vision::ImageTransform& t, cv::Size image, std::vector<vision::TextBox>& boxes);

// Record entries, coordinates rounded to 0.1 pixel and scores to 1e-4 (stable, readable output):
//   detection: {"box": [x1, y1, x2, y2], "score": s, "class": c?, "class_name": n?, "keypoints":
//   [[x, y], ...]?,
//               "landmarks": [[x, y], ...]?, "label": name or index?, "label_score": p?}
//              (the optional keys only where a stage set them)
//   line:      [x1, y1, x2, y2, score]
//   text box:  {"quad": [[x, y] x 4], "score": s}
nlohmann::json ToJson(const std::vector<vision::Detection>& detections);
nlohmann::json ToJson(const std::vector<vision::LineSegment>& lines);
nlohmann::json ToJson(const std::vector<vision::TextBox>& boxes);
nlohmann::json QuadJson(const std::array<cv::Point2f, 4>& quad);

double Round(double v, int digits);

}  // namespace loom::pipeline

#endif  // LOOM_PIPELINE_NODES_GEOMETRY_H_
