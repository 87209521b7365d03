// text_batch: the crops of a frame as rows for the next model (PaddleOCR normalisation).
//   input: crops   height: 48   width: 192   a fixed width (the angle classifier): one [N,3,48,192]
//                                             batch, every crop squashed or padded to it
//                               max_width: 1280   (recogniser) each crop a [1,3,48,W] row at its
//                               own
//                                             width, rounded up to a multiple of 32 (lines of
//                                             similar length share a shape) and capped at max_width
// The infer node that reads it decides how many rows go in one request, by measurement (see
// RowBatching): rows of one width bucket run together only where that pays, so padding stays
// within a bucket. A frame with no crops yields no rows; infer nodes then skip the model.
#include "pipeline/nodes/nodes.h"

namespace loom::pipeline {
namespace {

constexpr int kWidthQuantum = 32;

// Width classes the recogniser's row batching is measured on at load: max_width/8, /4, /2 and
// max_width itself (multiples of the quantum); a row takes the class at least as wide as it.
std::vector<Shape> WidthClasses(int height, int max_width) {
  std::vector<Shape> classes;
  for (int div : {8, 4, 2, 1}) {
    const int w =
        std::min(max_width, std::max(kWidthQuantum, (max_width / div + kWidthQuantum - 1) /
                                                        kWidthQuantum * kWidthQuantum));
    if (classes.empty() || classes.back()[2] != w) classes.push_back({3, height, w});
  }
  return classes;
}

class TextBatchNode final : public Node {
 public:
  TextBatchNode(std::string name, std::string input, int height, int width, int max_width)
      : Node(std::move(name)),
        input_(std::move(input)),
        height_(height),
        width_(width),
        max_width_(max_width) {}

  absl::Status Process(Frame& frame, NodeContext&) const override {
    const std::vector<cv::Mat>& crops = frame.values.at(input_).crops;
    Value v;
    v.type = ValueType::kTensor;
    if (crops.empty()) {
      v.tensor = Tensor::Allocate(DType::kFloat32, {0, 3, height_, std::max(width_, 1)});
    } else if (width_ > 0) {
      v.tensor = vision::TextBatch(crops, height_, max_width_, width_);
    } else {
      v.row_widths.resize(crops.size());
      for (size_t i = 0; i < crops.size(); ++i) {
        v.rows.push_back(
            vision::TextRow(crops[i], height_, max_width_, kWidthQuantum, &v.row_widths[i]));
      }
    }
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
  ValueSpec spec{ValueType::kTensor, std::nullopt, name};
  spec.row_classes = width > 0
                         ? std::vector<Shape>{{3, height, width}}
                         : WidthClasses(static_cast<int>(height), static_cast<int>(max_width));
  context.Declare(name, std::move(spec));
  return std::unique_ptr<Node>(new TextBatchNode(name, input.producer, static_cast<int>(height),
                                                 static_cast<int>(width),
                                                 static_cast<int>(max_width)));
}

}  // namespace loom::pipeline
