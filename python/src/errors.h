// Engine errors as Python exceptions: absl status codes map, in one table, onto the classes of
// loom/errors.py (loom.Error and its subclasses), with the engine's message.
#ifndef LOOM_PYTHON_ERRORS_H_
#define LOOM_PYTHON_ERRORS_H_

#include <pybind11/pybind11.h>

#include "loom/status.h"

namespace loom::python {

namespace py = pybind11;

// The exception instance for a non-OK `status` (requires the GIL).
py::object ExceptionFor(const absl::Status& status);
// Sets the Python error for `status` and throws py::error_already_set (requires the GIL).
[[noreturn]] void Raise(const absl::Status& status);
inline void Check(const absl::Status& status) {
  if (!status.ok()) Raise(status);
}
template <typename T>
T Unwrap(absl::StatusOr<T> value) {
  if (!value.ok()) Raise(value.status());
  return std::move(*value);
}

void RegisterErrors(py::module_& m);

}  // namespace loom::python

#endif  // LOOM_PYTHON_ERRORS_H_
