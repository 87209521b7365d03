// topk: a classifier's output → its k best classes after a softmax (skipped if the output
// already sums to 1).   input: cls   k: 5   labels: optional: a list, or a file with one per line
// Record: "<name>": [{"class": i, "label": l, "score": s}]  (one list per row of the batch)
#include <cmath>

#include "core/tensor_util.h"
#include "pipeline/nodes/nodes.h"

namespace loom::pipeline {
namespace {

class TopKNode final : public Node {
 public:
  TopKNode(std::string name, std::string input, int k, std::vector<std::string> labels)
      : Node(std::move(name)), input_(std::move(input)), k_(k), labels_(std::move(labels)) {}

  absl::Status Process(Frame& frame, NodeContext& context) const override {
    LOOM_ASSIGN_OR_RETURN(NamedTensors outputs, AwaitOutputs(frame, input_, context));
    if (outputs.empty()) return absl::InvalidArgumentError("topk: the model gave no output");
    const Tensor& t = outputs[0].tensor;
    if (t.dtype() != DType::kFloat32 || t.rank() < 1)
      return absl::InvalidArgumentError("topk needs an f32 output");
    const int64_t rows = t.rank() >= 2 ? t.dim(0) : 1;
    const int64_t classes = rows > 0 ? t.element_count() / rows : 0;
    nlohmann::json all = nlohmann::json::array();
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<float> p(t.data_as<float>() + r * classes,
                           t.data_as<float>() + (r + 1) * classes);
      double sum = 0;
      for (float x : p) sum += x;
      if (std::fabs(sum - 1.0) > 1e-3) {  // logits: softmax
        const float top = *std::max_element(p.begin(), p.end());
        double z = 0;
        for (float& x : p) z += (x = std::exp(x - top));
        for (float& x : p) x = static_cast<float>(x / z);
      }
      Tensor row = Tensor::Borrow(DType::kFloat32, {classes}, p.data());
      nlohmann::json best = nlohmann::json::array();
      for (const auto& [index, score] : TopK(row, k_)) {
        nlohmann::json c = {{"class", index}, {"score", Round(score, 4)}};
        if (index < static_cast<int64_t>(labels_.size()))
          c["label"] = labels_[static_cast<size_t>(index)];
        best.push_back(c);
      }
      all.push_back(best);
    }
    frame.record[name()] = all;
    return absl::OkStatus();
  }

 private:
  std::string input_;
  int k_;
  std::vector<std::string> labels_;
};

}  // namespace

LOOM_NODE_FACTORY_IMPL(MakeTopKNode) {
  LOOM_RETURN_IF_ERROR(context.Keys(params, name, {"input", "k", "labels"}));
  const YamlReader r = context.Reader(name);
  LOOM_ASSIGN_OR_RETURN(ValueSpec input, context.Input(params, name, "input", ValueType::kOutputs));
  LOOM_ASSIGN_OR_RETURN(int64_t k64, r.Int(params, "k", 1, 1000, 5));
  const int k = static_cast<int>(k64);
  LOOM_ASSIGN_OR_RETURN(std::vector<std::string> labels, context.Labels(params, name));
  // The record is the output; nothing downstream reads a value from it.
  context.Declare(name, {ValueType::kTexts, std::nullopt, name});
  return std::unique_ptr<Node>(new TopKNode(name, input.producer, k, std::move(labels)));
}

}  // namespace loom::pipeline
