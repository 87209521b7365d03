// NumPy arrays in and out, without copies where possible.
//
// In: a C-contiguous array of the input's dtype is borrowed — the request points at its memory
// and a reference to the array is kept until the answer (do not write to it meanwhile). Anything
// else (a view with strides, another dtype of the same kind: float64 for a float32 input) is
// converted once. A dtype of another kind (floats for an integer input) is an InvalidArgument
// naming the input, the expected and the given dtype.
// Out: each output is an array over the engine's own buffer; a capsule holding the tensor keeps
// that buffer alive for as long as the array (or a view of it) lives.
#ifndef LOOM_PYTHON_TENSORS_H_
#define LOOM_PYTHON_TENSORS_H_

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "loom/model_info.h"
#include "loom/tensor.h"

namespace loom::python {

namespace py = pybind11;

py::dtype NumpyDType(DType dtype);

// A tensor's shape for Python: an int per fixed dimension, the symbol (a str) or None per dynamic
// one.
py::list ShapeList(const std::vector<Dim>& shape);
absl::StatusOr<DType> FromNumpy(const py::dtype& dtype);

// The request's inputs from `inputs` (a dict name -> array, or one array for a single-input
// model), converted for `info`. References that must live until the answer go to `keep`.
// Requires the GIL.
absl::StatusOr<NamedTensors> ToInputs(const ModelInfo& info, const py::handle& inputs,
                                      std::vector<py::object>& keep);

// An array over `tensor`'s buffer (no copy). Requires the GIL.
py::array ToNumpy(const Tensor& tensor);
// {name: array} in the model's output order. Requires the GIL.
py::dict ToDict(const NamedTensors& outputs);

}  // namespace loom::python

#endif  // LOOM_PYTHON_TENSORS_H_
