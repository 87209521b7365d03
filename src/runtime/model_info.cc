#include "loom/model_info.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "onnx/onnx_pb.h"

namespace loom {
namespace {

namespace fs = std::filesystem;

DType FromOnnxType(int32_t elem_type) {
  switch (elem_type) {
    case onnx::TensorProto::FLOAT:
      return DType::kFloat32;
    case onnx::TensorProto::FLOAT16:
      return DType::kFloat16;
    case onnx::TensorProto::DOUBLE:
      return DType::kFloat64;
    case onnx::TensorProto::INT8:
      return DType::kInt8;
    case onnx::TensorProto::UINT8:
      return DType::kUInt8;
    case onnx::TensorProto::INT16:
      return DType::kInt16;
    case onnx::TensorProto::INT32:
      return DType::kInt32;
    case onnx::TensorProto::INT64:
      return DType::kInt64;
    case onnx::TensorProto::BOOL:
      return DType::kBool;
    default:
      return DType::kUnknown;
  }
}

TensorInfo FromValueInfo(const onnx::ValueInfoProto& value) {
  TensorInfo info;
  info.name = value.name();
  if (value.type().has_tensor_type()) {
    const auto& tensor_type = value.type().tensor_type();
    info.dtype = FromOnnxType(tensor_type.elem_type());
    for (const auto& d : tensor_type.shape().dim()) {
      Dim dim;
      if (d.has_dim_value() && d.dim_value() >= 0) {
        dim.value = d.dim_value();
      } else if (d.has_dim_param()) {
        dim.symbol = d.dim_param();
      }
      info.shape.push_back(dim);
    }
  }
  return info;
}

// A recognisable non-ONNX file type, from its first bytes; empty when none matches.
std::string SniffFileType(std::string_view head) {
  auto starts = [&](std::string_view magic) { return head.substr(0, magic.size()) == magic; };
  if (starts("\xFF\xD8\xFF")) return "a JPEG image";
  if (starts("\x89PNG")) return "a PNG image";
  if (starts("GIF8")) return "a GIF image";
  if (starts("BM")) return "a BMP image";
  if (starts("RIFF")) return "a RIFF file (AVI/WAV/WebP)";
  if (starts("PK\x03\x04")) return "a ZIP archive";
  if (starts("\x1F\x8B")) return "a gzip archive";
  if (starts("\x7F"
             "ELF"))
    return "an ELF binary";
  if (starts("{") || starts("[")) return "a JSON/text file";
  return "";
}

}  // namespace

std::string Dim::ToString() const {
  if (!is_dynamic()) return std::to_string(value);
  return symbol.empty() ? "?" : symbol;
}

const char* ImageLayoutName(ImageLayout layout) {
  switch (layout) {
    case ImageLayout::kNCHW:
      return "NCHW";
    case ImageLayout::kNHWC:
      return "NHWC";
    case ImageLayout::kNone:
      return "none";
  }
  return "none";
}

std::string TensorInfo::ShapeString() const {
  return absl::StrCat(
      "[",
      absl::StrJoin(shape, ",", [](std::string* out, const Dim& d) { out->append(d.ToString()); }),
      "]");
}

std::string TensorInfo::Describe() const {
  return absl::StrCat(ShapeString(), " ", DTypeName(dtype));
}

ImageLayout TensorInfo::image_layout() const {
  if (shape.size() != 4) return ImageLayout::kNone;
  auto is_channels = [](const Dim& d) { return d.value == 1 || d.value == 3 || d.value == 4; };
  // A fixed channel count beside a spatial dim; NHWC wins only if dim 1 does not look like
  // channels.
  if (is_channels(shape[1]) && !is_channels(shape[3])) return ImageLayout::kNCHW;
  if (is_channels(shape[3]) && !is_channels(shape[1])) return ImageLayout::kNHWC;
  if (is_channels(shape[1])) return ImageLayout::kNCHW;  // e.g. [1,3,4,4]: ONNX's usual layout
  return ImageLayout::kNone;
}

int ModelInfo::FindInput(const std::string& n) const {
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].name == n) return static_cast<int>(i);
  }
  return -1;
}

int ModelInfo::FindOutput(const std::string& n) const {
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (outputs[i].name == n) return static_cast<int>(i);
  }
  return -1;
}

absl::StatusOr<ModelInfo> ReadModelInfo(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat("model file '", path, "' does not exist"));
  }
  if (fs::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("model file '", path, "' is a directory"));
  }
  const auto file_size = fs::file_size(path, ec);
  constexpr uintmax_t kMaxModelBytes = uintmax_t{2} << 30;  // protobuf's own limit
  if (!ec && file_size > kMaxModelBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("model file '", path, "' is ", file_size,
                     " bytes, over the 2 GiB a protobuf model can hold"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return absl::PermissionDeniedError(absl::StrCat("model file '", path, "' cannot be read"));
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("model file '", path, "' is empty (0 bytes)"));
  }
  const std::string foreign = SniffFileType(std::string_view(bytes).substr(0, 8));
  if (!foreign.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model file '", path, "' is not an ONNX model: it looks like ", foreign));
  }
  onnx::ModelProto model;
  if (!model.ParseFromString(bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model file '", path, "' is not a valid ONNX model: its protobuf does not parse (",
        bytes.size(), " bytes; truncated, or not ONNX)"));
  }
  const auto& graph = model.graph();
  if (model.ir_version() <= 0 || !model.has_graph() || graph.output_size() == 0 ||
      graph.node_size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model file '", path, "' is not a valid ONNX model: ",
        model.ir_version() <= 0 ? "no IR version" : "its graph has no nodes or no outputs", " (",
        bytes.size(), " bytes; truncated, or not ONNX)"));
  }

  ModelInfo info;
  info.path = path;
  info.name = fs::path(path).stem().string();
  info.ir_version = model.ir_version();
  info.producer_name = model.producer_name();
  info.producer_version = model.producer_version();
  for (const auto& op : model.opset_import()) {
    if (op.domain().empty() || op.domain() == "ai.onnx") info.opset = op.version();
  }
  std::set<std::string> initializers;
  for (const auto& init : graph.initializer()) initializers.insert(init.name());
  for (const auto& input : graph.input()) {
    if (initializers.count(input.name()) == 0) info.inputs.push_back(FromValueInfo(input));
  }
  for (const auto& output : graph.output()) info.outputs.push_back(FromValueInfo(output));

  auto dim0_dynamic = [](const TensorInfo& t) {
    return !t.shape.empty() && t.shape[0].is_dynamic();
  };
  info.dynamic_batch = !info.inputs.empty();
  for (const auto& t : info.inputs) info.dynamic_batch &= dim0_dynamic(t);
  for (const auto& t : info.outputs) info.dynamic_batch &= dim0_dynamic(t);
  return info;
}

std::string FormatModelInfo(const ModelInfo& info) {
  std::ostringstream out;
  out << "model    " << info.name << "  (" << info.path << ")\n"
      << "producer " << (info.producer_name.empty() ? "?" : info.producer_name)
      << (info.producer_version.empty() ? "" : " " + info.producer_version) << "\n"
      << "format   ONNX IR " << info.ir_version << ", opset " << info.opset << "\n"
      << "batch    "
      << (info.dynamic_batch ? "dynamic (dim 0 of every input and output): requests can be batched"
                             : "fixed: parallel instances instead of batching")
      << "\n";
  auto section = [&](const char* title, const std::vector<TensorInfo>& tensors, bool is_input) {
    out << title << "\n";
    for (const TensorInfo& t : tensors) {
      out << "  " << t.name << "  " << t.Describe();
      if (is_input && t.image_layout() != ImageLayout::kNone) {
        out << "  (image, " << ImageLayoutName(t.image_layout()) << ")";
      }
      out << "\n";
    }
  };
  section("inputs", info.inputs, true);
  section("outputs", info.outputs, false);
  return out.str();
}

absl::Status ValidateInputs(const ModelInfo& info, const NamedTensors& inputs,
                            const TensorLimits& limits) {
  std::vector<bool> seen(info.inputs.size(), false);
  for (const NamedTensor& in : inputs) {
    if (absl::Status s = CheckShape(in.tensor.dtype(), in.tensor.shape(), limits); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model '", info.name, "' input '", in.name, "': ", s.message()));
    }
    const int index = info.FindInput(in.name);
    if (index < 0) {
      std::vector<std::string> names;
      for (const auto& t : info.inputs) names.push_back("'" + t.name + "'");
      return absl::InvalidArgumentError(absl::StrCat("model '", info.name, "' has no input '",
                                                     in.name, "'; its inputs are ",
                                                     absl::StrJoin(names, ", ")));
    }
    if (seen[index]) {
      return absl::InvalidArgumentError(
          absl::StrCat("model '", info.name, "' input '", in.name, "' given twice"));
    }
    seen[index] = true;
    const TensorInfo& want = info.inputs[index];
    bool match = in.tensor.dtype() == want.dtype &&
                 in.tensor.rank() == static_cast<int64_t>(want.shape.size());
    for (size_t d = 0; match && d < want.shape.size(); ++d) {
      match = want.shape[d].is_dynamic() || want.shape[d].value == in.tensor.shape()[d];
    }
    if (!match) {
      std::string what = in.tensor.dtype() != want.dtype                               ? "dtype"
                         : in.tensor.rank() != static_cast<int64_t>(want.shape.size()) ? "rank"
                                                                                       : "shape";
      return absl::InvalidArgumentError(absl::StrCat("model '", info.name, "' input '", in.name,
                                                     "': expected ", want.Describe(), ", got ",
                                                     in.tensor.Describe(), " (wrong ", what, ")"));
    }
    if (in.tensor.empty() && in.tensor.element_count() > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("model '", info.name, "' input '", in.name, "' has no data"));
    }
  }
  for (size_t i = 0; i < seen.size(); ++i) {
    if (!seen[i]) {
      return absl::InvalidArgumentError(absl::StrCat("model '", info.name, "' input '",
                                                     info.inputs[i].name, "' (",
                                                     info.inputs[i].Describe(), ") is missing"));
    }
  }
  return absl::OkStatus();
}

}  // namespace loom
