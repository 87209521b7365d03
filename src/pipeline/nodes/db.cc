// db: PP-OCR detector outputs (DB probability map) → text quadrilaterals in the frame's pixels.
//   input: det   threshold: 0.3   box_threshold: 0.6   unclip_ratio: 1.5
//   preprocess: det_in  (optional: map back through its letterbox/crop)
// Record: "<name>": [{"quad": [[x, y] x 4], "score": s}]
#include <algorithm>

#include "pipeline/nodes/nodes.h"

namespace loom::pipeline {
namespace {

class DbNode final : public Node {
 public:
  DbNode(std::string name, std::string input, CoordinateMap map, vision::DbOptions options, bool record)
      : Node(std::move(name)), input_(std::move(input)), map_(std::move(map)), options_(options), record_(record) {}

  absl::Status Process(Frame& frame, InferenceService&) const override {
    LOOM_ASSIGN_OR_RETURN(NamedTensors outputs, AwaitOutputs(frame, input_));
    Value v;
    v.type = ValueType::kTextBoxes;
    const Tensor& prob = outputs[0].tensor;  // [1,1,H,W] at the input's resolution
    if (prob.rank() != 4) return absl::InvalidArgumentError("DB output " + prob.Describe() + " is not [1,1,H,W]");
    const int w = static_cast<int>(prob.dim(3)), h = static_cast<int>(prob.dim(2));
    LOOM_ASSIGN_OR_RETURN(v.boxes, vision::DecodeDb(prob, cv::Size(w, h), options_));  // input pixels
    const vision::ImageTransform t = map_.For(frame, w, h);
    const cv::Size size = frame.values.at(map_.image).image.size();
    for (vision::TextBox& b : v.boxes) {
      for (cv::Point2f& p : b.quad) {
        p = t.ToImage(p);
        p.x = std::clamp(p.x, 0.0f, static_cast<float>(size.width - 1));
        p.y = std::clamp(p.y, 0.0f, static_cast<float>(size.height - 1));
      }
    }
    if (record_) {
      nlohmann::json boxes = nlohmann::json::array();
      for (const vision::TextBox& b : v.boxes) {
        nlohmann::json quad = nlohmann::json::array();
        for (const cv::Point2f& p : b.quad) quad.push_back({Round(p.x, 1), Round(p.y, 1)});
        boxes.push_back({{"quad", quad}, {"score", Round(b.score, 4)}});
      }
      frame.record[name()] = boxes;
    }
    frame.values[name()] = std::move(v);
    return absl::OkStatus();
  }

 private:
  std::string input_;
  CoordinateMap map_;
  vision::DbOptions options_;
  bool record_;
};

}  // namespace

LOOM_NODE_FACTORY_IMPL(MakeDbNode) {
  LOOM_ASSIGN_OR_RETURN(ValueSpec input, context.Input(params, name, "input", ValueType::kOutputs));
  LOOM_ASSIGN_OR_RETURN(CoordinateMap map, ReadCoordinateMap(params, name, context));
  vision::DbOptions options;
  LOOM_ASSIGN_OR_RETURN(options.threshold, context.Param<float>(params, name, "threshold", 0.3f));
  LOOM_ASSIGN_OR_RETURN(options.box_threshold, context.Param<float>(params, name, "box_threshold", 0.6f));
  LOOM_ASSIGN_OR_RETURN(options.unclip_ratio, context.Param<float>(params, name, "unclip_ratio", 1.5f));
  LOOM_ASSIGN_OR_RETURN(bool record, context.Param<bool>(params, name, "record", true));
  context.Declare(name, {ValueType::kTextBoxes, std::nullopt, name});
  return std::unique_ptr<Node>(new DbNode(name, input.producer, std::move(map), options, record));
}

}  // namespace loom::pipeline
