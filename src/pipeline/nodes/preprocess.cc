// preprocess: an image → a model input tensor, the way blobFromImage makes it; or a fan-out's
// crops → one [N,...] batch, a row per crop.
//   input: image            (an image value, default the frame; or a crops value)
//   model: face             (optional: take size, layout and channel count from this model's input)
//   size: [W, H]            (or max_side + multiple_of for models with dynamic H/W; images only)
//   layout: NCHW | NHWC     channels: BGR | RGB | RGBA | BGRA | GRAY
//   scale: 0.0078431        mean: [127.5, 127.5, 127.5]   std: [1, 1, 1]
//   crop: false | letterbox: false (+ pad: 0)   keep the aspect: crop the centre, or pad around
//   filter: none | sobel    sobel: the gray levels' gradient magnitude in every channel
// Decoders given `preprocess: <this node>` map their coordinates back through the resize (and,
// for crops, through each crop's place in the frame). Also here: letterbox (YOLO's input), the
// same blob made with the aspect kept and padding around.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "pipeline/nodes/nodes.h"
#include "vision/blob.h"

namespace loom::pipeline {
namespace {

class PreprocessNode final : public Node {
 public:
  // `letterbox_stride` > 0: YOLO's letterbox — the longer side scaled to max_side (up or down),
  // the aspect kept, each side padded up to a multiple of the stride (centred).
  PreprocessNode(std::string name, std::string input, vision::BlobOptions blob, int max_side,
                 int multiple, int letterbox_stride = 0)
      : Node(std::move(name)),
        input_(std::move(input)),
        blob_(blob),
        max_side_(max_side),
        multiple_(multiple),
        letterbox_stride_(letterbox_stride) {}

  absl::Status Process(Frame& frame, NodeContext&) const override {
    const Value& in = frame.values.at(input_);
    Value v;
    v.type = ValueType::kTensor;
    if (in.type == ValueType::kCrops) {
      LOOM_ASSIGN_OR_RETURN(v.tensor, Rows(in, v.row_to_image));
      v.detections = in.detections;
    } else {
      vision::BlobOptions blob = blob_;
      if (letterbox_stride_ > 0) {
        const double r = static_cast<double>(max_side_) / std::max(in.image.cols, in.image.rows);
        auto padded = [&](int side) {
          const int scaled = std::max(1, static_cast<int>(std::lround(side * r)));
          return (scaled + letterbox_stride_ - 1) / letterbox_stride_ * letterbox_stride_;
        };
        blob.width = padded(in.image.cols);
        blob.height = padded(in.image.rows);
      } else if (multiple_ > 0) {  // dynamic size: fit within max_side, round to the multiple
        const double f =
            std::min(1.0, static_cast<double>(max_side_) / std::max(in.image.cols, in.image.rows));
        blob.width = std::max(
            multiple_, static_cast<int>(std::lround(in.image.cols * f / multiple_)) * multiple_);
        blob.height = std::max(
            multiple_, static_cast<int>(std::lround(in.image.rows * f / multiple_)) * multiple_);
      }
      LOOM_ASSIGN_OR_RETURN(v.tensor, vision::BlobFromImage(in.image, blob));
      v.to_image = vision::TransformFor(in.image.size(), blob);
    }
    frame.values[name()] = std::move(v);
    return absl::OkStatus();
  }

 private:
  // Every crop as a row of one [N,...] tensor, and per row the map from model-input pixels to the
  // frame's: through the resize into the crop, then the crop's place in the frame.
  absl::StatusOr<Tensor> Rows(const Value& in,
                              std::vector<vision::ImageTransform>& to_image) const {
    const int64_t ch = vision::ChannelCount(blob_.channels);
    const Shape row = blob_.layout == ImageLayout::kNCHW ? Shape{ch, blob_.height, blob_.width}
                                                         : Shape{blob_.height, blob_.width, ch};
    Shape shape{static_cast<int64_t>(in.crops.size())};
    shape.insert(shape.end(), row.begin(), row.end());
    LOOM_ASSIGN_OR_RETURN(Tensor out, Tensor::TryAllocate(DType::kFloat32, shape));
    const size_t row_bytes = in.crops.empty() ? 0 : out.byte_size() / in.crops.size();
    for (size_t i = 0; i < in.crops.size(); ++i) {
      LOOM_ASSIGN_OR_RETURN(Tensor one, vision::BlobFromImage(in.crops[i], blob_));
      std::memcpy(static_cast<std::byte*>(out.data()) + i * row_bytes, one.data(), row_bytes);
      const vision::ImageTransform resize = vision::TransformFor(in.crops[i].size(), blob_);
      const vision::ImageTransform crop =
          i < in.row_to_image.size() ? in.row_to_image[i] : vision::ImageTransform{};
      // model -> crop: c = (m - o1) / s1; crop -> frame: f = (c - o2) / s2 = (m - o1 - o2 s1) / (s1
      // s2)
      vision::ImageTransform t;
      t.scale_x = resize.scale_x * crop.scale_x;
      t.scale_y = resize.scale_y * crop.scale_y;
      t.offset_x = resize.offset_x + crop.offset_x * resize.scale_x;
      t.offset_y = resize.offset_y + crop.offset_y * resize.scale_y;
      to_image.push_back(t);
    }
    return out;
  }

 private:
  std::string input_;
  vision::BlobOptions blob_;
  int max_side_, multiple_, letterbox_stride_;
};

absl::StatusOr<std::array<double, 4>> FourValues(const YamlReader& r, const YAML::Node& params,
                                                 const char* key, double fallback, double min,
                                                 double max) {
  std::array<double, 4> out;
  out.fill(fallback);
  if (!params[key]) return out;
  LOOM_ASSIGN_OR_RETURN(std::vector<double> xs, r.Doubles(params, key, min, max, 1, 4));
  for (size_t i = 0; i < 4; ++i) out[i] = xs[std::min(i, xs.size() - 1)];
  return out;
}

constexpr int64_t kMaxSide = 16384;  // pixels: a larger model input is a mistake

}  // namespace

// letterbox: YOLO's input — the image scaled so that its longer side is `size` (up or down), the
// aspect kept, each side padded (centred) with `pad` up to a multiple of `stride`; NCHW RGB in
// [0, 1] unless told otherwise. Decoders given `preprocess: <this node>` map boxes back through it.
//   input: image   size: 640   stride: 32   pad: 114
//   layout, channels, scale, mean, std: as preprocess (defaults NCHW, RGB, 1/255, 0, 1)
LOOM_NODE_FACTORY_IMPL(MakeLetterboxNode) {
  LOOM_RETURN_IF_ERROR(context.Keys(
      params, name,
      {"input", "size", "stride", "pad", "layout", "channels", "scale", "mean", "std"}));
  const YamlReader r = context.Reader(name);
  LOOM_ASSIGN_OR_RETURN(ValueSpec input, context.Input(params, name, "input", ValueType::kImage));
  LOOM_ASSIGN_OR_RETURN(int64_t size, r.Int(params, "size", 32, kMaxSide, 640));
  LOOM_ASSIGN_OR_RETURN(int64_t stride, r.Int(params, "stride", 1, 1024, 32));
  if (size % stride != 0) {
    return context.Error(
        params["size"], name,
        absl::StrCat("'size' (", size, ") must be a multiple of 'stride' (", stride, ")"));
  }
  vision::BlobOptions blob;
  blob.letterbox = true;
  LOOM_ASSIGN_OR_RETURN(blob.pad_value, r.Double(params, "pad", 0, 255, 114));
  LOOM_ASSIGN_OR_RETURN(std::string layout, r.Choice(params, "layout", {"NCHW", "NHWC"}, "NCHW"));
  blob.layout = layout == "NCHW" ? ImageLayout::kNCHW : ImageLayout::kNHWC;
  LOOM_ASSIGN_OR_RETURN(std::string channels,
                        r.Choice(params, "channels", {"BGR", "RGB", "GRAY"}, "RGB"));
  blob.channels = *vision::ParseChannelOrder(channels);
  LOOM_ASSIGN_OR_RETURN(blob.scale, r.Double(params, "scale", -1e6, 1e6, 1.0 / 255.0));
  LOOM_ASSIGN_OR_RETURN(blob.mean, FourValues(r, params, "mean", 0, -1e6, 1e6));
  LOOM_ASSIGN_OR_RETURN(blob.std, FourValues(r, params, "std", 1, 1e-9, 1e9));
  context.Declare(name, {ValueType::kTensor, std::nullopt, name});
  return std::unique_ptr<Node>(new PreprocessNode(
      name, input.producer, blob, static_cast<int>(size), 0, static_cast<int>(stride)));
}

namespace {

// The blob options a model's first input asks for (its fixed size, layout and channels).
absl::StatusOr<vision::BlobOptions> OptionsForModel(BuildContext& c, const YamlReader& r,
                                                    const YAML::Node& params,
                                                    const std::string& name) {
  LOOM_ASSIGN_OR_RETURN(std::string model, r.String(params, "model"));
  const ModelInfo* info = c.Model(model);
  if (!info) return c.Error(params["model"], name, "unknown model '" + model + "'");
  if (info->inputs.empty())
    return c.Error(params["model"], name, "model '" + model + "' has no input");
  auto options = vision::BlobOptionsFor(info->inputs[0], {0, 0});
  if (!options.ok()) {
    return c.Error(params["model"], name,
                   std::string(options.status().message()) + "; give size or max_side");
  }
  if (options->width > kMaxSide || options->height > kMaxSide) {
    return c.Error(params["model"], name,
                   absl::StrCat("model '", model, "' input is ", options->width, "x",
                                options->height, ", over ", kMaxSide, " pixels a side"));
  }
  return *options;
}

}  // namespace

LOOM_NODE_FACTORY_IMPL(MakePreprocessNode) {
  BuildContext& c = context;
  LOOM_RETURN_IF_ERROR(
      c.Keys(params, name,
             {"input", "model", "size", "max_side", "multiple_of", "layout", "channels", "scale",
              "mean", "std", "crop", "letterbox", "pad", "filter"}));
  const YamlReader r = c.Reader(name);
  LOOM_ASSIGN_OR_RETURN(ValueSpec input,
                        c.Input(params, name, "input", {ValueType::kImage, ValueType::kCrops}));
  const bool crops = input.type == ValueType::kCrops;
  vision::BlobOptions blob;
  int max_side = 0, multiple = 0;
  if (params["model"]) {
    LOOM_ASSIGN_OR_RETURN(blob, OptionsForModel(c, r, params, name));
  }
  if (params["size"]) {
    LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> size, r.Ints(params, "size", 1, kMaxSide, 2, 2));
    blob.width = static_cast<int>(size[0]);
    blob.height = static_cast<int>(size[1]);
  }
  if (params["max_side"] || params["multiple_of"]) {
    LOOM_ASSIGN_OR_RETURN(int64_t side, r.Int(params, "max_side", 1, kMaxSide, 960));
    LOOM_ASSIGN_OR_RETURN(int64_t mult, r.Int(params, "multiple_of", 1, 1024, 32));
    max_side = static_cast<int>(side);
    multiple = static_cast<int>(mult);
  }
  if (multiple == 0 && (blob.width < 1 || blob.height < 1)) {
    return c.Error(params, name, "needs 'size', 'max_side', or a 'model' with a fixed input size");
  }
  if (params["layout"]) {
    LOOM_ASSIGN_OR_RETURN(std::string layout, r.Choice(params, "layout", {"NCHW", "NHWC"}));
    blob.layout = layout == "NCHW" ? ImageLayout::kNCHW : ImageLayout::kNHWC;
  }
  if (params["channels"]) {
    LOOM_ASSIGN_OR_RETURN(std::string channels,
                          r.Choice(params, "channels", {"BGR", "RGB", "BGRA", "RGBA", "GRAY"}));
    blob.channels = *vision::ParseChannelOrder(channels);
  }
  LOOM_ASSIGN_OR_RETURN(blob.scale, r.Double(params, "scale", -1e6, 1e6, blob.scale));
  LOOM_ASSIGN_OR_RETURN(blob.mean, FourValues(r, params, "mean", 0, -1e6, 1e6));
  LOOM_ASSIGN_OR_RETURN(blob.std, FourValues(r, params, "std", 1, 1e-9, 1e9));
  LOOM_ASSIGN_OR_RETURN(blob.center_crop, r.Bool(params, "crop", false));
  LOOM_ASSIGN_OR_RETURN(blob.letterbox, r.Bool(params, "letterbox", false));
  LOOM_ASSIGN_OR_RETURN(blob.pad_value, r.Double(params, "pad", -1e6, 1e6, 0.0));
  if (blob.letterbox && blob.center_crop)
    return c.Error(params, name, "'crop' and 'letterbox' exclude each other");
  LOOM_ASSIGN_OR_RETURN(std::string filter, r.Choice(params, "filter", {"none", "sobel"}, "none"));
  if (filter == "sobel") blob.filter = vision::BlobOptions::Filter::kSobel;
  if (crops && multiple > 0) {
    return c.Error(
        params, name,
        "crops are batched at one size: give 'size' or a 'model' with a fixed input size, "
        "not 'max_side'/'multiple_of'");
  }

  ValueSpec out{ValueType::kTensor, std::nullopt, name};
  const int64_t ch = vision::ChannelCount(blob.channels);
  const Shape row = blob.layout == ImageLayout::kNCHW ? Shape{ch, blob.height, blob.width}
                                                      : Shape{blob.height, blob.width, ch};
  if (crops) {
    out.row_classes = {row};  // a fan-out: the infer node measures how many rows run best together
  } else if (multiple == 0) {
    out.shape = Shape{1};
    out.shape->insert(out.shape->end(), row.begin(), row.end());
  }
  c.Declare(name, out);
  return std::unique_ptr<Node>(new PreprocessNode(name, input.producer, blob, max_side, multiple));
}

}  // namespace loom::pipeline
