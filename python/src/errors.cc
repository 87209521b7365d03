#include "errors.h"

namespace loom::python {
namespace {

// Canonical code -> the name of its class in loom/errors.py. Codes not listed are loom.Error.
const char* ClassName(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
      return "InvalidArgument";
    case absl::StatusCode::kNotFound:
      return "NotFound";
    case absl::StatusCode::kAlreadyExists:
      return "AlreadyExists";
    case absl::StatusCode::kResourceExhausted:
      return "ResourceExhausted";
    case absl::StatusCode::kDeadlineExceeded:
      return "DeadlineExceeded";
    case absl::StatusCode::kUnavailable:
      return "Unavailable";
    case absl::StatusCode::kCancelled:
      return "Cancelled";
    case absl::StatusCode::kFailedPrecondition:
      return "FailedPrecondition";
    case absl::StatusCode::kUnimplemented:
      return "Unimplemented";
    case absl::StatusCode::kPermissionDenied:
      return "PermissionDenied";
    case absl::StatusCode::kInternal:
      return "Internal";
    default:
      return "Error";
  }
}

// The classes, given by loom/__init__.py at import; never destroyed (threads may outlive statics).
py::dict* classes = nullptr;

py::object ClassFor(absl::StatusCode code) {
  if (classes && classes->contains(ClassName(code))) return (*classes)[ClassName(code)];
  if (classes && classes->contains("Error")) return (*classes)["Error"];
  return py::reinterpret_borrow<py::object>(PyExc_RuntimeError);
}

}  // namespace

py::object ExceptionFor(const absl::Status& status) {
  return ClassFor(status.code())(std::string(status.message()));
}

void Raise(const absl::Status& status) {
  py::object cls = ClassFor(status.code());
  PyErr_SetObject(cls.ptr(), py::str(std::string(status.message())).ptr());
  throw py::error_already_set();
}

void RegisterErrors(py::module_& m) {
  m.def(
      "_set_error_classes",
      [](py::dict d) {
        if (!classes) classes = new py::dict();
        *classes = std::move(d);
      },
      "Internal: loom/__init__.py hands over its exception classes.");
  m.def(
      "_status_class_names",
      [] {
        py::dict names;
        for (int c = 0; c <= 16; ++c) {
          const auto code = static_cast<absl::StatusCode>(c);
          names[py::str(absl::StatusCodeToString(code))] = ClassName(code);
        }
        return names;
      },
      "Internal: the status code -> exception class table, for tests.");
}

}  // namespace loom::python
