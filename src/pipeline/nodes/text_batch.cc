// text_batch: all crops of a frame → one [N,3,height,W] tensor (PaddleOCR normalisation), so that
// the next model runs once per frame, not once per detection.
//   input: crops   height: 48   width: 192 (fixed: the angle classifier) | max_width: 1280
// A frame with no crops yields an empty batch; infer nodes then skip the model.
#include "pipeline/nodes/nodes.h"

namespace loom::pipeline {
namespace {

class TextBatchNode final : public Node {
 public:
  TextBatchNode(std::string name, std::string input, int height, int width, int max_width)
      : Node(std::move(name)), input_(std::move(input)), height_(height), width_(width), max_width_(max_width) {}

  absl::Status Process(Frame& frame, NodeContext&) const override {
    const std::vector<cv::Mat>& crops = frame.values.at(input_).crops;
    Value v;
    v.type = ValueType::kTensor;
    v.tensor = crops.empty() ? Tensor::Allocate(DType::kFloat32, {0, 3, height_, std::max(width_, 1)})
                             : vision::TextBatch(crops, height_, max_width_, width_);
    frame.values[name()] = std::move(v);
    return absl::OkStatus();
  }

 private:
  std::string input_;
  int height_, width_, max_width_;
};

}  // namespace

LOOM_NODE_FACTORY_IMPL(MakeTextBatchNode) {
  LOOM_RETURN_IF_ERROR(context.Keys(params, name, {"input", "height", "width", "max_width"}));
  const YamlReader r = context.Reader(name);
  LOOM_ASSIGN_OR_RETURN(ValueSpec input, context.Input(params, name, "input", ValueType::kCrops));
  LOOM_ASSIGN_OR_RETURN(int64_t height, r.Int(params, "height", 1, 1024, 48));
  LOOM_ASSIGN_OR_RETURN(int64_t width, r.Int(params, "width", 0, 16384, 0));
  LOOM_ASSIGN_OR_RETURN(int64_t max_width, r.Int(params, "max_width", 1, 16384, 1280));
  context.Declare(name, {ValueType::kTensor, std::nullopt, name});
  return std::unique_ptr<Node>(new TextBatchNode(name, input.producer, static_cast<int>(height),
                                                 static_cast<int>(width), static_cast<int>(max_width)));
}

}  // namespace loom::pipeline
