#include "pipeline/nodes/geometry.h"

#include <algorithm>
#include <cmath>

namespace loom::pipeline {

vision::ImageTransform CoordinateMap::For(const Frame& frame, int input_w, int input_h) const {
  if (!preprocess.empty()) return frame.values.at(preprocess).to_image;
  const cv::Mat& m = frame.values.at(image).image;
  vision::ImageTransform t;
  t.scale_x = static_cast<double>(input_w) / std::max(m.cols, 1);
  t.scale_y = static_cast<double>(input_h) / std::max(m.rows, 1);
  return t;
}

const cv::Mat& CoordinateMap::Image(const Frame& frame) const {
  return frame.values.at(image).image;
}

absl::StatusOr<CoordinateMap> ReadCoordinateMap(const YAML::Node& params, const std::string& node,
                                                BuildContext& context) {
  CoordinateMap map;
  LOOM_ASSIGN_OR_RETURN(ValueSpec image, context.Input(params, node, "image", ValueType::kImage));
  map.image = image.producer;
  if (params["preprocess"]) {
    LOOM_ASSIGN_OR_RETURN(ValueSpec spec,
                          context.Input(params, node, "preprocess", ValueType::kTensor));
    map.preprocess = spec.producer;
  }
  return map;
}

namespace {

cv::Point2f Map(const vision::ImageTransform& t, float x, float y) { return t.ToImage({x, y}); }

nlohmann::json Point(float x, float y) { return nlohmann::json::array({Round(x, 1), Round(y, 1)}); }

}  // namespace

void ToImage(const vision::ImageTransform& t, std::vector<vision::Detection>& detections) {
  for (vision::Detection& d : detections) {
    const cv::Point2f a = Map(t, d.x_min, d.y_min), b = Map(t, d.x_max, d.y_max);
    d.x_min = a.x, d.y_min = a.y, d.x_max = b.x, d.y_max = b.y;
    for (vision::Point& p : d.keypoints) {
      const cv::Point2f q = Map(t, p.x, p.y);
      p = {q.x, q.y};
    }
  }
}

void ToImage(const vision::ImageTransform& t, std::vector<vision::LineSegment>& lines) {
  for (vision::LineSegment& l : lines) {
    const cv::Point2f a = Map(t, l.x1, l.y1), b = Map(t, l.x2, l.y2);
    l.x1 = a.x, l.y1 = a.y, l.x2 = b.x, l.y2 = b.y;
  }
}

void ToImage(const vision::ImageTransform& t, cv::Size image, std::vector<vision::TextBox>& boxes) {
  for (vision::TextBox& b : boxes) {
    for (cv::Point2f& p : b.quad) {
      p = t.ToImage(p);
      p.x = std::clamp(p.x, 0.0f, static_cast<float>(std::max(image.width - 1, 0)));
      p.y = std::clamp(p.y, 0.0f, static_cast<float>(std::max(image.height - 1, 0)));
    }
  }
}

nlohmann::json ToJson(const std::vector<vision::Detection>& detections) {
  nlohmann::json out = nlohmann::json::array();
  for (const vision::Detection& d : detections) {
    nlohmann::json keypoints = nlohmann::json::array();
    for (const vision::Point& p : d.keypoints) keypoints.push_back(Point(p.x, p.y));
    nlohmann::json entry = {
        {"box", {Round(d.x_min, 1), Round(d.y_min, 1), Round(d.x_max, 1), Round(d.y_max, 1)}},
        {"score", Round(d.score, 4)}};
    if (d.class_id >= 0) entry["class"] = d.class_id;
    if (!d.class_name.empty()) entry["class_name"] = d.class_name;
    if (!d.keypoints.empty()) entry["keypoints"] = keypoints;
    if (!d.landmarks.empty()) {
      nlohmann::json landmarks = nlohmann::json::array();
      for (const vision::Point& p : d.landmarks) landmarks.push_back(Point(p.x, p.y));
      entry["landmarks"] = std::move(landmarks);
    }
    if (d.label >= 0) {
      entry["label"] =
          d.label_name.empty() ? nlohmann::json(d.label) : nlohmann::json(d.label_name);
      entry["label_score"] = Round(d.label_score, 4);
    }
    out.push_back(std::move(entry));
  }
  return out;
}

nlohmann::json ToJson(const std::vector<vision::LineSegment>& lines) {
  nlohmann::json out = nlohmann::json::array();
  for (const vision::LineSegment& l : lines) {
    out.push_back(
        {Round(l.x1, 1), Round(l.y1, 1), Round(l.x2, 1), Round(l.y2, 1), Round(l.score, 4)});
  }
  return out;
}

nlohmann::json QuadJson(const std::array<cv::Point2f, 4>& quad) {
  nlohmann::json out = nlohmann::json::array();
  for (const cv::Point2f& p : quad) out.push_back(Point(p.x, p.y));
  return out;
}

nlohmann::json ToJson(const std::vector<vision::TextBox>& boxes) {
  nlohmann::json out = nlohmann::json::array();
  for (const vision::TextBox& b : boxes)
    out.push_back({{"quad", QuadJson(b.quad)}, {"score", Round(b.score, 4)}});
  return out;
}

double Round(double v, int digits) {
  const double f = std::pow(10.0, digits);
  return std::round(v * f) / f;
}

}  // namespace loom::pipeline
