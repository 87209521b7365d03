// box_crop: fan-out over detections — one axis-aligned crop of the frame per detection, for the
// next model of a chain (a face's landmarks, a brow's expression).
//   detections: faces     (a detections value)      image: image (default the frame)
//   square: true          make the region square (its longer side) before scaling
//   scale: 1.2 | [1.4, 2.0]   grow the region about its centre (x and y factors)
//   points: [17, 18, ...] the region is the bounding box of these landmarks of the detection (as
//                         a landmarks node placed them) instead of the detection's box
//   within_box: true      keep the region inside the detection's own box (a brow inside its face)
//   min_size: 8           pixels: a smaller region grows to this about its centre
// Every detection gets exactly one crop, in order (clamped to the frame, never empty), so a crop's
// row and its detection share an index all the way down the chain. The crops are views of the
// frame, not copies.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "pipeline/nodes/nodes.h"

namespace loom::pipeline {
namespace {

struct Region {
  double x0, y0, x1, y1;
};

class BoxCropNode final : public Node {
 public:
  struct Params {
    std::string detections, image;
    bool square = false;
    double scale_x = 1, scale_y = 1;
    std::vector<int> points;
    bool within_box = false;
    int min_size = 8;
  };

  BoxCropNode(std::string name, Params p) : Node(std::move(name)), p_(std::move(p)) {}

  absl::Status Process(Frame& frame, NodeContext&) const override {
    const cv::Mat& image = frame.values.at(p_.image).image;
    if (image.empty()) return absl::InvalidArgumentError("box_crop: the frame has no image");
    Value v;
    v.type = ValueType::kCrops;
    v.detections = frame.values.at(p_.detections).detections;
    for (const vision::Detection& d : v.detections) {
      LOOM_ASSIGN_OR_RETURN(Region r, RegionOf(d));
      const cv::Rect rect = Clamp(r, image.size());
      v.crops.push_back(image(rect));
      vision::ImageTransform t;  // crop pixel -> frame pixel: a shift by the crop's corner
      t.offset_x = -rect.x;
      t.offset_y = -rect.y;
      v.row_to_image.push_back(t);
    }
    v.rotated.assign(v.crops.size(), false);
    frame.values[name()] = std::move(v);
    return absl::OkStatus();
  }

 private:
  absl::StatusOr<Region> RegionOf(const vision::Detection& d) const {
    Region r{d.x_min, d.y_min, d.x_max, d.y_max};
    if (!p_.points.empty()) {
      r = {INFINITY, INFINITY, -INFINITY, -INFINITY};
      for (int i : p_.points) {
        if (i >= static_cast<int>(d.landmarks.size())) {
          return absl::InvalidArgumentError(absl::StrCat("box_crop: landmark ", i,
                                                         " asked for, but the detection has ",
                                                         d.landmarks.size(), " landmarks"));
        }
        const vision::Point& q = d.landmarks[static_cast<size_t>(i)];
        r = {std::min<double>(r.x0, q.x), std::min<double>(r.y0, q.y), std::max<double>(r.x1, q.x),
             std::max<double>(r.y1, q.y)};
      }
    }
    if (!std::isfinite(r.x0) || !std::isfinite(r.y0) || !std::isfinite(r.x1) ||
        !std::isfinite(r.y1)) {
      r = {d.x_min, d.y_min, d.x_max, d.y_max};  // a model's NaN: fall back to the detection's box
    }
    double cx = (r.x0 + r.x1) / 2, cy = (r.y0 + r.y1) / 2;
    double w = std::max(0.0, r.x1 - r.x0), h = std::max(0.0, r.y1 - r.y0);
    if (p_.square) w = h = std::max(w, h);
    w *= p_.scale_x;
    h *= p_.scale_y;
    r = {cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2};
    if (p_.within_box) {
      r = {std::max<double>(r.x0, d.x_min), std::max<double>(r.y0, d.y_min),
           std::min<double>(r.x1, d.x_max), std::min<double>(r.y1, d.y_max)};
      cx = (r.x0 + r.x1) / 2, cy = (r.y0 + r.y1) / 2;
    }
    GrowTo(r.x0, r.x1, cx, d.x_min, d.x_max);
    GrowTo(r.y0, r.y1, cy, d.y_min, d.y_max);
    return r;
  }

  // One axis of the region: at least min_size about its centre, and (within_box) moved back
  // inside the box where the box is that large (a region clipped to nothing at the box's edge
  // grows into the box, not out of it).
  void GrowTo(double& lo, double& hi, double centre, double box_lo, double box_hi) const {
    if (hi - lo >= p_.min_size) return;
    lo = centre - p_.min_size / 2.0;
    hi = centre + p_.min_size / 2.0;
    if (!p_.within_box || box_hi - box_lo < p_.min_size) return;
    const double shift = lo < box_lo ? box_lo - lo : hi > box_hi ? box_hi - hi : 0.0;
    lo += shift;
    hi += shift;
  }

  // The region in whole pixels inside the frame, at least 1x1 (a region off the frame keeps the
  // nearest edge pixels).
  static cv::Rect Clamp(const Region& r, cv::Size size) {
    auto clampi = [](double v, int lo, int hi) {
      if (!(v > lo)) return lo;  // also NaN
      return v < hi ? static_cast<int>(v) : hi;
    };
    const int x0 = clampi(std::floor(r.x0), 0, size.width - 1),
              y0 = clampi(std::floor(r.y0), 0, size.height - 1);
    const int x1 = clampi(std::ceil(r.x1), x0 + 1, size.width),
              y1 = clampi(std::ceil(r.y1), y0 + 1, size.height);
    return {x0, y0, x1 - x0, y1 - y0};
  }

  Params p_;
};

}  // namespace

LOOM_NODE_FACTORY_IMPL(MakeBoxCropNode) {
  LOOM_RETURN_IF_ERROR(
      context.Keys(params, name,
                   {"detections", "image", "square", "scale", "points", "within_box", "min_size"}));
  const YamlReader r = context.Reader(name);
  BoxCropNode::Params p;
  LOOM_ASSIGN_OR_RETURN(ValueSpec detections,
                        context.Input(params, name, "detections", ValueType::kDetections));
  LOOM_ASSIGN_OR_RETURN(ValueSpec image, context.Input(params, name, "image", ValueType::kImage));
  p.detections = detections.producer;
  p.image = image.producer;
  LOOM_ASSIGN_OR_RETURN(p.square, r.Bool(params, "square", false));
  if (params["scale"]) {
    LOOM_ASSIGN_OR_RETURN(std::vector<double> scale, r.Doubles(params, "scale", 0.01, 100, 1, 2));
    p.scale_x = scale[0];
    p.scale_y = scale.back();
  }
  if (params["points"]) {
    LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> points, r.Ints(params, "points", 0, 4095, 1, 4096));
    p.points.assign(points.begin(), points.end());
  }
  LOOM_ASSIGN_OR_RETURN(p.within_box, r.Bool(params, "within_box", false));
  LOOM_ASSIGN_OR_RETURN(int64_t min_size, r.Int(params, "min_size", 1, 4096, 8));
  p.min_size = static_cast<int>(min_size);
  context.Declare(name, {ValueType::kCrops, std::nullopt, name});
  return std::unique_ptr<Node>(new BoxCropNode(name, std::move(p)));
}

}  // namespace loom::pipeline
