// The naive strategies `loom pipeline bench` adds for a source of image files (a folder job), as
// people parallelise a loop over photos without Loom:
//   threads      N threads (N = the cores), each running the sequential loop (its own plain
//                sessions, ONNX Runtime's defaults) over its share of the files;
//   processes    a process per share (N of them), each loading its own sessions; timed from the
//                moment every process has loaded (`processes`) and from the first spawn to the last
//                exit (`processes (with start-up)`).
// Shares are contiguous runs of the sorted file list, as "a process per folder" splits it.
#ifndef LOOM_BENCH_PIPELINE_STRATEGIES_H_
#define LOOM_BENCH_PIPELINE_STRATEGIES_H_

#include <memory>
#include <string>
#include <vector>

#include "loom/pipeline.h"

namespace loom::bench {

// `parts` contiguous shares of `files` (the first ones one longer where it does not divide).
std::vector<std::vector<std::string>> Shares(const std::vector<std::string>& files, int parts);

// N sequential pipelines (plain sessions), loaded once, run concurrently over their shares.
class ThreadsStrategy {
 public:
  static absl::StatusOr<std::unique_ptr<ThreadsStrategy>> Load(const std::string& file,
                                                               const PipelineOptions& options,
                                                               int threads);
  // Runs every share once; returns the wall time in seconds (the last thread's end).
  absl::StatusOr<double> Run(const std::vector<std::string>& files);

 private:
  std::vector<std::unique_ptr<Pipeline>> pipelines_;
};

struct ProcessesRun {
  double wall_s = 0;               // from "go" (every process loaded) to the last answer
  double wall_with_startup_s = 0;  // from the first spawn to the last exit
};
// Starts `count` processes of `self_exe` (`loom pipeline bench-child`), each over its share.
// `args` are the child's pipeline options as command-line flags (--model, --set).
absl::StatusOr<ProcessesRun> RunProcesses(const std::string& self_exe, const std::string& file,
                                          const std::vector<std::string>& args,
                                          const std::vector<std::string>& files, int count,
                                          const std::string& scratch_dir);

// The child's side (`loom pipeline bench-child FILE --files LIST`): loads the sequential pipeline,
// says "ready", waits for "go", runs the files, answers {"frames", "seconds"} as JSON, exits.
int PipelineChildMain(const std::string& file, const PipelineOptions& options,
                      const std::string& files_list);

}  // namespace loom::bench

#endif  // LOOM_BENCH_PIPELINE_STRATEGIES_H_
