// classify: a classifier's outputs over a fan-out of crops → each detection labelled with its
// best class and that class's probability (softmax of the logits; outputs that already sum to 1
// are taken as probabilities).
//   input: frown          (an infer node over a preprocess of box_crop crops)
//   preprocess: frown_in  (that preprocess node: which detection each row belongs to)
//   labels: [normal, frown]   class names (optional; a file path also works: one name per line)
//   record: true          write the detections to the frame's record
// Output: the detections, each with `label`, `label_score` and `label_name`, in the same order.
// Record: "<name>": [{"box", "score", "keypoints", "landmarks"?, "label": name or index,
// "label_score"}]
#include <cmath>

#include "absl/strings/str_cat.h"
#include "pipeline/nodes/nodes.h"

namespace loom::pipeline {
namespace {

class ClassifyNode final : public Node {
 public:
  ClassifyNode(std::string name, std::string input, std::string preprocess,
               std::vector<std::string> labels, bool record)
      : Node(std::move(name)),
        input_(std::move(input)),
        preprocess_(std::move(preprocess)),
        labels_(std::move(labels)),
        record_(record) {}

  absl::Status Process(Frame& frame, NodeContext& context) const override {
    Value v;
    v.type = ValueType::kDetections;
    v.detections = frame.values.at(preprocess_).detections;
    const size_t n = v.detections.size();
    if (n > 0) {
      LOOM_ASSIGN_OR_RETURN(NamedTensors outputs, AwaitOutputs(frame, input_, context));
      if (outputs.empty()) return absl::InvalidArgumentError("classify: the model gave no output");
      const Tensor& t = outputs[0].tensor;
      if (t.dtype() != DType::kFloat32 || t.rank() < 1 || t.dim(0) != static_cast<int64_t>(n) ||
          t.element_count() < static_cast<int64_t>(n)) {
        return absl::InvalidArgumentError(absl::StrCat("classify: output '", outputs[0].name,
                                                       "' is ", t.Describe(), "; expected [", n,
                                                       ", classes] f32 (a row per crop)"));
      }
      const int64_t classes = t.element_count() / static_cast<int64_t>(n);
      if (!labels_.empty() && classes != static_cast<int64_t>(labels_.size())) {
        return absl::InvalidArgumentError(absl::StrCat("classify: the model gives ", classes,
                                                       " classes, but ", labels_.size(),
                                                       " labels were named"));
      }
      for (size_t i = 0; i < n; ++i)
        Label(t.data_as<float>() + static_cast<int64_t>(i) * classes, classes, v.detections[i]);
    }
    if (record_) frame.record[name()] = ToJson(v.detections);
    frame.values[name()] = std::move(v);
    return absl::OkStatus();
  }

 private:
  void Label(const float* logits, int64_t classes, vision::Detection& d) const {
    std::vector<double> p(logits, logits + classes);
    double sum = 0;
    bool probabilities = true;
    for (double x : p) {
      sum += x;
      probabilities &= x >= 0 && x <= 1;
    }
    if (!probabilities || std::fabs(sum - 1.0) > 1e-3) {  // logits: softmax
      const double top = *std::max_element(p.begin(), p.end());
      double z = 0;
      for (double& x : p) z += (x = std::exp(x - top));
      for (double& x : p) x /= z;
    }
    const auto best = std::max_element(p.begin(), p.end());
    d.label = static_cast<int>(best - p.begin());
    d.label_score = static_cast<float>(*best);
    d.label_name =
        d.label < static_cast<int>(labels_.size()) ? labels_[static_cast<size_t>(d.label)] : "";
  }

  std::string input_, preprocess_;
  std::vector<std::string> labels_;
  bool record_;
};

}  // namespace

LOOM_NODE_FACTORY_IMPL(MakeClassifyNode) {
  LOOM_RETURN_IF_ERROR(context.Keys(params, name, {"input", "preprocess", "labels", "record"}));
  const YamlReader r = context.Reader(name);
  LOOM_ASSIGN_OR_RETURN(ValueSpec input, context.Input(params, name, "input", ValueType::kOutputs));
  LOOM_ASSIGN_OR_RETURN(ValueSpec preprocess,
                        context.Input(params, name, "preprocess", ValueType::kTensor));
  if (preprocess.row_classes.empty()) {
    return context.Error(params["preprocess"], name,
                         "'preprocess' must name a preprocess node over crops");
  }
  LOOM_ASSIGN_OR_RETURN(std::vector<std::string> labels, context.Labels(params, name));
  LOOM_ASSIGN_OR_RETURN(bool record, r.Bool(params, "record", true));
  context.Declare(name, {ValueType::kDetections, std::nullopt, name});
  return std::unique_ptr<Node>(
      new ClassifyNode(name, input.producer, preprocess.producer, std::move(labels), record));
}

}  // namespace loom::pipeline
