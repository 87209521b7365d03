// A loaded pipeline: its file's source, nodes, sinks and the service that runs its models. Made
// by LoadGraph, which checks the whole file before any model loads; run by the Executor.
#ifndef LOOM_PIPELINE_GRAPH_H_
#define LOOM_PIPELINE_GRAPH_H_

#include <memory>
#include <string>
#include <vector>

#include "loom/pipeline.h"
#include "pipeline/node.h"
#include "pipeline/sinks.h"
#include "pipeline/source.h"

namespace loom::pipeline {

inline constexpr int kMaxInFlight = 64;

// Caps OpenCV's own thread pool at one thread while it lives (process-wide, reference counted):
// a pipeline's OpenCV work runs on its leased cores, not on a second pool beside the plan.
class OpenCvThreadCap {
 public:
  OpenCvThreadCap();
  ~OpenCvThreadCap();
  OpenCvThreadCap(const OpenCvThreadCap&) = delete;
  OpenCvThreadCap& operator=(const OpenCvThreadCap&) = delete;
};

struct Graph {
  std::string file;
  PipelineOptions options;
  SourceSpec source;
  int in_flight = 4;
  std::unique_ptr<InferenceService> inference;
  std::vector<std::unique_ptr<Node>> nodes;
  YAML::Node sinks;  // the file's `sinks:` list, checked; opened anew for each run that writes
  std::unique_ptr<OpenCvThreadCap> cv_threads;
};

absl::StatusOr<std::unique_ptr<Graph>> LoadGraph(const std::string& yaml_path,
                                                 const PipelineOptions& options);

}  // namespace loom::pipeline

#endif  // LOOM_PIPELINE_GRAPH_H_
