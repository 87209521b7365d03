// mlsd: M-LSD outputs ("scores", "offsets") → line segments in the frame's pixels.
//   input: lines_out   image: image   threshold: 0.1   min_length: 20 (model-input pixels)
// Record: "lines": [[x1, y1, x2, y2, score], ...]
#include "pipeline/nodes/nodes.h"

namespace loom::pipeline {
namespace {

class MlsdNode final : public Node {
 public:
  MlsdNode(std::string name, std::string input, std::string image, vision::MlsdOptions options)
      : Node(std::move(name)), input_(std::move(input)), image_(std::move(image)), options_(options) {}

  absl::Status Process(Frame& frame, InferenceService&) const override {
    LOOM_ASSIGN_OR_RETURN(NamedTensors outputs, AwaitOutputs(frame, input_));
    const Tensor* scores = nullptr;
    const Tensor* offsets = nullptr;
    for (const NamedTensor& t : outputs) {
      if (t.name == "scores") scores = &t.tensor;
      if (t.name == "offsets") offsets = &t.tensor;
    }
    if (!scores || !offsets) return absl::InvalidArgumentError("M-LSD outputs 'scores' and 'offsets' not found");
    const cv::Mat& image = frame.values.at(image_).image;
    vision::MlsdOptions options = options_;
    options.image_width = static_cast<float>(image.cols);
    options.image_height = static_cast<float>(image.rows);
    Value v;
    v.type = ValueType::kLines;
    LOOM_ASSIGN_OR_RETURN(v.lines, vision::DecodeMlsd(*scores, *offsets, options));
    nlohmann::json lines = nlohmann::json::array();
    for (const vision::LineSegment& l : v.lines) {
      lines.push_back({Round(l.x1, 1), Round(l.y1, 1), Round(l.x2, 1), Round(l.y2, 1), Round(l.score, 4)});
    }
    frame.record[name()] = lines;
    frame.values[name()] = std::move(v);
    return absl::OkStatus();
  }

 private:
  std::string input_, image_;
  vision::MlsdOptions options_;
};

}  // namespace

LOOM_NODE_FACTORY_IMPL(MakeMlsdNode) {
  LOOM_ASSIGN_OR_RETURN(ValueSpec input, context.Input(params, name, "input", ValueType::kOutputs));
  LOOM_RETURN_IF_ERROR(context.Input(params, name, "image", ValueType::kImage).status());
  vision::MlsdOptions options;
  LOOM_ASSIGN_OR_RETURN(options.score_threshold, context.Param<float>(params, name, "threshold", 0.1f));
  LOOM_ASSIGN_OR_RETURN(options.min_length, context.Param<float>(params, name, "min_length", 20.0f));
  context.Declare(name, {ValueType::kLines, std::nullopt, name});
  return std::unique_ptr<Node>(new MlsdNode(name, input.producer,
                                            params["image"] ? params["image"].as<std::string>() : "image", options));
}

}  // namespace loom::pipeline
