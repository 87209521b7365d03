// infer: runs a model of the engine on tensors produced by earlier nodes. Submits and returns at
// once; nodes reading the outputs wait for them, so a frame's independent branches run together.
//   model: face
//   input: face_in                  (single-input models), or
//   inputs: {input:0: face_in}      (model input name -> value)
//   max_rows: 4                     (optional) at most this many rows in one request
// A fan-out (a batch of a frame's crops, or rows of several shapes from text_batch) goes out as
// requests of as many rows as the model, at that row shape, was measured to run best together
// (RowsPerRequest: one per request where batching does not pay, so that every worker takes a
// share); rows of different shapes never share a request. The parts' outputs are kept apart (a
// recogniser's output length follows the row's width) and joined in row order for readers that
// want one tensor.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/tensor_rows.h"
#include "pipeline/nodes/nodes.h"

namespace loom::pipeline {
namespace {

Shape RowShape(const Tensor& t) { return Shape(t.shape().begin() + 1, t.shape().end()); }

// Copies rows (each [1,...] of one shape and dtype) into one [n,...] tensor.
Tensor StackRows(const std::vector<const Tensor*>& rows) {
  Shape shape = rows[0]->shape();
  shape[0] = static_cast<int64_t>(rows.size());
  Tensor out = Tensor::Allocate(rows[0]->dtype(), shape);
  auto* dst = static_cast<std::byte*>(out.data());
  for (const Tensor* r : rows) {
    std::memcpy(dst, r->data(), r->byte_size());
    dst += r->byte_size();
  }
  return out;
}

// The parts' outputs as one tensor per output, rows back in input order. Every part must agree on
// names, dtypes and every dim after the first.
absl::StatusOr<NamedTensors> JoinParts(const std::vector<OutputPart>& parts, int64_t total_rows) {
  std::vector<NamedTensors> outputs;
  for (const OutputPart& part : parts) {
    LOOM_ASSIGN_OR_RETURN(NamedTensors out, part.outputs.get());
    for (const NamedTensor& t : out) {
      if (t.tensor.rank() < 1 || t.tensor.dim(0) != static_cast<int64_t>(part.rows.size())) {
        return absl::InternalError(absl::StrCat("output '", t.name, "' is ", t.tensor.Describe(),
                                                " for a request of ", part.rows.size(), " rows"));
      }
    }
    outputs.push_back(std::move(out));
  }
  bool in_order = true;  // parts of consecutive rows: a plain concatenation
  int64_t next = 0;
  for (const OutputPart& part : parts) {
    for (int64_t r : part.rows) in_order &= r == next++;
  }
  std::vector<const NamedTensors*> pointers;
  for (const NamedTensors& out : outputs) pointers.push_back(&out);
  LOOM_ASSIGN_OR_RETURN(NamedTensors joined, ConcatRows(pointers));  // also checks they agree
  if (in_order || joined.empty()) return joined;
  for (NamedTensor& t : joined) {  // scatter the rows back to their places
    Tensor placed = Tensor::Allocate(t.tensor.dtype(), t.tensor.shape());
    const size_t row_bytes =
        t.tensor.dim(0) == 0 ? 0 : t.tensor.byte_size() / static_cast<size_t>(t.tensor.dim(0));
    size_t from = 0;
    for (const OutputPart& part : parts) {
      for (int64_t r : part.rows) {
        if (r < 0 || r >= total_rows || r >= t.tensor.dim(0))
          return absl::InternalError("row index out of range");
        std::memcpy(static_cast<std::byte*>(placed.data()) + static_cast<size_t>(r) * row_bytes,
                    static_cast<const std::byte*>(t.tensor.data()) + from * row_bytes, row_bytes);
        ++from;
      }
    }
    t.tensor = std::move(placed);
  }
  return joined;
}

class InferNode final : public Node {
 public:
  InferNode(std::string name, std::string model,
            std::vector<std::pair<std::string, std::string>> inputs, int max_rows,
            std::vector<Shape> row_classes)
      : Node(std::move(name)),
        model_(std::move(model)),
        inputs_(std::move(inputs)),
        max_rows_(max_rows),
        row_classes_(std::move(row_classes)) {}

  absl::Status Process(Frame& frame, NodeContext& context) const override {
    const Value& first = frame.values.at(inputs_[0].second);
    Value v;
    v.type = ValueType::kOutputs;
    int64_t total_rows = 0;
    if (!first.rows.empty()) {
      if (inputs_.size() != 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("model '", model_, "': rows of several shapes ('", inputs_[0].second,
                         "') can only feed a model with one input"));
      }
      total_rows = static_cast<int64_t>(first.rows.size());
      SubmitRows(context, first, v.parts);
    } else {
      NamedTensors tensors;
      bool empty = false;
      for (const auto& [model_input, value] : inputs_) {
        tensors.push_back({model_input, frame.values.at(value).tensor});
        empty |= tensors.back().tensor.rank() > 0 && tensors.back().tensor.dim(0) == 0;
      }
      if (empty) {  // a fan-out with nothing to fan out (no detections): no run, no outputs
        std::promise<absl::StatusOr<NamedTensors>> none;
        none.set_value(NamedTensors{});
        v.outputs = none.get_future().share();
        frame.values[name()] = std::move(v);
        return absl::OkStatus();
      }
      SubmitBatch(context, std::move(tensors), first.row_widths, v.parts, total_rows);
    }
    if (v.parts.size() == 1 && static_cast<int64_t>(v.parts[0].rows.size()) == total_rows) {
      v.outputs = v.parts[0].outputs;
    } else {
      v.outputs = std::async(std::launch::deferred, [parts = v.parts, total_rows] {
                    return JoinParts(parts, total_rows);
                  }).share();
    }
    frame.values[name()] = std::move(v);
    return absl::OkStatus();
  }

 private:
  // Rows per request for rows of `row_shape`: the measured decision for its class, capped by
  // max_rows; 0 = no limit.
  int64_t RowsPerRequest(NodeContext& context, const Shape& row_shape) const {
    int64_t rows = context.RowsPerRequest(model_, ClassOf(row_shape));
    if (max_rows_ > 0) rows = rows > 0 ? std::min<int64_t>(rows, max_rows_) : max_rows_;
    return rows;
  }

  // The first declared class at least as large as `shape` in every dim; else the shape itself.
  const Shape& ClassOf(const Shape& shape) const {
    for (const Shape& c : row_classes_) {
      bool covers = c.size() == shape.size();
      for (size_t d = 0; covers && d < c.size(); ++d) covers = c[d] >= shape[d];
      if (covers) return c;
    }
    return shape;
  }

  static std::vector<float> Padding(const std::vector<int64_t>& rows,
                                    const std::vector<int64_t>& content_widths, int64_t run_width) {
    std::vector<float> padding(rows.size(), 0.0f);
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto r = static_cast<size_t>(rows[i]);
      if (r < content_widths.size() && run_width > 0) {
        padding[i] = std::max(
            0.0f, 1.0f - static_cast<float>(content_widths[r]) / static_cast<float>(run_width));
      }
    }
    return padding;
  }

  // One [N,...] batch (all inputs): slices of consecutive rows.
  void SubmitBatch(NodeContext& context, NamedTensors tensors,
                   const std::vector<int64_t>& content_widths, std::vector<OutputPart>& parts,
                   int64_t& total_rows) const {
    const Tensor& lead = tensors[0].tensor;
    total_rows = lead.rank() > 0 ? lead.dim(0) : 1;
    const int64_t per =
        lead.rank() > 1 && total_rows > 1 ? RowsPerRequest(context, RowShape(lead)) : 0;
    const int64_t width = lead.rank() > 0 ? lead.dim(lead.rank() - 1) : 0;
    if (per <= 0 || total_rows <= per) {
      OutputPart part;
      for (int64_t r = 0; r < total_rows; ++r) part.rows.push_back(r);
      part.padding = Padding(part.rows, content_widths, width);
      part.outputs = context.Submit(model_, std::move(tensors));
      parts.push_back(std::move(part));
      return;
    }
    for (int64_t begin = 0; begin < total_rows; begin += per) {
      const int64_t end = std::min(total_rows, begin + per);
      OutputPart part;
      for (int64_t r = begin; r < end; ++r) part.rows.push_back(r);
      NamedTensors slice;
      for (const NamedTensor& t : tensors)
        slice.push_back({t.name, t.tensor.SliceRows(begin, end)});
      part.padding = Padding(part.rows, content_widths, width);
      part.outputs = context.Submit(model_, std::move(slice));
      parts.push_back(std::move(part));
    }
  }

  // Rows of possibly different shapes (single-input model): grouped by shape, each group cut into
  // requests of the measured size, and the requests sent the largest first (longest processing
  // time first: the workers take requests in order, so the last ones to run are the short ones,
  // and the cores finish a frame's rows together rather than one of them running its longest
  // line alone at the end).
  void SubmitRows(NodeContext& context, const Value& in, std::vector<OutputPart>& parts) const {
    std::vector<std::pair<Shape, std::vector<int64_t>>> groups;
    for (size_t i = 0; i < in.rows.size(); ++i) {
      const Shape shape = RowShape(in.rows[i]);
      auto it = std::find_if(groups.begin(), groups.end(),
                             [&](const auto& g) { return g.first == shape; });
      if (it == groups.end()) {
        groups.push_back({shape, {}});
        it = groups.end() - 1;
      }
      it->second.push_back(static_cast<int64_t>(i));
    }
    std::vector<std::pair<OutputPart, Tensor>> requests;
    for (const auto& [shape, members] : groups) {
      const int64_t n = static_cast<int64_t>(members.size());
      int64_t per = n > 1 ? RowsPerRequest(context, shape) : 1;
      if (per <= 0) per = n;
      for (int64_t begin = 0; begin < n; begin += per) {
        OutputPart part;
        std::vector<const Tensor*> rows;
        for (int64_t k = begin; k < std::min(n, begin + per); ++k) {
          part.rows.push_back(members[static_cast<size_t>(k)]);
          rows.push_back(&in.rows[static_cast<size_t>(members[static_cast<size_t>(k)])]);
        }
        part.padding = Padding(part.rows, in.row_widths, shape.empty() ? 0 : shape.back());
        requests.emplace_back(std::move(part), rows.size() == 1 ? *rows[0] : StackRows(rows));
      }
    }
    std::stable_sort(requests.begin(), requests.end(), [](const auto& a, const auto& b) {
      return a.second.element_count() > b.second.element_count();
    });
    for (auto& [part, batch] : requests) {
      part.outputs = context.Submit(model_, {{inputs_[0].first, std::move(batch)}});
      parts.push_back(std::move(part));
    }
  }

  std::string model_;
  std::vector<std::pair<std::string, std::string>> inputs_;
  int max_rows_;
  std::vector<Shape> row_classes_;
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
      return context.Error(params["input"], name,
                           absl::StrCat("model '", model, "' has ", info->inputs.size(),
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
  std::vector<Shape> row_classes;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const auto& [model_input, value] = inputs[i];
    const int index = info->FindInput(model_input);
    if (index < 0)
      return context.Error(where[i], name,
                           absl::StrCat("model '", model, "' has no input '", model_input, "'"));
    LOOM_ASSIGN_OR_RETURN(ValueSpec spec, context.Value(where[i], name, value, ValueType::kTensor));
    const TensorInfo& want = info->inputs[static_cast<size_t>(index)];
    if (i == 0) row_classes = spec.row_classes;
    if (spec.shape) {  // a fixed shape: check it against the model now, not on the first frame
      bool ok = spec.shape->size() == want.shape.size();
      for (size_t d = 0; ok && d < want.shape.size(); ++d) {
        ok = want.shape[d].is_dynamic() || want.shape[d].value == (*spec.shape)[d];
      }
      if (!ok) {
        return context.Error(params, name,
                             absl::StrCat("node '", value, "' produces ",
                                          ShapeToString(*spec.shape), " f32 but model '", model,
                                          "' input '", model_input, "' expects ", want.Describe()));
      }
      // Zeros: a convolutional model's cost does not depend on the values.
      warmup.push_back({model_input, Tensor::Allocate(DType::kFloat32, *spec.shape)});
    }
  }
  if (inputs.size() != info->inputs.size()) {
    return context.Error(params, name,
                         absl::StrCat("model '", model, "' needs ", info->inputs.size(),
                                      " inputs, ", inputs.size(), " given"));
  }
  if (warmup.size() == info->inputs.size()) context.AddWarmup(model, std::move(warmup));
  LOOM_ASSIGN_OR_RETURN(int64_t max_rows, r.Int(params, "max_rows", 0, 1 << 16, 0));
  context.Declare(name, {ValueType::kOutputs, std::nullopt, name});
  if (inputs.size() == 1 && !row_classes.empty()) context.AddRowClasses(model, row_classes);
  return std::unique_ptr<Node>(new InferNode(name, model, std::move(inputs),
                                             static_cast<int>(max_rows), std::move(row_classes)));
}

absl::StatusOr<NamedTensors> AwaitOutputs(const Frame& frame, const std::string& input,
                                          NodeContext& context) {
  return context.Await(frame.values.at(input).outputs);
}

}  // namespace loom::pipeline
