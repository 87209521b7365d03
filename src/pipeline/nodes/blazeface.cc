// blazeface: BlazeFace outputs → face boxes with 6 keypoints, in the frame's pixels.
//   input: face     (an infer node)      model: face
//   preprocess: face_in   (optional: map back through its letterbox/crop; default a plain resize
//                          of the frame, `image`)
//   threshold: 0.5  iou: 0.3
//   record: true     (false: the faces only feed later nodes; a chain records its last stage)
// Record: "<name>": [{"box": [x1, y1, x2, y2], "score": s, "keypoints": [[x, y] x 6]}]
#include "vision/blazeface.h"

#include "pipeline/nodes/nodes.h"

namespace loom::pipeline {
namespace {

class BlazeFaceNode final : public Node {
 public:
  BlazeFaceNode(std::string name, std::string input, CoordinateMap map, int input_size,
                vision::BlazeFaceOptions options, bool record)
      : Node(std::move(name)),
        input_(std::move(input)),
        map_(std::move(map)),
        input_size_(input_size),
        options_(options),
        record_(record) {}

  absl::Status Process(Frame& frame, NodeContext& context) const override {
    LOOM_ASSIGN_OR_RETURN(NamedTensors outputs, AwaitOutputs(frame, input_, context));
    vision::BlazeFaceOptions options = options_;  // decode in model-input pixels, then map
    options.image_width = options.image_height = static_cast<float>(input_size_);
    Value v;
    v.type = ValueType::kDetections;
    LOOM_ASSIGN_OR_RETURN(v.detections, vision::DecodeBlazeFace(outputs, input_size_, options));
    ToImage(map_.For(frame, input_size_, input_size_), v.detections);
    if (record_) frame.record[name()] = ToJson(v.detections);
    frame.values[name()] = std::move(v);
    return absl::OkStatus();
  }

 private:
  std::string input_;
  CoordinateMap map_;
  int input_size_;
  vision::BlazeFaceOptions options_;
  bool record_;
};

}  // namespace

LOOM_NODE_FACTORY_IMPL(MakeBlazeFaceNode) {
  LOOM_RETURN_IF_ERROR(context.Keys(
      params, name, {"input", "model", "image", "preprocess", "threshold", "iou", "record"}));
  const YamlReader r = context.Reader(name);
  LOOM_ASSIGN_OR_RETURN(ValueSpec input, context.Input(params, name, "input", ValueType::kOutputs));
  LOOM_ASSIGN_OR_RETURN(CoordinateMap map, ReadCoordinateMap(params, name, context));
  LOOM_ASSIGN_OR_RETURN(std::string model, r.String(params, "model"));
  const ModelInfo* info = context.Model(model);
  if (!info || info->inputs.empty() || info->inputs[0].image_layout() != ImageLayout::kNHWC ||
      info->inputs[0].shape[1].is_dynamic()) {
    return context.Error(params["model"], name,
                         "model '" + model + "' is not a BlazeFace model (NHWC, fixed size)");
  }
  vision::BlazeFaceOptions options;
  LOOM_ASSIGN_OR_RETURN(double threshold, r.Double(params, "threshold", 0, 1, 0.5));
  LOOM_ASSIGN_OR_RETURN(double iou, r.Double(params, "iou", 0, 1, 0.3));
  options.score_threshold = static_cast<float>(threshold);
  options.iou_threshold = static_cast<float>(iou);
  LOOM_ASSIGN_OR_RETURN(bool record, r.Bool(params, "record", true));
  context.Declare(name, {ValueType::kDetections, std::nullopt, name});
  return std::unique_ptr<Node>(new BlazeFaceNode(name, input.producer, std::move(map),
                                                 static_cast<int>(info->inputs[0].shape[1].value),
                                                 options, record));
}

}  // namespace loom::pipeline
