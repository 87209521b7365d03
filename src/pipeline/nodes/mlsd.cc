// mlsd: M-LSD outputs ("scores", "offsets") → line segments in the frame's pixels.
//   input: lines_out   threshold: 0.1   min_length: 20 (model-input pixels)
//   preprocess: lines_in  (optional: map back through its letterbox/crop)
// Record: "<name>": [[x1, y1, x2, y2, score], ...]
#include "pipeline/nodes/nodes.h"

namespace loom::pipeline {
namespace {

class MlsdNode final : public Node {
 public:
  MlsdNode(std::string name, std::string input, CoordinateMap map, vision::MlsdOptions options)
      : Node(std::move(name)), input_(std::move(input)), map_(std::move(map)), options_(options) {}

  absl::Status Process(Frame& frame, NodeContext& context) const override {
    LOOM_ASSIGN_OR_RETURN(NamedTensors outputs, AwaitOutputs(frame, input_, context));
    const Tensor* scores = nullptr;
    const Tensor* offsets = nullptr;
    for (const NamedTensor& t : outputs) {
      if (t.name == "scores") scores = &t.tensor;
      if (t.name == "offsets") offsets = &t.tensor;
    }
    if (!scores || !offsets)
      return absl::InvalidArgumentError("M-LSD outputs 'scores' and 'offsets' not found");
    Value v;
    v.type = ValueType::kLines;
    LOOM_ASSIGN_OR_RETURN(v.lines,
                          vision::DecodeMlsd(*scores, *offsets, options_));  // input pixels
    const int side = static_cast<int>(scores->dim(1) * 2);
    ToImage(map_.For(frame, side, side), v.lines);
    frame.record[name()] = ToJson(v.lines);
    frame.values[name()] = std::move(v);
    return absl::OkStatus();
  }

 private:
  std::string input_;
  CoordinateMap map_;
  vision::MlsdOptions options_;
};

}  // namespace

LOOM_NODE_FACTORY_IMPL(MakeMlsdNode) {
  LOOM_RETURN_IF_ERROR(
      context.Keys(params, name, {"input", "image", "preprocess", "threshold", "min_length"}));
  const YamlReader r = context.Reader(name);
  LOOM_ASSIGN_OR_RETURN(ValueSpec input, context.Input(params, name, "input", ValueType::kOutputs));
  LOOM_ASSIGN_OR_RETURN(CoordinateMap map, ReadCoordinateMap(params, name, context));
  vision::MlsdOptions options;
  LOOM_ASSIGN_OR_RETURN(double threshold, r.Double(params, "threshold", 0, 1, 0.1));
  LOOM_ASSIGN_OR_RETURN(double min_length, r.Double(params, "min_length", 0, 1e6, 20));
  options.score_threshold = static_cast<float>(threshold);
  options.min_length = static_cast<float>(min_length);
  context.Declare(name, {ValueType::kLines, std::nullopt, name});
  return std::unique_ptr<Node>(new MlsdNode(name, input.producer, std::move(map), options));
}

}  // namespace loom::pipeline
