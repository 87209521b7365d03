// Executor: runs frames through a graph's nodes on `threads` pipeline threads, at most that many
// frames at once, and hands them back in frame order.
//
// Each pipeline thread holds a core leased from the engine's plan while it computes (decoding is
// the reader's, under its own lease) and gives it back whenever a node waits for a model, so the
// pipeline's CPU work shares the plan's cores with the model workers instead of running beside
// them. Per node it records where the time went: its own compute, waiting for models, waiting for
// a core. Nothing thrown by a node leaves a pipeline thread: it becomes that frame's error.
//
// Threading: Push, Pop, Finish and Abort may be called from any thread (typically one producer,
// one consumer). Frames must be pushed with consecutive indices from 0.
#ifndef LOOM_PIPELINE_EXECUTOR_H_
#define LOOM_PIPELINE_EXECUTOR_H_

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "pipeline/graph.h"

namespace loom::pipeline {

class Executor {
 public:
  // `sinks` (not owned; may be empty): each frame's Prepare runs on the pipeline thread after the
  // nodes, so that drawing and encoding share the leased cores too; their Write stays in order,
  // with the caller.
  Executor(Graph& graph, int threads, std::vector<Sink*> sinks = {});
  ~Executor();  // Join()
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Waits until fewer than `threads` frames are being processed, then hands `frame` over.
  // False (the frame is dropped) once the executor was aborted.
  bool Push(std::unique_ptr<Frame> frame);
  // Callers waiting in Push for room now (a test's way to know that one is).
  int waiting_pushers() const;
  // The next finished frame in order. With `wait`, blocks until it is done; null once Finish was
  // called and every frame is out, or after Abort; without `wait`, null when it is not done yet.
  std::unique_ptr<Frame> Pop(bool wait);
  void Finish();  // no more Push
  void Abort();   // stop: frames in flight finish, queued ones are dropped
  // Aborts, joins the threads and returns the CPU seconds they used in all. Idempotent (later
  // calls return the same); the destructor calls it.
  double Join();

 private:
  void Loop(int thread);
  void Process(Frame& frame, int thread);

  Graph& graph_;
  std::vector<Sink*> sinks_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Frame>> todo_;
  std::map<int64_t, std::unique_ptr<Frame>> done_;
  int64_t next_ = 0;  // index of the next frame to Pop
  int64_t pushed_ = 0;
  int processing_ = 0;  // pushed, not yet done
  int waiting_pushers_ = 0;
  int capacity_;
  bool finished_ = false;
  bool aborted_ = false;
  double cpu_s_ = 0;
  std::vector<std::thread> threads_;
};

// The frame's record as sinks and callers see it: {"frame", "source", the nodes' entries,
// "timings_ms": {node: {"compute", "model_wait", "core_wait"}}, "error" when it failed}.
nlohmann::json RecordOf(const Frame& frame);

}  // namespace loom::pipeline

#endif  // LOOM_PIPELINE_EXECUTOR_H_
