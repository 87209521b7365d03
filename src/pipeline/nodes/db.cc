// db: PP-OCR detector outputs (DB probability map) → text quadrilaterals in the frame's pixels.
//   input: det   threshold: 0.3   box_threshold: 0.6   unclip_ratio: 1.5   record: true
//   preprocess: det_in  (optional: map back through its letterbox/crop)
// Record: "<name>": [{"quad": [[x, y] x 4], "score": s}]
#include "pipeline/nodes/nodes.h"

namespace loom::pipeline {
namespace {

class DbNode final : public Node {
 public:
  DbNode(std::string name, std::string input, CoordinateMap map, vision::DbOptions options,
         bool record)
      : Node(std::move(name)),
        input_(std::move(input)),
        map_(std::move(map)),
        options_(options),
        record_(record) {}

  absl::Status Process(Frame& frame, NodeContext& context) const override {
    LOOM_ASSIGN_OR_RETURN(NamedTensors outputs, AwaitOutputs(frame, input_, context));
    Value v;
    v.type = ValueType::kTextBoxes;
    const Tensor& prob = outputs[0].tensor;  // [1,1,H,W] at the input's resolution
    if (prob.rank() != 4)
      return absl::InvalidArgumentError("DB output " + prob.Describe() + " is not [1,1,H,W]");
    const int w = static_cast<int>(prob.dim(3)), h = static_cast<int>(prob.dim(2));
    LOOM_ASSIGN_OR_RETURN(v.boxes,
                          vision::DecodeDb(prob, cv::Size(w, h), options_));  // input pixels
    ToImage(map_.For(frame, w, h), map_.Image(frame).size(), v.boxes);
    if (record_) frame.record[name()] = ToJson(v.boxes);
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
  LOOM_RETURN_IF_ERROR(context.Keys(
      params, name,
      {"input", "image", "preprocess", "threshold", "box_threshold", "unclip_ratio", "record"}));
  const YamlReader r = context.Reader(name);
  LOOM_ASSIGN_OR_RETURN(ValueSpec input, context.Input(params, name, "input", ValueType::kOutputs));
  LOOM_ASSIGN_OR_RETURN(CoordinateMap map, ReadCoordinateMap(params, name, context));
  vision::DbOptions options;
  LOOM_ASSIGN_OR_RETURN(double threshold, r.Double(params, "threshold", 0, 1, 0.3));
  LOOM_ASSIGN_OR_RETURN(double box_threshold, r.Double(params, "box_threshold", 0, 1, 0.6));
  LOOM_ASSIGN_OR_RETURN(double unclip, r.Double(params, "unclip_ratio", 0, 10, 1.5));
  options.threshold = static_cast<float>(threshold);
  options.box_threshold = static_cast<float>(box_threshold);
  options.unclip_ratio = static_cast<float>(unclip);
  LOOM_ASSIGN_OR_RETURN(bool record, r.Bool(params, "record", true));
  context.Declare(name, {ValueType::kTextBoxes, std::nullopt, name});
  return std::unique_ptr<Node>(new DbNode(name, input.producer, std::move(map), options, record));
}

}  // namespace loom::pipeline
