// Sinks: where finished frames go, in frame order, on the thread that runs the pipeline — a JSON
// lines file, the recognised text on stdout, annotated images, an annotated video.
//   sinks: [{type: jsonl, path: out.jsonl}, {type: text}, {type: annotate, dir: frames},
//           {type: video, path: out.avi, fps: 25}]
// Paths are relative to the run's output folder.
#ifndef LOOM_PIPELINE_SINKS_H_
#define LOOM_PIPELINE_SINKS_H_

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <yaml-cpp/yaml.h>

#include "engine/yaml_reader.h"
#include "pipeline/value.h"

namespace loom::pipeline {

class Sink {
 public:
  virtual ~Sink() = default;
  virtual absl::Status Write(const Frame& frame, const nlohmann::json& record) = 0;
  virtual absl::Status Close() { return absl::OkStatus(); }
};

// The sinks of a pipeline file's `sinks:` list (each entry checked: type, keys, values), writing
// under `output_dir` (created). With `open` false, only checks the list and makes nothing.
absl::StatusOr<std::vector<std::unique_ptr<Sink>>> MakeSinks(const YAML::Node& sinks,
                                                             const YamlReader& reader,
                                                             const std::string& output_dir,
                                                             bool open = true);

// Draws what the frame's nodes found onto `canvas` (boxes, keypoints, lines, text quads).
void Annotate(const Frame& frame, cv::Mat& canvas);

}  // namespace loom::pipeline

#endif  // LOOM_PIPELINE_SINKS_H_
