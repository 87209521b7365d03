#include "vision/detection.h"

#include <algorithm>

namespace loom::vision {

float IoU(const Detection& a, const Detection& b) {
  const float ix = std::max(0.0f, std::min(a.x_max, b.x_max) - std::max(a.x_min, b.x_min));
  const float iy = std::max(0.0f, std::min(a.y_max, b.y_max) - std::max(a.y_min, b.y_min));
  const float inter = ix * iy;
  const float uni = a.width() * a.height() + b.width() * b.height() - inter;
  return uni > 0 ? inter / uni : 0.0f;
}

std::vector<Detection> WeightedNms(std::vector<Detection> detections, float iou_threshold) {
  std::stable_sort(detections.begin(), detections.end(),
                   [](const Detection& a, const Detection& b) { return a.score > b.score; });
  std::vector<bool> used(detections.size(), false);
  std::vector<Detection> out;
  for (size_t i = 0; i < detections.size(); ++i) {
    if (used[i]) continue;
    const Detection& top = detections[i];
    Detection sum = top;
    for (auto& field : {&sum.x_min, &sum.y_min, &sum.x_max, &sum.y_max}) *field *= top.score;
    for (Point& p : sum.keypoints) p = {p.x * top.score, p.y * top.score};
    float weight = top.score;
    for (size_t j = i + 1; j < detections.size(); ++j) {
      if (used[j] || IoU(top, detections[j]) <= iou_threshold) continue;
      used[j] = true;
      const Detection& d = detections[j];
      sum.x_min += d.x_min * d.score;
      sum.y_min += d.y_min * d.score;
      sum.x_max += d.x_max * d.score;
      sum.y_max += d.y_max * d.score;
      for (size_t k = 0; k < sum.keypoints.size() && k < d.keypoints.size(); ++k) {
        sum.keypoints[k].x += d.keypoints[k].x * d.score;
        sum.keypoints[k].y += d.keypoints[k].y * d.score;
      }
      weight += d.score;
    }
    for (auto& field : {&sum.x_min, &sum.y_min, &sum.x_max, &sum.y_max}) *field /= weight;
    for (Point& p : sum.keypoints) p = {p.x / weight, p.y / weight};
    sum.score = top.score;
    out.push_back(std::move(sum));
  }
  return out;
}

}  // namespace loom::vision
