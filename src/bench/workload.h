// Benchmark workloads. A workload is a set of *streams*, each running one model over
// the same K items (decoded images or video frames, preprocessed once, outside every timed region):
//   copies: N streams of one model (N copies of a classifier over a folder of photos);
//   fanout: one stream per model, all over the same frames (several models on every frame).
// Every strategy runs exactly streams × items inferences.
#ifndef LOOM_BENCH_WORKLOAD_H_
#define LOOM_BENCH_WORKLOAD_H_

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "loom/model_info.h"
#include "loom/status.h"
#include "loom/tensor.h"

namespace loom::bench {

enum class WorkloadKind { kCopies, kFanout };

struct BenchModel {
  std::string name;
  std::string path;
};

// What to run: serialisable, so that child processes prepare exactly the same inputs.
struct WorkloadSpec {
  WorkloadKind kind = WorkloadKind::kCopies;
  std::vector<BenchModel> models;   // copies: exactly one
  int copies = 4;                   // copies only
  int items = 32;                   // images (cycled) or video frames per stream
  std::vector<std::string> images;  // item sources, cycled; or
  std::string video;                // the first `items` frames of this video
  int width = 640, height = 480;    // for dynamic image dims (PP-OCR det at 480x640)

  nlohmann::json ToJson() const;
  static absl::StatusOr<WorkloadSpec> FromJson(const nlohmann::json& j);
};

struct Stream {
  int model = 0;  // index into spec.models
};

struct Workload {
  WorkloadSpec spec;
  std::vector<ModelInfo> infos;                   // per model
  std::vector<std::vector<NamedTensors>> inputs;  // [model][item]
  std::vector<Stream> streams;
  bool batchable = false;  // copies of a model with a dynamic dim 0

  int items() const { return spec.items; }
  int64_t total_inferences() const { return static_cast<int64_t>(streams.size()) * spec.items; }
};

// Decodes the images / frames and preprocesses them for every model (blobFromImage semantics, with
// each model family's normalisation). Errors name the file.
absl::StatusOr<Workload> PrepareWorkload(const WorkloadSpec& spec);

}  // namespace loom::bench

#endif  // LOOM_BENCH_WORKLOAD_H_
