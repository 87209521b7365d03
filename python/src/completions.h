// Completions: where the engine's answers meet Python. Engine callbacks run on worker threads,
// which must never wait for the GIL (a busy Python thread would stall a core's worker). They hand
// the answer to this one completion thread, which takes the GIL, calls the Python callback
// (resolving a concurrent.futures.Future, or an asyncio future through call_soon_threadsafe) and
// drops the Python references the request kept alive (its input arrays) — all under the GIL.
#ifndef LOOM_PYTHON_COMPLETIONS_H_
#define LOOM_PYTHON_COMPLETIONS_H_

#include <pybind11/pybind11.h>

#include <functional>
#include <memory>
#include <vector>

#include "loom/infer.h"

namespace loom::python {

namespace py = pybind11;

// What one Python request keeps until its answer: the callback and the input arrays. Created and
// emptied with the GIL held; its destructor touches no Python object once emptied.
struct PendingCall {
  py::object callback;           // callback(outputs_dict_or_None, exception_or_None)
  std::vector<py::object> keep;  // borrowed input arrays
  ~PendingCall();
};

// An InferCallback for the engine that hands `call`'s answer to the completion thread.
InferCallback CompleteLater(std::shared_ptr<PendingCall> call);

// Starts the completion thread (idempotent) / stops it after the queued completions (atexit).
void StartCompletions();
void StopCompletions();

void RegisterCompletions(py::module_& m);

}  // namespace loom::python

#endif  // LOOM_PYTHON_COMPLETIONS_H_
