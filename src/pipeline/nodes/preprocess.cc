// preprocess: an image → a model input tensor, the way blobFromImage makes it.
//   input: image            (an image value; default the frame)
//   model: face             (optional: take size, layout and channel count from this model's input)
//   size: [W, H]            (or max_side + multiple_of for models with dynamic H/W)
//   layout: NCHW | NHWC     channels: BGR | RGB | RGBA | BGRA | GRAY
//   scale: 0.0078431        mean: [127.5, 127.5, 127.5]   std: [1, 1, 1]
//   crop: false | letterbox: false (+ pad: 0)   keep the aspect: crop the centre, or pad around
// Decoders given `preprocess: <this node>` map their coordinates back through the resize.
#include "pipeline/nodes/nodes.h"

#include "vision/blob.h"

namespace loom::pipeline {
namespace {

class PreprocessNode final : public Node {
 public:
  PreprocessNode(std::string name, std::string input, vision::BlobOptions blob, int max_side, int multiple)
      : Node(std::move(name)), input_(std::move(input)), blob_(blob), max_side_(max_side), multiple_(multiple) {}

  absl::Status Process(Frame& frame, InferenceService&) const override {
    const cv::Mat& image = frame.values.at(input_).image;
    vision::BlobOptions blob = blob_;
    if (multiple_ > 0) {  // dynamic size: fit within max_side, round to the multiple
      const double f = std::min(1.0, static_cast<double>(max_side_) / std::max(image.cols, image.rows));
      blob.width = std::max(multiple_, static_cast<int>(std::lround(image.cols * f / multiple_)) * multiple_);
      blob.height = std::max(multiple_, static_cast<int>(std::lround(image.rows * f / multiple_)) * multiple_);
    }
    LOOM_ASSIGN_OR_RETURN(Tensor t, vision::BlobFromImage(image, blob));
    Value v;
    v.type = ValueType::kTensor;
    v.tensor = std::move(t);
    v.to_image = vision::TransformFor(image.size(), blob);
    frame.values[name()] = std::move(v);
    return absl::OkStatus();
  }

 private:
  std::string input_;
  vision::BlobOptions blob_;
  int max_side_, multiple_;
};

absl::StatusOr<std::array<double, 4>> FourValues(const YAML::Node& params, const std::string& node,
                                                 const char* key, double fallback, BuildContext& c) {
  std::array<double, 4> out;
  out.fill(fallback);
  const YAML::Node v = params[key];
  if (!v) return out;
  if (v.IsScalar()) {
    LOOM_ASSIGN_OR_RETURN(double x, c.Param<double>(params, node, key));
    out.fill(x);
    return out;
  }
  LOOM_ASSIGN_OR_RETURN(std::vector<double> xs, c.Param<std::vector<double>>(params, node, key));
  if (xs.empty() || xs.size() > 4) return c.Error(v, node, std::string("'") + key + "' takes 1 to 4 values");
  for (size_t i = 0; i < 4; ++i) out[i] = xs[std::min(i, xs.size() - 1)];
  return out;
}

}  // namespace

LOOM_NODE_FACTORY_IMPL(MakePreprocessNode) {
  BuildContext& c = context;
  const std::string input = params["input"] ? params["input"].as<std::string>() : "image";
  LOOM_RETURN_IF_ERROR(c.Input(params, name, "input", ValueType::kImage).status());
  vision::BlobOptions blob;
  int max_side = 0, multiple = 0;
  if (params["model"]) {
    LOOM_ASSIGN_OR_RETURN(std::string model, c.Param<std::string>(params, name, "model"));
    const ModelInfo* info = c.Model(model);
    if (!info) return c.Error(params["model"], name, "unknown model '" + model + "'");
    if (info->inputs.empty()) return c.Error(params["model"], name, "model '" + model + "' has no input");
    auto options = vision::BlobOptionsFor(info->inputs[0], {0, 0});
    if (!options.ok()) {
      return c.Error(params["model"], name, std::string(options.status().message()) + "; give size or max_side");
    }
    blob = *options;
  }
  if (params["size"]) {
    LOOM_ASSIGN_OR_RETURN(std::vector<int> size, c.Param<std::vector<int>>(params, name, "size"));
    if (size.size() != 2 || size[0] < 1 || size[1] < 1) return c.Error(params["size"], name, "'size' is [width, height]");
    blob.width = size[0];
    blob.height = size[1];
  }
  if (params["max_side"] || params["multiple_of"]) {
    LOOM_ASSIGN_OR_RETURN(max_side, c.Param<int>(params, name, "max_side", 960));
    LOOM_ASSIGN_OR_RETURN(multiple, c.Param<int>(params, name, "multiple_of", 32));
    if (max_side < 1 || multiple < 1) return c.Error(params, name, "'max_side' and 'multiple_of' must be >= 1");
  }
  if (multiple == 0 && (blob.width < 1 || blob.height < 1)) {
    return c.Error(params, name, "needs 'size', 'max_side', or a 'model' with a fixed input size");
  }
  if (params["layout"]) {
    LOOM_ASSIGN_OR_RETURN(std::string layout, c.Param<std::string>(params, name, "layout"));
    if (layout != "NCHW" && layout != "NHWC") return c.Error(params["layout"], name, "'layout' is NCHW or NHWC");
    blob.layout = layout == "NCHW" ? ImageLayout::kNCHW : ImageLayout::kNHWC;
  }
  if (params["channels"]) {
    LOOM_ASSIGN_OR_RETURN(std::string channels, c.Param<std::string>(params, name, "channels"));
    auto order = vision::ParseChannelOrder(channels);
    if (!order.ok()) return c.Error(params["channels"], name, std::string(order.status().message()));
    blob.channels = *order;
  }
  LOOM_ASSIGN_OR_RETURN(blob.scale, c.Param<double>(params, name, "scale", blob.scale));
  LOOM_ASSIGN_OR_RETURN(blob.mean, FourValues(params, name, "mean", 0, c));
  LOOM_ASSIGN_OR_RETURN(blob.std, FourValues(params, name, "std", 1, c));
  LOOM_ASSIGN_OR_RETURN(blob.center_crop, c.Param<bool>(params, name, "crop", false));
  LOOM_ASSIGN_OR_RETURN(blob.letterbox, c.Param<bool>(params, name, "letterbox", false));
  LOOM_ASSIGN_OR_RETURN(blob.pad_value, c.Param<double>(params, name, "pad", 0.0));
  if (blob.letterbox && blob.center_crop) return c.Error(params, name, "'crop' and 'letterbox' exclude each other");

  ValueSpec out{ValueType::kTensor, std::nullopt, name};
  const int64_t ch = vision::ChannelCount(blob.channels);
  if (multiple == 0) {
    out.shape = blob.layout == ImageLayout::kNCHW ? Shape{1, ch, blob.height, blob.width}
                                                  : Shape{1, blob.height, blob.width, ch};
  }
  c.Declare(name, out);
  return std::unique_ptr<Node>(new PreprocessNode(name, input, blob, max_side, multiple));
}

}  // namespace loom::pipeline
