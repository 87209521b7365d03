// Detections as the post-processing nodes produce them, and the overlap tools they share.
#ifndef LOOM_VISION_DETECTION_H_
#define LOOM_VISION_DETECTION_H_

#include <string>
#include <vector>

namespace loom::vision {

struct Point {
  float x = 0, y = 0;
};

// An axis-aligned box with optional keypoints, in the coordinates the decoder was asked for
// (normalised [0,1] or pixels). Later stages of a chain add to it: the points a landmark model
// placed on it, and the class a classifier gave it.
struct Detection {
  float x_min = 0, y_min = 0, x_max = 0, y_max = 0;
  float score = 0;
  std::vector<Point> keypoints;  // the detector's own (BlazeFace: eyes, nose, mouth, ears)
  int class_id = -1;             // a multi-class detector's class (YOLO), or -1
  std::string class_name;        // its name, when the detector was given names
  std::vector<Point> landmarks;  // from a landmark model (68 points for a face), or empty
  int label = -1;                // from a classifier of the detection's crop, or -1
  float label_score = 0;         // that class's probability
  std::string label_name;        // its name, when the classifier was given names

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
