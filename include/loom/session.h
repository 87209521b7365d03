// Session: one loaded model that runs inference, behind one interface with two backends:
//   - ONNX Runtime (CPU execution provider), the default;
//   - OpenCV DNN (cv::dnn::readNetFromONNX), the engine of many users' first attempt.
//
// Basic usage:
//   loom::SessionOptions options;
//   options.intra_op_threads = 1;
//   auto session = loom::CreateSession("models/mlsd_320x320_tiny.onnx", options);
//   if (!session.ok()) { ... session.status().message() names the file and the cause ... }
//   auto outputs = (*session)->Run({{"input_image_with_alpha:0", image}});
//
// Thread safety: a Session is NOT safe to Run from two threads at once. Loom gives each model
// instance its own session and never runs it from two threads at once, but not always from the
// same thread: a request may run on its caller's thread when the worker is idle, and a wide
// session runs on whichever worker of its group leads the run. Creating sessions from several
// threads at once is safe.
#ifndef LOOM_SESSION_H_
#define LOOM_SESSION_H_

#include <memory>
#include <string>
#include <vector>

#include "loom/model_info.h"
#include "loom/status.h"
#include "loom/tensor.h"

namespace loom {

enum class Backend { kOnnxRuntime, kOpenCv };
const char* BackendName(Backend backend);  // "ort", "opencv"
absl::StatusOr<Backend> ParseBackend(const std::string& name);
// Every name ParseBackend accepts: "ort", "opencv", then the long and short aliases.
const std::vector<std::string>& BackendSpellings();

enum class GraphOptimization { kDisabled, kBasic, kExtended, kAll };

struct SessionOptions {
  Backend backend = Backend::kOnnxRuntime;

  // Intra-op threads, the calling thread included. 0 = the backend's default (ONNX Runtime: one
  // per physical core; this is what makes N naive sessions fight over the same cores). 1 = run
  // entirely on the calling thread. OpenCV DNN's thread count is process-wide (cv::setNumThreads),
  // so for that backend this sets it for the whole process.
  int intra_op_threads = 0;

  // Whether idle intra-op threads spin waiting for work (ONNX Runtime's default: yes). Spinning
  // lowers latency on dedicated cores and steals cycles from everyone else on shared ones.
  bool allow_spinning = true;
  // With spinning on: stop it as soon as Run() returns (ONNX Runtime's
  // session.force_spinning_stop), so that a session whose threads borrow other workers' cores spins
  // only while it runs.
  bool stop_spinning_after_run = false;

  // CPU ids (as sched_getaffinity reports them) for each intra-op thread other than the calling
  // one: thread_affinities[i] is the set for extra thread i. Empty = not pinned. When set, its size
  // must be intra_op_threads - 1.
  std::vector<std::vector<int>> thread_affinities;

  // Use the process-wide ONNX Runtime thread pool shared by every session that asks for it
  // (DisablePerSessionThreads); intra_op_threads then sizes that global pool on first use.
  bool use_global_thread_pool = false;

  GraphOptimization graph_optimization = GraphOptimization::kAll;
};

class Session {
 public:
  virtual ~Session() = default;

  virtual const ModelInfo& info() const = 0;
  virtual Backend backend() const = 0;

  // Runs the model. `inputs` must match the model's inputs (see ValidateInputs); input buffers are
  // read, not copied, and must stay alive for the call. Returns the outputs in the model's output
  // order, owned. A failure returns a status naming the model; the session stays usable.
  virtual absl::StatusOr<NamedTensors> Run(const NamedTensors& inputs) = 0;
};

// Sizes ONNX Runtime's process-wide intra-op pool, shared by every session made with
// use_global_thread_pool. Must precede the first ONNX Runtime session (FAILED_PRECONDITION
// otherwise): the runtime fixes its environment once per process.
absl::Status ConfigureOrtGlobalThreadPool(int intra_op_threads, bool allow_spinning);

// The backends' versions as loaded at run time: "ONNX Runtime 1.29.0, OpenCV 4.6.0".
std::string BackendVersions();

// Loads `model_path` with the backend of `options`. Errors name the file and the cause.
absl::StatusOr<std::unique_ptr<Session>> CreateSession(const std::string& model_path,
                                                       const SessionOptions& options = {});

}  // namespace loom

#endif  // LOOM_SESSION_H_
