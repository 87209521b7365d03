// infer: runs a model of the engine on tensors produced by earlier nodes. Submits and returns at
// once; nodes reading the outputs wait for them, so a frame's independent branches run together.
//   model: face
//   input: face_in                  (single-input models), or
//   inputs: {input:0: face_in}      (model input name -> value)
//   max_rows: 4                     (optional) a fan-out batch of more rows goes out as several
//                                   requests, so that every worker of the model takes a share;
//                                   their outputs are joined back in row order. The model's own
//                                   limit (max_batch_size) applies too.
#include "pipeline/nodes/nodes.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/tensor_rows.h"

namespace loom::pipeline {
namespace {

class InferNode final : public Node {
 public:
  InferNode(std::string name, std::string model, std::vector<std::pair<std::string, std::string>> inputs,
            int max_rows)
      : Node(std::move(name)), model_(std::move(model)), inputs_(std::move(inputs)), max_rows_(max_rows) {}

  absl::Status Process(Frame& frame, NodeContext& context) const override {
    NamedTensors tensors;
    bool empty = false;
    for (const auto& [model_input, value] : inputs_) {
      tensors.push_back({model_input, frame.values.at(value).tensor});
      empty |= tensors.back().tensor.rank() > 0 && tensors.back().tensor.dim(0) == 0;
    }
    Value v;
    v.type = ValueType::kOutputs;
    if (empty) {  // a fan-out with nothing to fan out (no detections): no run, no outputs
      std::promise<absl::StatusOr<NamedTensors>> none;
      none.set_value(NamedTensors{});
      v.outputs = none.get_future().share();
    } else if (const int rows = RowsPerRequest(context);
               rows > 0 && tensors[0].tensor.rank() > 0 && tensors[0].tensor.dim(0) > rows) {
      v.outputs = SubmitInParts(context, tensors, rows);
    } else {
      v.outputs = context.Submit(model_, std::move(tensors));
    }
    frame.values[name()] = std::move(v);
    return absl::OkStatus();
  }

 private:
  // The most rows per request: the node's max_rows and the model's limit, whichever is lower.
  int RowsPerRequest(const NodeContext& context) const {
    const int model_rows = context.MaxRows(model_);
    if (max_rows_ > 0 && model_rows > 0) return std::min(max_rows_, model_rows);
    return std::max(max_rows_, model_rows);
  }

  // Row slices of at most `per_request` rows, submitted at once; a future that joins their outputs.
  PendingOutputs SubmitInParts(NodeContext& context, const NamedTensors& tensors, int per_request) const {
    const int64_t rows = tensors[0].tensor.dim(0);
    std::vector<PendingOutputs> parts;
    for (int64_t begin = 0; begin < rows; begin += per_request) {
      const int64_t end = std::min<int64_t>(rows, begin + per_request);
      NamedTensors slice;
      for (const NamedTensor& t : tensors) slice.push_back({t.name, t.tensor.SliceRows(begin, end)});
      parts.push_back(context.Submit(model_, std::move(slice)));
    }
    return std::async(std::launch::deferred, [parts]() -> absl::StatusOr<NamedTensors> {
             std::vector<NamedTensors> outputs;
             for (const PendingOutputs& part : parts) {
               LOOM_ASSIGN_OR_RETURN(NamedTensors out, part.get());
               outputs.push_back(std::move(out));
             }
             std::vector<const NamedTensors*> pointers;
             for (const NamedTensors& out : outputs) pointers.push_back(&out);
             return ConcatRows(pointers);
           }).share();
  }

  std::string model_;
  std::vector<std::pair<std::string, std::string>> inputs_;
  int max_rows_;
};

}  // namespace

LOOM_NODE_FACTORY_IMPL(MakeInferNode) {
  LOOM_RETURN_IF_ERROR(context.Keys(params, name, {"model", "input", "inputs", "max_rows"}));
  const YamlReader r = context.Reader(name);
  LOOM_ASSIGN_OR_RETURN(std::string model, r.String(params, "model"));
  const ModelInfo* info = context.Model(model);
  if (!info) return context.Error(params["model"], name, "unknown model '" + model + "'");
  std::vector<std::pair<std::string, std::string>> inputs;  // model input -> value
  std::vector<YAML::Node> where;
  if (params["input"]) {
    if (info->inputs.size() != 1) {
      return context.Error(params["input"], name, absl::StrCat("model '", model, "' has ", info->inputs.size(),
                                                               " inputs: map them with 'inputs'"));
    }
    LOOM_ASSIGN_OR_RETURN(std::string value, r.String(params, "input"));
    inputs.emplace_back(info->inputs[0].name, value);
    where.push_back(params["input"]);
  } else if (params["inputs"] && params["inputs"].IsMap()) {
    for (const auto& kv : params["inputs"]) {
      LOOM_ASSIGN_OR_RETURN(std::string model_input, r.StringValue(kv.first, "inputs"));
      LOOM_ASSIGN_OR_RETURN(std::string value, r.StringValue(kv.second, model_input));
      inputs.emplace_back(model_input, value);
      where.push_back(kv.second);
    }
  } else {
    return context.Error(params, name, "needs 'input' or 'inputs' (a mapping)");
  }
  NamedTensors warmup;  // fixed shapes feeding every input: the engine measures them
  for (size_t i = 0; i < inputs.size(); ++i) {
    const auto& [model_input, value] = inputs[i];
    const int index = info->FindInput(model_input);
    if (index < 0) return context.Error(where[i], name, absl::StrCat("model '", model, "' has no input '", model_input, "'"));
    LOOM_ASSIGN_OR_RETURN(ValueSpec spec, context.Value(where[i], name, value, ValueType::kTensor));
    const TensorInfo& want = info->inputs[static_cast<size_t>(index)];
    if (spec.shape) {  // a fixed shape: check it against the model now, not on the first frame
      bool ok = spec.shape->size() == want.shape.size();
      for (size_t d = 0; ok && d < want.shape.size(); ++d) {
        ok = want.shape[d].is_dynamic() || want.shape[d].value == (*spec.shape)[d];
      }
      if (!ok) {
        return context.Error(params, name, absl::StrCat("node '", value, "' produces ", ShapeToString(*spec.shape),
                                                        " f32 but model '", model, "' input '", model_input,
                                                        "' expects ", want.Describe()));
      }
      // Zeros: a convolutional model's cost does not depend on the values.
      warmup.push_back({model_input, Tensor::Allocate(DType::kFloat32, *spec.shape)});
    }
  }
  if (inputs.size() != info->inputs.size()) {
    return context.Error(params, name, absl::StrCat("model '", model, "' needs ", info->inputs.size(), " inputs, ",
                                                    inputs.size(), " given"));
  }
  if (warmup.size() == info->inputs.size()) context.AddWarmup(model, std::move(warmup));
  LOOM_ASSIGN_OR_RETURN(int64_t max_rows, r.Int(params, "max_rows", 0, 1 << 16, 0));
  context.Declare(name, {ValueType::kOutputs, std::nullopt, name});
  return std::unique_ptr<Node>(new InferNode(name, model, std::move(inputs), static_cast<int>(max_rows)));
}

absl::StatusOr<NamedTensors> AwaitOutputs(const Frame& frame, const std::string& input, NodeContext& context) {
  return context.Await(frame.values.at(input).outputs);
}

}  // namespace loom::pipeline
