// landmarks: a landmark regressor's outputs → points on each detection of the fan-out, in the
// frame's pixels (68 facial points for a face, from a model such as MobileNet_GDConv).
//   input: lm             (an infer node over a preprocess of box_crop crops)
//   preprocess: lm_in     (that preprocess node: each row's crop and resize, mapped back)
//   points: 68            points per row: the output holds [N, 2 * points] values (x, y) ...
//   normalized: true      ... as fractions of the model input's width and height (false: its
//   pixels) record: true          write the detections (box, score, landmarks) to the frame's
//   record
// Output: the detections the crops were cut from, each with its `landmarks`, in the same order.
// Record: "<name>": [{"box", "score", "keypoints", "landmarks": [[x, y] x points]}]
#include "absl/strings/str_cat.h"
#include "pipeline/nodes/nodes.h"

namespace loom::pipeline {
namespace {

class LandmarksNode final : public Node {
 public:
  LandmarksNode(std::string name, std::string input, std::string preprocess, int points,
                bool normalized, bool record, Shape input_size)
      : Node(std::move(name)),
        input_(std::move(input)),
        preprocess_(std::move(preprocess)),
        points_(points),
        normalized_(normalized),
        record_(record),
        input_size_(std::move(input_size)) {}

  absl::Status Process(Frame& frame, NodeContext& context) const override {
    const Value& rows = frame.values.at(preprocess_);
    Value v;
    v.type = ValueType::kDetections;
    v.detections = rows.detections;
    const size_t n = v.detections.size();
    if (n > 0) {
      LOOM_ASSIGN_OR_RETURN(NamedTensors outputs, AwaitOutputs(frame, input_, context));
      if (outputs.empty()) return absl::InvalidArgumentError("landmarks: the model gave no output");
      const Tensor& t = outputs[0].tensor;
      const int64_t per_row = int64_t{2} * points_;
      if (t.dtype() != DType::kFloat32 || t.rank() < 1 || t.dim(0) != static_cast<int64_t>(n) ||
          t.element_count() != static_cast<int64_t>(n) * per_row || rows.row_to_image.size() != n) {
        return absl::InvalidArgumentError(absl::StrCat(
            "landmarks: output '", outputs[0].name, "' is ", t.Describe(), "; expected [", n, ",",
            per_row, "] f32 (", points_, " points for each of ", n, " crops)"));
      }
      const float* xy = t.data_as<float>();
      const double w = normalized_ ? static_cast<double>(input_size_[1]) : 1.0;
      const double h = normalized_ ? static_cast<double>(input_size_[0]) : 1.0;
      for (size_t i = 0; i < n; ++i) {
        std::vector<vision::Point>& out = v.detections[i].landmarks;
        out.clear();
        for (int p = 0; p < points_; ++p) {
          const float* q = xy + static_cast<int64_t>(i) * per_row + 2 * p;
          const cv::Point2f f = rows.row_to_image[i].ToImage(
              {static_cast<float>(q[0] * w), static_cast<float>(q[1] * h)});
          out.push_back({f.x, f.y});
        }
      }
    }
    if (record_) frame.record[name()] = ToJson(v.detections);
    frame.values[name()] = std::move(v);
    return absl::OkStatus();
  }

 private:
  std::string input_, preprocess_;
  int points_;
  bool normalized_, record_;
  Shape input_size_;  // the model input's [H, W]
};

}  // namespace

LOOM_NODE_FACTORY_IMPL(MakeLandmarksNode) {
  LOOM_RETURN_IF_ERROR(
      context.Keys(params, name, {"input", "preprocess", "points", "normalized", "record"}));
  const YamlReader r = context.Reader(name);
  LOOM_ASSIGN_OR_RETURN(ValueSpec input, context.Input(params, name, "input", ValueType::kOutputs));
  LOOM_ASSIGN_OR_RETURN(ValueSpec preprocess,
                        context.Input(params, name, "preprocess", ValueType::kTensor));
  if (preprocess.row_classes.size() != 1 || preprocess.row_classes[0].size() != 3) {
    return context.Error(params["preprocess"], name,
                         "'preprocess' must name a preprocess node over crops (rows of one [C,H,W] "
                         "or [H,W,C] size)");
  }
  const Shape& row = preprocess.row_classes[0];
  // [C,H,W] or [H,W,C]: the channel count is the small dim at either end.
  const Shape size = row[0] <= 4 ? Shape{row[1], row[2]} : Shape{row[0], row[1]};
  LOOM_ASSIGN_OR_RETURN(int64_t points, r.Int(params, "points", 1, 4096, 68));
  LOOM_ASSIGN_OR_RETURN(bool normalized, r.Bool(params, "normalized", true));
  LOOM_ASSIGN_OR_RETURN(bool record, r.Bool(params, "record", true));
  context.Declare(name, {ValueType::kDetections, std::nullopt, name});
  return std::unique_ptr<Node>(new LandmarksNode(name, input.producer, preprocess.producer,
                                                 static_cast<int>(points), normalized, record,
                                                 size));
}

}  // namespace loom::pipeline
