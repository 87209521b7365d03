#include "tensors.h"

#include "absl/strings/str_cat.h"

namespace loom::python {

namespace {
std::string Text(const py::dtype& dtype) { return py::str(py::handle(dtype)).cast<std::string>(); }
}  // namespace

py::list ShapeList(const std::vector<Dim>& shape) {
  py::list out;
  for (const Dim& d : shape) {
    if (d.is_dynamic()) {
      out.append(d.symbol.empty() ? py::object(py::none()) : py::object(py::str(d.symbol)));
    } else {
      out.append(d.value);
    }
  }
  return out;
}

py::dtype NumpyDType(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return py::dtype("float32");
    case DType::kFloat16:
      return py::dtype("float16");
    case DType::kFloat64:
      return py::dtype("float64");
    case DType::kInt8:
      return py::dtype("int8");
    case DType::kUInt8:
      return py::dtype("uint8");
    case DType::kInt16:
      return py::dtype("int16");
    case DType::kInt32:
      return py::dtype("int32");
    case DType::kInt64:
      return py::dtype("int64");
    case DType::kBool:
      return py::dtype("bool");
    case DType::kUnknown:
      break;
  }
  return py::dtype("float32");
}

absl::StatusOr<DType> FromNumpy(const py::dtype& dtype) {
  const char kind = dtype.kind();
  const size_t size = static_cast<size_t>(dtype.itemsize());
  if (kind == 'f' && size == 4) return DType::kFloat32;
  if (kind == 'f' && size == 2) return DType::kFloat16;
  if (kind == 'f' && size == 8) return DType::kFloat64;
  if (kind == 'i' && size == 1) return DType::kInt8;
  if (kind == 'u' && size == 1) return DType::kUInt8;
  if (kind == 'i' && size == 2) return DType::kInt16;
  if (kind == 'i' && size == 4) return DType::kInt32;
  if (kind == 'i' && size == 8) return DType::kInt64;
  if (kind == 'b') return DType::kBool;
  return absl::InvalidArgumentError(
      absl::StrCat("NumPy dtype ", Text(dtype), " has no Loom equivalent"));
}

namespace {

absl::StatusOr<NamedTensor> ToInput(const ModelInfo& info, const std::string& name,
                                    const py::handle& value, std::vector<py::object>& keep) {
  const int index = info.FindInput(name);
  py::array array = py::array::ensure(value);
  if (!array) {
    return absl::InvalidArgumentError(absl::StrCat("model '", info.name, "' input '", name,
                                                   "': expected a NumPy array, got ",
                                                   std::string(py::str(py::type::of(value)))));
  }
  // Unknown names pass through as they are: the engine's validation names the model's inputs.
  const DType want = index >= 0 ? info.inputs[static_cast<size_t>(index)].dtype : DType::kUnknown;
  if (want != DType::kUnknown) {
    const py::dtype target = NumpyDType(want);
    const bool same = array.dtype().is(target) || (array.dtype().kind() == target.kind() &&
                                                   array.dtype().itemsize() == target.itemsize());
    if (!same) {
      py::module_ np = py::module_::import("numpy");
      if (!np.attr("can_cast")(array.dtype(), target, "same_kind").cast<bool>()) {
        return absl::InvalidArgumentError(
            absl::StrCat("model '", info.name, "' input '", name, "': expected ", DTypeName(want),
                         " (numpy ", Text(target), "), got numpy ", Text(array.dtype()),
                         ", which does not convert without changing its kind"));
      }
      array = np.attr("ascontiguousarray")(array, target);  // the one conversion
    }
  }
  if (!(array.flags() & py::array::c_style)) {
    array = py::module_::import("numpy").attr("ascontiguousarray")(array);
  }
  auto dtype = FromNumpy(array.dtype());
  if (!dtype.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", info.name, "' input '", name, "': ", dtype.status().message()));
  }
  Shape shape(array.shape(), array.shape() + array.ndim());
  LOOM_RETURN_IF_ERROR(CheckShape(*dtype, shape));
  void* data = const_cast<void*>(array.data());  // read only: the request never writes its inputs
  if (data == nullptr) return NamedTensor{name, Tensor::Allocate(*dtype, std::move(shape))};
  keep.push_back(array);  // borrowed until the answer
  return NamedTensor{name, Tensor::Borrow(*dtype, std::move(shape), data)};
}

}  // namespace

absl::StatusOr<NamedTensors> ToInputs(const ModelInfo& info, const py::handle& inputs,
                                      std::vector<py::object>& keep) {
  NamedTensors out;
  if (py::isinstance<py::dict>(inputs)) {
    for (const auto& [key, value] : py::reinterpret_borrow<py::dict>(inputs)) {
      if (!py::isinstance<py::str>(key))
        return absl::InvalidArgumentError("input names must be strings");
      LOOM_ASSIGN_OR_RETURN(NamedTensor t, ToInput(info, key.cast<std::string>(), value, keep));
      out.push_back(std::move(t));
    }
    return out;
  }
  if (info.inputs.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", info.name, "' has ", info.inputs.size(), " inputs: pass a dict {name: array}"));
  }
  LOOM_ASSIGN_OR_RETURN(NamedTensor t, ToInput(info, info.inputs[0].name, inputs, keep));
  out.push_back(std::move(t));
  return out;
}

py::array ToNumpy(const Tensor& tensor) {
  std::vector<py::ssize_t> shape(tensor.shape().begin(), tensor.shape().end());
  std::vector<py::ssize_t> strides(shape.size());
  py::ssize_t stride = static_cast<py::ssize_t>(DTypeSize(tensor.dtype()));
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= std::max<py::ssize_t>(shape[i], 1);
  }
  // The capsule owns a handle to the tensor: its buffer lives as long as the array.
  auto* owner = new Tensor(tensor);
  py::capsule base(owner, [](void* p) { delete static_cast<Tensor*>(p); });
  return py::array(NumpyDType(tensor.dtype()), shape, strides, tensor.data(), base);
}

py::dict ToDict(const NamedTensors& outputs) {
  py::dict out;
  for (const NamedTensor& t : outputs) out[py::str(t.name)] = ToNumpy(t.tensor);
  return out;
}

}  // namespace loom::python
