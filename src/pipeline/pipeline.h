// A pipeline: a YAML file naming models, a source, a graph of nodes run on every frame, and
// sinks. Frames flow concurrently (at most `in_flight` at once, each on a pipeline thread that
// decodes nothing but runs the frame's pre/post-processing; the models run on the engine's
// workers); results leave in frame order. A frame that fails in a node gets an error record; the
// others go on.
//
//   models: [{name: det, path: ../models/ch_PP-OCRv4_det_infer.onnx}, ...]   # engine models
//   hint: throughput                                                       # engine options
//   source: {path: ../data/imageTextN.png, stride: 1, limit: 0}
//   in_flight: 4
//   nodes: [{name: det_in, type: preprocess, ...}, {name: det, type: infer, ...}, ...]
//   sinks: [{type: jsonl, path: out.jsonl}, {type: text}, {type: annotate, dir: frames},
//           {type: video, path: out.avi}]
//
// Relative paths in the file are resolved against its folder; sink paths against --output.
// Models default to max_batch_size 1 here, so that a frame's output never depends on which
// other frames happened to share its batch (a fan-out still batches a frame's own crops).
#ifndef LOOM_PIPELINE_PIPELINE_H_
#define LOOM_PIPELINE_PIPELINE_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "loom/engine.h"
#include "pipeline/node.h"
#include "pipeline/source.h"

namespace loom::pipeline {

enum class Backend { kEngine, kSequential, kThreadPerModel };

struct PipelineOptions {
  std::string input = "";             // overrides source.path
  std::string output_dir = "out";     // sinks write here
  std::optional<int> in_flight = std::nullopt;  // overrides the file's
  std::optional<int64_t> limit = std::nullopt;  // overrides source.limit
  int cores = 0;                      // engine cores (0: all usable)
  Backend backend = Backend::kEngine;
  bool sinks = true;                  // false: run without writing anything (bench)
  // Called with every frame's record, in frame order, on the emitting thread (embedding, tests).
  std::function<void(const nlohmann::json&)> on_record = nullptr;
};

struct RunSummary {
  int64_t frames = 0;
  int64_t failed = 0;
  double wall_s = 0;
  std::map<std::string, double> node_mean_ms;
  // CPU time of Loom's own pipeline threads (pre/post-processing) and of the reading thread
  // (decoding): their share of the core budget the engine's workers use for the models.
  double pipeline_cpu_s = 0;
  double reader_cpu_s = 0;
  int usable_cores = 1;
  std::vector<std::string> errors;  // first few error records
};

class Pipeline {
 public:
  // Parses and checks everything before any frame: YAML syntax and keys (line, column, key),
  // node types, ports and value types, model input shapes against the nodes feeding them, the
  // source. Loads the models (the engine plans its cores).
  static absl::StatusOr<std::unique_ptr<Pipeline>> Load(const std::string& yaml_path,
                                                        const PipelineOptions& options);
  ~Pipeline();

  // Runs every frame of the source. `progress(done, total or -1)` is called after each frame.
  absl::StatusOr<RunSummary> Run(const std::function<void(int64_t, int64_t)>& progress = nullptr);

  // The engine's plan and the pipeline threads beside it.
  std::string DescribePlan() const;
  int in_flight() const { return in_flight_; }

  class Sink;  // where finished frames go, in order (pipeline.cc)

 private:
  Pipeline() = default;
  void ProcessFrame(Frame& frame) const;

  std::string file_;
  PipelineOptions options_;
  SourceSpec source_;
  int in_flight_ = 4;
  std::unique_ptr<InferenceService> inference_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<std::unique_ptr<Sink>> sinks_;
};

}  // namespace loom::pipeline

#endif  // LOOM_PIPELINE_PIPELINE_H_
