// mlsd: M-LSD outputs ("scores", "offsets") → line segments in the frame's pixels.
//   input: lines_out   threshold: 0.1   min_length: 20 (model-input pixels)
//   preprocess: lines_in  (optional: map back through its letterbox/crop)
// Record: "lines": [[x1, y1, x2, y2, score], ...]
#include "pipeline/nodes/nodes.h"

namespace loom::pipeline {
namespace {

class MlsdNode final : public Node {
 public:
  MlsdNode(std::string name, std::string input, CoordinateMap map, vision::MlsdOptions options)
      : Node(std::move(name)), input_(std::move(input)), map_(std::move(map)), options_(options) {}

  absl::Status Process(Frame& frame, InferenceService&) const override {
    LOOM_ASSIGN_OR_RETURN(NamedTensors outputs, AwaitOutputs(frame, input_));
    const Tensor* scores = nullptr;
    const Tensor* offsets = nullptr;
    for (const NamedTensor& t : outputs) {
      if (t.name == "scores") scores = &t.tensor;
      if (t.name == "offsets") offsets = &t.tensor;
    }
    if (!scores || !offsets) return absl::InvalidArgumentError("M-LSD outputs 'scores' and 'offsets' not found");
    Value v;
    v.type = ValueType::kLines;
    LOOM_ASSIGN_OR_RETURN(v.lines, vision::DecodeMlsd(*scores, *offsets, options_));  // input pixels
    const int side = static_cast<int>(scores->dim(1) * 2);
    const vision::ImageTransform t = map_.For(frame, side, side);
    for (vision::LineSegment& l : v.lines) {
      const cv::Point2f a = t.ToImage({l.x1, l.y1}), b = t.ToImage({l.x2, l.y2});
      l.x1 = a.x, l.y1 = a.y, l.x2 = b.x, l.y2 = b.y;
    }
    nlohmann::json lines = nlohmann::json::array();
    for (const vision::LineSegment& l : v.lines) {
      lines.push_back({Round(l.x1, 1), Round(l.y1, 1), Round(l.x2, 1), Round(l.y2, 1), Round(l.score, 4)});
    }
    frame.record[name()] = lines;
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
  LOOM_ASSIGN_OR_RETURN(ValueSpec input, context.Input(params, name, "input", ValueType::kOutputs));
  LOOM_ASSIGN_OR_RETURN(CoordinateMap map, ReadCoordinateMap(params, name, context));
  vision::MlsdOptions options;
  LOOM_ASSIGN_OR_RETURN(options.score_threshold, context.Param<float>(params, name, "threshold", 0.1f));
  LOOM_ASSIGN_OR_RETURN(options.min_length, context.Param<float>(params, name, "min_length", 20.0f));
  context.Declare(name, {ValueType::kLines, std::nullopt, name});
  return std::unique_ptr<Node>(new MlsdNode(name, input.producer, std::move(map), options));
}

}  // namespace loom::pipeline
