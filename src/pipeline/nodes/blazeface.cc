// blazeface: BlazeFace outputs → face boxes with 6 keypoints, in the frame's pixels.
//   input: face     (an infer node)      model: face
//   preprocess: face_in   (optional: map back through its letterbox/crop; default a plain resize
//                          of the frame, `image`)
//   threshold: 0.5  iou: 0.3
// Record: "faces": [{"box": [x1, y1, x2, y2], "score": s, "keypoints": [[x, y] x 6]}]
#include "pipeline/nodes/nodes.h"

#include "vision/blazeface.h"

namespace loom::pipeline {
namespace {

class BlazeFaceNode final : public Node {
 public:
  BlazeFaceNode(std::string name, std::string input, CoordinateMap map, int input_size,
                vision::BlazeFaceOptions options)
      : Node(std::move(name)), input_(std::move(input)), map_(std::move(map)),
        input_size_(input_size), options_(options) {}

  absl::Status Process(Frame& frame, InferenceService&) const override {
    LOOM_ASSIGN_OR_RETURN(NamedTensors outputs, AwaitOutputs(frame, input_));
    vision::BlazeFaceOptions options = options_;  // decode in model-input pixels, then map
    options.image_width = options.image_height = static_cast<float>(input_size_);
    Value v;
    v.type = ValueType::kDetections;
    LOOM_ASSIGN_OR_RETURN(v.detections, vision::DecodeBlazeFace(outputs, input_size_, options));
    const vision::ImageTransform t = map_.For(frame, input_size_, input_size_);
    for (vision::Detection& d : v.detections) {
      const cv::Point2f a = t.ToImage({d.x_min, d.y_min}), b = t.ToImage({d.x_max, d.y_max});
      d.x_min = a.x, d.y_min = a.y, d.x_max = b.x, d.y_max = b.y;
      for (vision::Point& p : d.keypoints) {
        const cv::Point2f q = t.ToImage({p.x, p.y});
        p = {q.x, q.y};
      }
    }
    nlohmann::json faces = nlohmann::json::array();
    for (const vision::Detection& d : v.detections) {
      nlohmann::json keypoints = nlohmann::json::array();
      for (const vision::Point& p : d.keypoints) keypoints.push_back({Round(p.x, 1), Round(p.y, 1)});
      faces.push_back({{"box", {Round(d.x_min, 1), Round(d.y_min, 1), Round(d.x_max, 1), Round(d.y_max, 1)}},
                       {"score", Round(d.score, 4)},
                       {"keypoints", keypoints}});
    }
    frame.record[name()] = faces;
    frame.values[name()] = std::move(v);
    return absl::OkStatus();
  }

 private:
  std::string input_;
  CoordinateMap map_;
  int input_size_;
  vision::BlazeFaceOptions options_;
};

}  // namespace

LOOM_NODE_FACTORY_IMPL(MakeBlazeFaceNode) {
  LOOM_ASSIGN_OR_RETURN(ValueSpec input, context.Input(params, name, "input", ValueType::kOutputs));
  LOOM_ASSIGN_OR_RETURN(CoordinateMap map, ReadCoordinateMap(params, name, context));
  LOOM_ASSIGN_OR_RETURN(std::string model, context.Param<std::string>(params, name, "model"));
  const ModelInfo* info = context.Model(model);
  if (!info || info->inputs.empty() || info->inputs[0].image_layout() != ImageLayout::kNHWC ||
      info->inputs[0].shape[1].is_dynamic()) {
    return context.Error(params["model"], name, "model '" + model + "' is not a BlazeFace model (NHWC, fixed size)");
  }
  vision::BlazeFaceOptions options;
  LOOM_ASSIGN_OR_RETURN(options.score_threshold, context.Param<float>(params, name, "threshold", 0.5f));
  LOOM_ASSIGN_OR_RETURN(options.iou_threshold, context.Param<float>(params, name, "iou", 0.3f));
  context.Declare(name, {ValueType::kDetections, std::nullopt, name});
  return std::unique_ptr<Node>(new BlazeFaceNode(name, input.producer, std::move(map),
                                                 static_cast<int>(info->inputs[0].shape[1].value), options));
}

}  // namespace loom::pipeline
