#include "completions.h"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "errors.h"
#include "tensors.h"

namespace loom::python {
namespace {

struct Item {
  std::shared_ptr<PendingCall> call;
  absl::StatusOr<InferResult> result;
};

struct Queue {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Item> items;
  bool running = false;
  bool stopping = false;
  std::thread thread;
};

Queue& TheQueue() {
  static auto* q = new Queue();  // never destroyed: its thread may outlive statics
  return *q;
}

void Settle(Item& item) {
  // GIL held.
  PendingCall& call = *item.call;
  try {
    if (item.result.ok()) {
      call.callback(ToDict(item.result->outputs), py::none());
    } else {
      call.callback(py::none(), ExceptionFor(item.result.status()));
    }
  } catch (py::error_already_set& e) {
    // The user's callback raised: Python reports it as an unraisable error, the thread goes on.
    e.discard_as_unraisable("loom completion callback");
  } catch (const std::exception&) {
  }
  // Drop every Python reference now, under the GIL.
  item.result = absl::CancelledError("settled");
  call.keep.clear();
  call.callback = py::object();
}

void Loop() {
  Queue& q = TheQueue();
  // One Python thread state for the thread's whole life, the GIL released while it waits. (Taking
  // the GIL afresh for each batch would create and delete a thread state each time, and Python
  // 3.11 maps and unmaps a frame stack with each: a TLB shootdown that interrupts every worker.)
  py::gil_scoped_acquire gil;
  while (true) {
    std::deque<Item> batch;
    {
      py::gil_scoped_release release;
      std::unique_lock<std::mutex> lock(q.mu);
      q.cv.wait(lock, [&] { return !q.items.empty() || q.stopping; });
      batch.swap(q.items);
    }
    if (batch.empty()) return;  // stopping, and nothing left to settle
    for (Item& item : batch) Settle(item);
  }
}

}  // namespace

PendingCall::~PendingCall() {
  // Emptied by the completion thread under the GIL. If it was not (the interpreter is exiting and
  // the thread has stopped), the references are leaked rather than released without the GIL.
  if (callback) callback.release();
  for (py::object& o : keep) o.release();
}

InferCallback CompleteLater(std::shared_ptr<PendingCall> call) {
  return [call](absl::StatusOr<InferResult> result) mutable {
    Queue& q = TheQueue();
    std::lock_guard<std::mutex> lock(q.mu);
    if (q.stopping) return;  // exiting: nobody is left to tell
    q.items.push_back({call, std::move(result)});
    q.cv.notify_one();
  };
}

void StartCompletions() {
  Queue& q = TheQueue();
  std::lock_guard<std::mutex> lock(q.mu);
  if (q.running) return;
  q.running = true;
  q.stopping = false;
  q.thread = std::thread(Loop);
}

void StopCompletions() {
  Queue& q = TheQueue();
  {
    std::lock_guard<std::mutex> lock(q.mu);
    if (!q.running) return;
    q.stopping = true;
    q.cv.notify_all();
  }
  {
    py::gil_scoped_release release;  // the thread needs the GIL to finish its last batch
    q.thread.join();
  }
  std::lock_guard<std::mutex> lock(q.mu);
  q.running = false;
}

void RegisterCompletions(py::module_& m) {
  m.def("_stop_completions", &StopCompletions, "Internal: stops the completion thread (atexit).");
}

}  // namespace loom::python
