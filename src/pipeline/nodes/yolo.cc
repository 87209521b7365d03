// yolo: a YOLO-style detector's outputs → boxes with a class and a score in the frame's pixels,
// after class-wise NMS (see vision/yolo.h for the two output formats).
//   input: det             (an infer node)
//   preprocess: det_in     (the letterbox/preprocess node: boxes are mapped back through it)
//   format: raw | decoded  raw: one map per stride, with these (YOLOv5's):
//   anchors: [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
//   strides: [8, 16, 32]
//   threshold: 0.25   iou: 0.45   max_detections: 300
//   labels: [person, bicycle, ...] or a file with one name per line (optional)
// Record: "<name>": [{"box": [x1, y1, x2, y2], "score": s, "class": c, "class_name": n?}]

#include "vision/yolo.h"

#include "absl/strings/str_cat.h"
#include "pipeline/nodes/nodes.h"

namespace loom::pipeline {
namespace {

class YoloNode final : public Node {
 public:
  YoloNode(std::string name, std::string input, CoordinateMap map, vision::YoloOptions options,
           std::vector<std::string> labels)
      : Node(std::move(name)),
        input_(std::move(input)),
        map_(std::move(map)),
        options_(std::move(options)),
        labels_(std::move(labels)) {}

  absl::Status Process(Frame& frame, NodeContext& context) const override {
    LOOM_ASSIGN_OR_RETURN(NamedTensors outputs, AwaitOutputs(frame, input_, context));
    Value v;
    v.type = ValueType::kDetections;
    LOOM_ASSIGN_OR_RETURN(v.detections, vision::DecodeYolo(outputs, options_));
    const cv::Mat& image = map_.Image(frame);
    ToImage(map_.For(frame, 0, 0),
            v.detections);  // through the letterbox (`preprocess` is required)
    const float w = static_cast<float>(image.cols), h = static_cast<float>(image.rows);
    for (vision::Detection& d : v.detections) {
      d.x_min = std::clamp(d.x_min, 0.0f, w), d.x_max = std::clamp(d.x_max, 0.0f, w);
      d.y_min = std::clamp(d.y_min, 0.0f, h), d.y_max = std::clamp(d.y_max, 0.0f, h);
      if (d.class_id >= 0 && d.class_id < static_cast<int>(labels_.size())) {
        d.class_name = labels_[static_cast<size_t>(d.class_id)];
      }
    }
    frame.record[name()] = ToJson(v.detections);
    frame.values[name()] = std::move(v);
    return absl::OkStatus();
  }

 private:
  std::string input_;
  CoordinateMap map_;
  vision::YoloOptions options_;
  std::vector<std::string> labels_;
};

}  // namespace

LOOM_NODE_FACTORY_IMPL(MakeYoloNode) {
  LOOM_RETURN_IF_ERROR(context.Keys(params, name,
                                    {"input", "image", "preprocess", "format", "anchors", "strides",
                                     "threshold", "iou", "max_detections", "labels"}));
  const YamlReader r = context.Reader(name);
  LOOM_ASSIGN_OR_RETURN(ValueSpec input, context.Input(params, name, "input", ValueType::kOutputs));
  if (!params["preprocess"]) {
    return context.Error(params, name,
                         "needs 'preprocess': the letterbox node whose input it decodes");
  }
  LOOM_ASSIGN_OR_RETURN(CoordinateMap map, ReadCoordinateMap(params, name, context));
  vision::YoloOptions o;
  LOOM_ASSIGN_OR_RETURN(std::string format, r.Choice(params, "format", {"raw", "decoded"}, "raw"));
  o.raw = format == "raw";
  if (o.raw) {
    LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> strides, r.Ints(params, "strides", 1, 1024, 1, 16));
    o.strides.assign(strides.begin(), strides.end());
    const YAML::Node anchors = params["anchors"];
    if (!anchors || !anchors.IsSequence() || anchors.size() != o.strides.size()) {
      return context.Error(anchors ? anchors : params, name,
                           absl::StrCat("'anchors' must be a list of ", o.strides.size(),
                                        " lists of (w, h) pairs, one per stride"));
    }
    for (const YAML::Node& level : anchors) {
      std::vector<float> pairs;
      if (!level.IsSequence() || level.size() < 2 || level.size() % 2 != 0 || level.size() > 64) {
        return context.Error(
            level, name,
            "each stride's anchors are (w, h) pairs: an even count of 2 to 64 numbers");
      }
      for (const YAML::Node& x : level) {
        LOOM_ASSIGN_OR_RETURN(double v, r.DoubleValue(x, "anchors", 0.01, 1e5));
        pairs.push_back(static_cast<float>(v));
      }
      if (!o.anchors.empty() && pairs.size() != o.anchors[0].size()) {
        return context.Error(level, name, "every stride needs as many anchors as the first");
      }
      o.anchors.push_back(std::move(pairs));
    }
  } else if (params["anchors"] || params["strides"]) {
    return context.Error(params, name, "'anchors' and 'strides' are for format: raw");
  }
  LOOM_ASSIGN_OR_RETURN(double threshold, r.Double(params, "threshold", 0, 1, 0.25));
  LOOM_ASSIGN_OR_RETURN(double iou, r.Double(params, "iou", 0, 1, 0.45));
  LOOM_ASSIGN_OR_RETURN(int64_t max_detections, r.Int(params, "max_detections", 1, 100000, 300));
  o.score_threshold = static_cast<float>(threshold);
  o.iou_threshold = static_cast<float>(iou);
  o.max_detections = static_cast<int>(max_detections);
  LOOM_ASSIGN_OR_RETURN(std::vector<std::string> labels, context.Labels(params, name));
  context.Declare(name, {ValueType::kDetections, std::nullopt, name});
  return std::unique_ptr<Node>(
      new YoloNode(name, input.producer, std::move(map), std::move(o), std::move(labels)));
}

}  // namespace loom::pipeline
