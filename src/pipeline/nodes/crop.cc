// crop: fan-out — for every text box of the frame, its perspective crop, upright.
//   boxes: boxes   image: image
#include "pipeline/nodes/nodes.h"

namespace loom::pipeline {
namespace {

class CropNode final : public Node {
 public:
  CropNode(std::string name, std::string boxes, std::string image)
      : Node(std::move(name)), boxes_(std::move(boxes)), image_(std::move(image)) {}

  absl::Status Process(Frame& frame, NodeContext&) const override {
    const cv::Mat& image = frame.values.at(image_).image;
    Value v;
    v.type = ValueType::kCrops;
    for (const vision::TextBox& box : frame.values.at(boxes_).boxes)
      v.crops.push_back(vision::CropText(image, box));
    v.rotated.assign(v.crops.size(), false);
    frame.values[name()] = std::move(v);
    return absl::OkStatus();
  }

 private:
  std::string boxes_, image_;
};

}  // namespace

LOOM_NODE_FACTORY_IMPL(MakeCropNode) {
  LOOM_RETURN_IF_ERROR(context.Keys(params, name, {"boxes", "image"}));
  LOOM_ASSIGN_OR_RETURN(ValueSpec boxes,
                        context.Input(params, name, "boxes", ValueType::kTextBoxes));
  LOOM_ASSIGN_OR_RETURN(ValueSpec image, context.Input(params, name, "image", ValueType::kImage));
  context.Declare(name, {ValueType::kCrops, std::nullopt, name});
  return std::unique_ptr<Node>(new CropNode(name, boxes.producer, image.producer));
}

}  // namespace loom::pipeline
