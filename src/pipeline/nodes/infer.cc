// infer: runs a model of the engine on tensors produced by earlier nodes. Submits and returns at
// once; nodes reading the outputs wait for them, so a frame's independent branches run together.
//   model: face
//   input: face_in                  (single-input models), or
//   inputs: {input:0: face_in}      (model input name -> value)
//   max_rows: 4                     (optional) a fan-out batch of more rows goes out as several
//                                   requests, so that every worker of the model takes a share;
//                                   their outputs are joined back in row order
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

  absl::Status Process(Frame& frame, InferenceService& inference) const override {
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
    } else if (const int rows = RowsPerRequest(inference);
               rows > 0 && tensors[0].tensor.rank() > 0 && tensors[0].tensor.dim(0) > rows) {
      v.outputs = SubmitInParts(inference, tensors, rows);
    } else {
      v.outputs = inference.Submit(model_, std::move(tensors));
    }
    frame.values[name()] = std::move(v);
    return absl::OkStatus();
  }

 private:
  // Row slices of at most max_rows_, submitted at once; a future that joins their outputs.
  // The most rows per request: the node's max_rows and the model's limit, whichever is lower.
  int RowsPerRequest(const InferenceService& inference) const {
    const int model_rows = inference.MaxRows(model_);
    if (max_rows_ > 0 && model_rows > 0) return std::min(max_rows_, model_rows);
    return std::max(max_rows_, model_rows);
  }

  PendingOutputs SubmitInParts(InferenceService& inference, const NamedTensors& tensors, int per_request) const {
    const int64_t rows = tensors[0].tensor.dim(0);
    std::vector<PendingOutputs> parts;
    for (int64_t begin = 0; begin < rows; begin += per_request) {
      const int64_t end = std::min<int64_t>(rows, begin + per_request);
      NamedTensors slice;
      for (const NamedTensor& t : tensors) slice.push_back({t.name, t.tensor.SliceRows(begin, end)});
      parts.push_back(inference.Submit(model_, std::move(slice)));
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
  LOOM_ASSIGN_OR_RETURN(std::string model, context.Param<std::string>(params, name, "model"));
  const ModelInfo* info = context.Model(model);
  if (!info) return context.Error(params["model"], name, "unknown model '" + model + "'");
  std::vector<std::pair<std::string, std::string>> inputs;
  if (params["input"]) {
    if (info->inputs.size() != 1) {
      return context.Error(params["input"], name, absl::StrCat("model '", model, "' has ", info->inputs.size(),
                                                               " inputs: map them with 'inputs'"));
    }
    inputs.emplace_back(info->inputs[0].name, params["input"].as<std::string>());
  } else if (params["inputs"] && params["inputs"].IsMap()) {
    for (const auto& kv : params["inputs"]) inputs.emplace_back(kv.first.as<std::string>(), kv.second.as<std::string>());
  } else {
    return context.Error(params, name, "needs 'input' or 'inputs'");
  }
  for (const auto& [model_input, value] : inputs) {
    const int index = info->FindInput(model_input);
    if (index < 0) return context.Error(params, name, absl::StrCat("model '", model, "' has no input '", model_input, "'"));
    YAML::Node port;
    port["value"] = value;
    LOOM_ASSIGN_OR_RETURN(ValueSpec spec, context.Input(port, name, "value", ValueType::kTensor));
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
    }
  }
  // Fixed shapes feeding every input: the engine measures and warms the model up on exactly them.
  NamedTensors warmup;
  for (const auto& [model_input, value] : inputs) {
    YAML::Node port;
    port["value"] = value;
    auto spec = context.Input(port, name, "value", ValueType::kTensor);
    if (!spec.ok() || !spec->shape) break;
    // Zeros: a convolutional model's cost does not depend on the values.
    warmup.push_back({model_input, Tensor::Allocate(DType::kFloat32, *spec->shape)});
  }
  if (warmup.size() == info->inputs.size()) context.AddWarmup(model, std::move(warmup));
  if (inputs.size() != info->inputs.size()) {
    return context.Error(params, name, absl::StrCat("model '", model, "' needs ", info->inputs.size(), " inputs, ",
                                                    inputs.size(), " given"));
  }
  LOOM_ASSIGN_OR_RETURN(int max_rows, context.Param<int>(params, name, "max_rows", 0));
  if (max_rows < 0) return context.Error(params["max_rows"], name, "'max_rows' must be >= 0");
  context.Declare(name, {ValueType::kOutputs, std::nullopt, name});
  return std::unique_ptr<Node>(new InferNode(name, model, std::move(inputs), max_rows));
}

absl::StatusOr<NamedTensors> AwaitOutputs(const Frame& frame, const std::string& input) {
  return frame.values.at(input).outputs.get();
}

vision::ImageTransform CoordinateMap::For(const Frame& frame, int input_w, int input_h) const {
  if (!preprocess.empty()) return frame.values.at(preprocess).to_image;
  const cv::Mat& m = frame.values.at(image).image;
  vision::ImageTransform t;
  t.scale_x = static_cast<double>(input_w) / std::max(m.cols, 1);
  t.scale_y = static_cast<double>(input_h) / std::max(m.rows, 1);
  return t;
}

absl::StatusOr<CoordinateMap> ReadCoordinateMap(const YAML::Node& params, const std::string& node,
                                                BuildContext& context) {
  CoordinateMap map;
  LOOM_RETURN_IF_ERROR(context.Input(params, node, "image", ValueType::kImage).status());
  map.image = params["image"] ? params["image"].as<std::string>() : "image";
  if (params["preprocess"]) {
    LOOM_ASSIGN_OR_RETURN(ValueSpec spec, context.Input(params, node, "preprocess", ValueType::kTensor));
    map.preprocess = spec.producer;
  }
  return map;
}

double Round(double v, int digits) {
  const double f = std::pow(10.0, digits);
  return std::round(v * f) / f;
}

}  // namespace loom::pipeline
