#include "runtime/synthetic_models.h"

#include <fstream>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"
#include "onnx/onnx_pb.h"

namespace loom {
namespace {

void SetTensorType(onnx::ValueInfoProto* value, const std::string& name, int elem_type,
                   const std::vector<std::variant<int64_t, std::string>>& dims) {
  value->set_name(name);
  auto* tensor = value->mutable_type()->mutable_tensor_type();
  tensor->set_elem_type(elem_type);
  for (const auto& d : dims) {
    auto* dim = tensor->mutable_shape()->add_dim();
    if (std::holds_alternative<int64_t>(d)) {
      dim->set_dim_value(std::get<int64_t>(d));
    } else {
      dim->set_dim_param(std::get<std::string>(d));
    }
  }
}

onnx::ModelProto NewModel(const std::string& graph_name) {
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.set_producer_name("loom-synthetic");
  model.add_opset_import()->set_version(13);
  model.mutable_graph()->set_name(graph_name);
  return model;
}

absl::Status Save(const onnx::ModelProto& model, const std::string& path) {
  std::ofstream out(path, std::ios::binary);
  if (!out || !model.SerializeToOstream(&out)) {
    return absl::InternalError(absl::StrCat("cannot write model '", path, "'"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteAddModel(const std::string& path, int64_t width) {
  onnx::ModelProto model = NewModel("add_one");
  auto* graph = model.mutable_graph();
  auto* one = graph->add_initializer();
  one->set_name("one");
  one->set_data_type(onnx::TensorProto::FLOAT);
  const int64_t ones = width > 0 ? width : 1;  // broadcast over a dynamic width
  one->add_dims(ones);
  for (int64_t i = 0; i < ones; ++i) one->add_float_data(1.0f);
  auto* add = graph->add_node();
  add->set_op_type("Add");
  *add->add_input() = std::string("x");
  *add->add_input() = std::string("one");
  *add->add_output() = std::string("y");
  const std::variant<int64_t, std::string> w =
      width > 0 ? std::variant<int64_t, std::string>(width) : std::string("width");
  SetTensorType(graph->add_input(), "x", onnx::TensorProto::FLOAT, {std::string("batch"), w});
  SetTensorType(graph->add_output(), "y", onnx::TensorProto::FLOAT, {std::string("batch"), w});
  return Save(model, path);
}

absl::Status WriteGatherModel(const std::string& path, int64_t table_size) {
  onnx::ModelProto model = NewModel("gather_table");
  auto* graph = model.mutable_graph();
  auto* table = graph->add_initializer();
  table->set_name("table");
  table->set_data_type(onnx::TensorProto::FLOAT);
  table->add_dims(table_size);
  for (int64_t i = 0; i < table_size; ++i) table->add_float_data(10.0f * static_cast<float>(i));
  auto* gather = graph->add_node();
  gather->set_op_type("Gather");
  *gather->add_input() = std::string("table");
  *gather->add_input() = std::string("index");
  *gather->add_output() = std::string("y");
  SetTensorType(graph->add_input(), "index", onnx::TensorProto::INT64,
                {std::string("batch"), int64_t{1}});
  SetTensorType(graph->add_output(), "y", onnx::TensorProto::FLOAT,
                {std::string("batch"), int64_t{1}});
  return Save(model, path);
}

absl::Status WritePooledModel(const std::string& path, int64_t width) {
  onnx::ModelProto model = NewModel("pooled");
  auto* graph = model.mutable_graph();
  auto* mean = graph->add_node();
  mean->set_op_type("ReduceMean");
  *mean->add_input() = std::string("x");
  *mean->add_output() = std::string("y");
  auto* axes = mean->add_attribute();
  axes->set_name("axes");
  axes->set_type(onnx::AttributeProto::INTS);
  axes->add_ints(0);
  SetTensorType(graph->add_input(), "x", onnx::TensorProto::FLOAT, {std::string("batch"), width});
  SetTensorType(graph->add_output(), "y", onnx::TensorProto::FLOAT, {std::string("batch"), width});
  return Save(model, path);
}

}  // namespace loom
