// _loom._Session: one plain ONNX Runtime session with its defaults — what onnxruntime's Python
// InferenceSession gives a script (the naive baseline, and the first step of a migration).
#include "loom/session.h"

#include <pybind11/stl.h>

#include "absl/strings/str_cat.h"
#include "errors.h"
#include "tensors.h"

namespace loom::python {
namespace {

std::string OnnxTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "tensor(float)";
    case DType::kFloat16:
      return "tensor(float16)";
    case DType::kFloat64:
      return "tensor(double)";
    case DType::kInt8:
      return "tensor(int8)";
    case DType::kUInt8:
      return "tensor(uint8)";
    case DType::kInt16:
      return "tensor(int16)";
    case DType::kInt32:
      return "tensor(int32)";
    case DType::kInt64:
      return "tensor(int64)";
    case DType::kBool:
      return "tensor(bool)";
    case DType::kUnknown:
      break;
  }
  return "tensor(unknown)";
}

py::list Describe(const std::vector<TensorInfo>& tensors) {
  py::list out;
  for (const TensorInfo& t : tensors) {
    out.append(py::make_tuple(t.name, ShapeList(t.shape), OnnxTypeName(t.dtype)));
  }
  return out;
}

class PySession {
 public:
  PySession(const std::string& path, int threads, const std::string& backend) {
    SessionOptions options;
    options.intra_op_threads = threads;
    options.backend = Unwrap(ParseBackend(backend));
    absl::StatusOr<std::unique_ptr<Session>> s;
    {
      py::gil_scoped_release release;
      s = CreateSession(path, options);
    }
    session_ = Unwrap(std::move(s));
  }

  py::list Inputs() const { return Describe(session_->info().inputs); }
  py::list Outputs() const { return Describe(session_->info().outputs); }

  py::list Run(const py::object& output_names, const py::dict& feed) {
    const ModelInfo& info = session_->info();
    std::vector<py::object> keep;
    NamedTensors inputs = Unwrap(ToInputs(info, feed, keep));
    Check(ValidateInputs(info, inputs));
    absl::StatusOr<NamedTensors> outputs;
    {
      py::gil_scoped_release
          release;  // a session is not run by two threads at once: callers' job, as in onnxruntime
      std::lock_guard<std::mutex> lock(mu_);
      outputs = session_->Run(inputs);
    }
    NamedTensors all = Unwrap(std::move(outputs));
    py::list result;
    if (output_names.is_none()) {
      for (const NamedTensor& t : all) result.append(ToNumpy(t.tensor));
      return result;
    }
    for (const py::handle& name : output_names) {
      const std::string n = py::str(name);
      const int i = info.FindOutput(n);
      if (i < 0)
        Raise(absl::InvalidArgumentError(
            absl::StrCat("model '", info.name, "' has no output '", n, "'")));
      result.append(ToNumpy(all[static_cast<size_t>(i)].tensor));
    }
    return result;
  }

 private:
  std::unique_ptr<Session> session_;
  std::mutex mu_;  // one run at a time on this session
};

}  // namespace

void RegisterSession(py::module_& m) {
  py::class_<PySession>(m, "_Session")
      .def(py::init<const std::string&, int, const std::string&>(), py::arg("path"),
           py::arg("threads") = 0, py::arg("backend") = "ort")
      .def("inputs", &PySession::Inputs)
      .def("outputs", &PySession::Outputs)
      .def("run", &PySession::Run, py::arg("output_names"), py::arg("input_feed"));
}

}  // namespace loom::python
