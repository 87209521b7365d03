// angle: the angle classifier's [N,2] probabilities (0°, 180°) → the crops turned upright.
//   input: cls   crops: crops   threshold: 0.9
#include <opencv2/core.hpp>

#include "pipeline/nodes/nodes.h"

namespace loom::pipeline {
namespace {

class AngleNode final : public Node {
 public:
  AngleNode(std::string name, std::string input, std::string crops, float threshold)
      : Node(std::move(name)),
        input_(std::move(input)),
        crops_(std::move(crops)),
        threshold_(threshold) {}

  absl::Status Process(Frame& frame, NodeContext& context) const override {
    Value v = frame.values.at(crops_);  // shares the crops' pixels until one is turned
    if (!v.crops.empty()) {
      LOOM_ASSIGN_OR_RETURN(NamedTensors outputs, AwaitOutputs(frame, input_, context));
      const Tensor& p = outputs[0].tensor;  // [N,2]
      if (p.element_count() != static_cast<int64_t>(v.crops.size()) * 2) {
        return absl::InvalidArgumentError("angle classifier output " + p.Describe() +
                                          " does not match " + std::to_string(v.crops.size()) +
                                          " crops");
      }
      if (p.dtype() != DType::kFloat32)
        return absl::InvalidArgumentError("angle classifier output " + p.Describe() +
                                          " is not f32");
      for (size_t i = 0; i < v.crops.size(); ++i) {
        if (p.data_as<float>()[i * 2 + 1] > threshold_) {
          cv::Mat turned;
          cv::rotate(v.crops[i], turned, cv::ROTATE_180);
          v.crops[i] = turned;
          v.rotated[i] = !v.rotated[i];
        }
      }
    }
    frame.values[name()] = std::move(v);
    return absl::OkStatus();
  }

 private:
  std::string input_, crops_;
  float threshold_;
};

}  // namespace

LOOM_NODE_FACTORY_IMPL(MakeAngleNode) {
  LOOM_RETURN_IF_ERROR(context.Keys(params, name, {"input", "crops", "threshold"}));
  LOOM_ASSIGN_OR_RETURN(ValueSpec input, context.Input(params, name, "input", ValueType::kOutputs));
  LOOM_ASSIGN_OR_RETURN(ValueSpec crops, context.Input(params, name, "crops", ValueType::kCrops));
  LOOM_ASSIGN_OR_RETURN(double threshold,
                        context.Reader(name).Double(params, "threshold", 0, 1, 0.9));
  context.Declare(name, {ValueType::kCrops, std::nullopt, name});
  return std::unique_ptr<Node>(
      new AngleNode(name, input.producer, crops.producer, static_cast<float>(threshold)));
}

}  // namespace loom::pipeline
