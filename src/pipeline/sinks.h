// Sinks: where finished frames go — a JSON lines file, the recognised text on stdout, annotated
// images, an annotated video.
//   sinks: [{type: jsonl, path: out.jsonl}, {type: text}, {type: annotate, dir: frames, name:
//   frame},
//           {type: video, path: out.avi, fps: 25}]
// Paths are relative to the run's output folder. An annotated image is named after the frame's
// index (`name: frame`, frame_000042.jpg) or after its source file (`name: source`, photo.jpg).
//
// Each frame goes through a sink twice: Prepare on the pipeline thread that processed it (on its
// leased core: drawing, encoding — the CPU work, done in parallel across frames), then Write in
// frame order on the thread that runs the pipeline (file writes only).
#ifndef LOOM_PIPELINE_SINKS_H_
#define LOOM_PIPELINE_SINKS_H_

#include <yaml-cpp/yaml.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

#include "engine/yaml_reader.h"
#include "pipeline/value.h"

namespace loom::pipeline {

struct SinkOptions {
  std::string output_dir;
  bool open = true;       // false: only check the list; make nothing
  bool append = false;    // a resumed run: jsonl files are appended to, not replaced
  double source_fps = 0;  // a video sink's rate when its `fps` is 0 (0 here too: 25)
};

class Sink {
 public:
  virtual ~Sink() = default;
  // The frame's CPU work for this sink, kept in the frame's prepared_* maps under index(). Called
  // from any pipeline thread, for different frames at once.
  virtual void Prepare(Frame& frame) { (void)frame; }
  virtual absl::Status Write(const Frame& frame, const nlohmann::json& record) = 0;
  virtual absl::Status Close() { return absl::OkStatus(); }
  size_t index() const { return index_; }  // the sink's place in the file's list

 private:
  friend absl::StatusOr<std::vector<std::unique_ptr<Sink>>> MakeSinks(const YAML::Node&,
                                                                      const YamlReader&,
                                                                      const SinkOptions&);
  size_t index_ = 0;
};

// The sinks of a pipeline file's `sinks:` list (each entry checked: type, keys, values), writing
// under `output_dir` (created). With `open` false, only checks the list and makes nothing.
absl::StatusOr<std::vector<std::unique_ptr<Sink>>> MakeSinks(const YAML::Node& sinks,
                                                             const YamlReader& reader,
                                                             const SinkOptions& options);

// The path of the first jsonl sink in `sinks` under `output_dir`, or empty.
std::string JsonLinesPath(const YAML::Node& sinks, const std::string& output_dir);

// Draws what the frame's nodes found onto `canvas` (boxes, keypoints, lines, text quads).
void Annotate(const Frame& frame, cv::Mat& canvas);

}  // namespace loom::pipeline

#endif  // LOOM_PIPELINE_SINKS_H_
