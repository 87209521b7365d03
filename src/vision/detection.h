// Detections as the post-processing nodes produce them, and the overlap tools they share.
#ifndef LOOM_VISION_DETECTION_H_
#define LOOM_VISION_DETECTION_H_

#include <vector>

namespace loom::vision {

struct Point {
  float x = 0, y = 0;
};

// An axis-aligned box with optional keypoints, in the coordinates the decoder was asked for
// (normalised [0,1] or pixels).
struct Detection {
  float x_min = 0, y_min = 0, x_max = 0, y_max = 0;
  float score = 0;
  std::vector<Point> keypoints;

  float width() const { return x_max - x_min; }
  float height() const { return y_max - y_min; }
};

// Intersection over union of two boxes (0 when either is empty).
float IoU(const Detection& a, const Detection& b);

// MediaPipe's weighted non-maximum suppression: from the highest score down, every remaining
// detection overlapping the current one by more than `iou_threshold` joins its cluster; the cluster
// becomes one detection whose box and keypoints are the score-weighted mean of its members and
// whose score is the highest. Output ordered by score, highest first.
std::vector<Detection> WeightedNms(std::vector<Detection> detections, float iou_threshold);

}  // namespace loom::vision

#endif  // LOOM_VISION_DETECTION_H_
