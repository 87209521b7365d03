// db: PP-OCR detector outputs (DB probability map) → text quadrilaterals in the frame's pixels.
//   input: det   image: image   threshold: 0.3   box_threshold: 0.6   unclip_ratio: 1.5
// Record: "<name>": [{"quad": [[x, y] x 4], "score": s}]
#include "pipeline/nodes/nodes.h"

namespace loom::pipeline {
namespace {

class DbNode final : public Node {
 public:
  DbNode(std::string name, std::string input, std::string image, vision::DbOptions options, bool record)
      : Node(std::move(name)), input_(std::move(input)), image_(std::move(image)), options_(options), record_(record) {}

  absl::Status Process(Frame& frame, InferenceService&) const override {
    LOOM_ASSIGN_OR_RETURN(NamedTensors outputs, AwaitOutputs(frame, input_));
    Value v;
    v.type = ValueType::kTextBoxes;
    LOOM_ASSIGN_OR_RETURN(v.boxes, vision::DecodeDb(outputs[0].tensor, frame.values.at(image_).image.size(), options_));
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
  std::string input_, image_;
  vision::DbOptions options_;
  bool record_;
};

}  // namespace

LOOM_NODE_FACTORY_IMPL(MakeDbNode) {
  LOOM_ASSIGN_OR_RETURN(ValueSpec input, context.Input(params, name, "input", ValueType::kOutputs));
  LOOM_RETURN_IF_ERROR(context.Input(params, name, "image", ValueType::kImage).status());
  vision::DbOptions options;
  LOOM_ASSIGN_OR_RETURN(options.threshold, context.Param<float>(params, name, "threshold", 0.3f));
  LOOM_ASSIGN_OR_RETURN(options.box_threshold, context.Param<float>(params, name, "box_threshold", 0.6f));
  LOOM_ASSIGN_OR_RETURN(options.unclip_ratio, context.Param<float>(params, name, "unclip_ratio", 1.5f));
  LOOM_ASSIGN_OR_RETURN(bool record, context.Param<bool>(params, name, "record", true));
  context.Declare(name, {ValueType::kTextBoxes, std::nullopt, name});
  return std::unique_ptr<Node>(new DbNode(name, input.producer,
                                          params["image"] ? params["image"].as<std::string>() : "image", options, record));
}

}  // namespace loom::pipeline
