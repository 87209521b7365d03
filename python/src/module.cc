// The _loom extension: registration only; each bound concept lives in its own file.
#include <pybind11/pybind11.h>

#include "completions.h"
#include "errors.h"

namespace loom::python {
void RegisterEngine(py::module_& m);
void RegisterPipeline(py::module_& m);
void RegisterSession(py::module_& m);
void RegisterBench(py::module_& m);
void RegisterVision(py::module_& m);
}  // namespace loom::python

PYBIND11_MODULE(_loom, m) {
  m.doc() = "Loom's engine, pipelines and benchmarks (the C++ side of the `loom` package).";
  m.attr("__version__") = LOOM_VERSION;
  m.attr("_source_dir") = LOOM_SOURCE_DIR;  // the checkout it was built from: default data paths
  loom::python::RegisterErrors(m);
  loom::python::RegisterCompletions(m);
  loom::python::RegisterEngine(m);
  loom::python::RegisterPipeline(m);
  loom::python::RegisterSession(m);
  loom::python::RegisterBench(m);
  loom::python::RegisterVision(m);
}
