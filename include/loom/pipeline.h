// Pipeline: several models per frame from a YAML file — a source (images, a folder, a video, or
// frames the caller submits), a graph of nodes run on every frame (preprocess, infer, decoders,
// crop fan-out), and sinks — on one Engine that plans every model of the file.
//
// Basic usage:
//   auto pipeline = loom::Pipeline::Load("pipelines/ocr.yaml", {.input = "data/imageTextN.png"});
//   if (!pipeline.ok()) { ... the message gives FILE:LINE:COLUMN and the culprit ... }
//   auto summary = (*pipeline)->Run();   // every frame of the source, to the file's sinks
//
//   // Or frames from the caller's own loop (a cv2 loop in Python, a server's requests):
//   for (...) { (*pipeline)->Submit(frame); while (auto r = (*pipeline)->Next(false)) use(*r); }
//   (*pipeline)->Finish();  while (auto r = (*pipeline)->Next(true)) use(*r);
//
// Frames flow concurrently (at most `in_flight` at once) and leave in frame order. A frame's CPU
// work (decoding, pre/post-processing) runs on cores leased from the engine's plan, so Loom's own
// threads never add busy threads beside the model workers; while a frame waits for a model it
// holds no core. A frame that fails in a node gets an error record; the others go on.
//
// Thread safety: Run, Submit/Next/Finish and DescribePlan may be called from different threads
// (several threads may Submit at once: each frame gets the next index as it is accepted), but
// Run and the Submit API must not be used at the same time.
#ifndef LOOM_PIPELINE_H_
#define LOOM_PIPELINE_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "loom/status.h"

namespace loom {

class Engine;

namespace pipeline {
class Executor;
struct Graph;
}  // namespace pipeline

// How a frame's models are run: by Loom's engine, or as the naive versions `loom pipeline bench`
// compares it with (plain ONNX Runtime sessions with default options, models one after another
// on the frame's thread, or one thread per model).
enum class PipelineStrategy { kLoom, kSequential, kThreadPerModel };

// Where a node's time went for one frame, in milliseconds: its own computation, waiting for a
// model's answer (queue and run), and waiting for a core to be leased (the machine was busy).
struct NodeTiming {
  double compute_ms = 0;
  double model_wait_ms = 0;
  double core_wait_ms = 0;
  std::chrono::steady_clock::time_point start{};  // when the node began on this frame
  int thread = -1;                                // the pipeline thread that ran it
  double total_ms() const { return compute_ms + model_wait_ms + core_wait_ms; }
};

struct PipelineRecord {
  int64_t frame = 0;   // position in the source, from 0
  std::string source;  // file name, or video name and frame number
  std::string json;    // {"frame", "source", each node's output, "timings_ms", "error"?}
  bool failed = false;
  std::string error;                          // when failed
  std::map<std::string, NodeTiming> timings;  // per node
};

// Chrome trace-event JSON of a pipeline run: `engine_trace` (Engine::StopTrace; may be empty) and a
// span per node per frame on a track per pipeline thread, on the same clock.
std::string PipelineTraceJson(const std::string& engine_trace,
                              const std::vector<PipelineRecord>& records);

struct PipelineOptions {
  std::string input = "";  // overrides the file's source path
  // Model files that replace the file's own, by model name (a model exported from PyTorch, your
  // trained weights in place of the shipped ones). A name the file does not have is an error.
  std::map<std::string, std::string> model_paths = {};
  // Node parameters that replace the file's, as "NODE.KEY" -> a YAML value ("det_in.size" ->
  // "640"): one file, run at another size or threshold. Checked like the file's own.
  std::map<std::string, std::string> overrides = {};
  std::string output_dir = "out";               // sinks write here
  std::optional<int> in_flight = std::nullopt;  // overrides the file's (1..64)
  std::optional<int64_t> limit = std::nullopt;  // overrides source.limit
  int cores = 0;                                // engine cores (0: all usable)
  PipelineStrategy strategy = PipelineStrategy::kLoom;
  bool sinks = true;  // false: run without writing anything (bench, Submit API)
  // Continue an interrupted run over image files: the records of the file's jsonl sink that have
  // no error are kept, and their images left out of the source; the rest (images never recorded,
  // and those whose record was an error) run again and are appended. Every image ends up recorded
  // exactly once. Needs a jsonl sink.
  bool resume = false;
  // false: the file may name no source (its frames come from Submit only, as in `loom serve`).
  bool require_source = true;
  // Run the models on this engine (not owned) instead of an engine of the pipeline's own: its
  // models are added to it as "<model_prefix><name>" and removed with the pipeline, so that one
  // plan covers a server's models and its pipelines. Its options (cores, hint) then apply.
  Engine* engine = nullptr;
  std::string model_prefix = "";
  // Called with every frame's record, in frame order, on the thread that runs Run (embedding,
  // tests). An exception it throws stops the run with an error; it is never let through.
  std::function<void(const PipelineRecord&)> on_record = nullptr;
};

struct PipelineSummary {
  int64_t frames = 0;
  int64_t failed = 0;
  int64_t skipped = 0;  // images left out by PipelineOptions::resume (recorded by an earlier run)
  double wall_s = 0;
  std::map<std::string, NodeTiming> node_mean;  // per node, mean per frame
  // CPU time of Loom's own threads: pre/post-processing (the frames' threads) and decoding (the
  // reading thread), to compare with the model workers' share of the same cores.
  double pipeline_cpu_s = 0;
  double reader_cpu_s = 0;
  int usable_cores = 1;
  std::vector<std::string> errors;  // the first few error records
  // The source ended early (a video that failed to decode midway); empty otherwise.
  std::string source_error;
};

// A frame handed in by the caller: 8-bit pixels, `channels` 1 (gray), 3 (BGR) or 4 (BGRA), rows
// `stride` bytes apart. Copied at Submit.
struct ImageView {
  int width = 0, height = 0, channels = 3;
  const uint8_t* data = nullptr;
  size_t stride = 0;  // 0: width * channels
};

// One run's choices, beside the options the pipeline was loaded with.
struct RunOptions {
  std::string input = "";               // another source for this run (file, folder, glob, video)
  std::vector<std::string> files = {};  // or these image files, in this order
  std::optional<int64_t> limit = std::nullopt;  // at most this many frames
  // Every record, in frame order, on the thread running Run (besides PipelineOptions::on_record).
  std::function<void(const PipelineRecord&)> on_record = nullptr;
  // After each frame: (done, total or -1).
  std::function<void(int64_t, int64_t)> progress = nullptr;
};

class Pipeline {
 public:
  // Parses and checks everything before any frame: YAML syntax and keys (line, column, key),
  // node types, ports and value types, model input shapes against the nodes feeding them, and
  // the source (it must exist and hold frames) — before any model is loaded. Then loads the
  // models (the engine plans its cores).
  static absl::StatusOr<std::unique_ptr<Pipeline>> Load(const std::string& yaml_path,
                                                        const PipelineOptions& options = {});
  ~Pipeline();

  // Runs every frame of the source. `progress(done, total or -1)` is called after each frame.
  // A callback that throws stops the run with an error (never past this call).
  absl::StatusOr<PipelineSummary> Run(const RunOptions& options);
  absl::StatusOr<PipelineSummary> Run(
      const std::function<void(int64_t, int64_t)>& progress = nullptr) {
    return Run(RunOptions{.progress = progress});
  }

  // The caller's own frames: Submit copies the pixels, blocks while `in_flight` frames are being
  // processed, and returns the frame's index (INVALID_ARGUMENT for pixels it cannot take); Next
  // returns finished records in frame order (with `wait`, blocks until the next one is done, the
  // first Submit included; nullopt after Finish once all are out, or without `wait` when none is
  // ready). Finish: no more frames. Finished records wait in memory until Next takes them.
  absl::StatusOr<int64_t> Submit(const ImageView& frame, const std::string& source_name = "");
  // An encoded image (PNG, JPEG, ...), decoded on a leased core.
  absl::StatusOr<int64_t> SubmitEncoded(const std::string& bytes,
                                        const std::string& source_name = "");
  std::optional<PipelineRecord> Next(bool wait = true);
  void Finish();

  // The image files a Run with `options` would read, in order (its input, limit and resume
  // left-outs aside); empty for a video.
  absl::StatusOr<std::vector<std::string>> ImageFiles(const RunOptions& options = {}) const;

  // The engine's plan and the pipeline's threads and core leases beside it.
  std::string DescribePlan() const;
  int in_flight() const;
  // The engine running the models (null for the naive strategies).
  Engine* engine() const;

 private:
  Pipeline();
  std::unique_ptr<pipeline::Graph> graph_;
  // The Submit API's executor (Submit, Next or Finish), made on first use and never replaced.
  pipeline::Executor* Stream();
  std::mutex stream_mu_;
  std::unique_ptr<pipeline::Executor> stream_;  // requires stream_mu_
  // Frames are numbered and pushed in one order, however many threads submit.
  std::mutex submit_mu_;
  int64_t next_index_ = 0;  // requires submit_mu_
};

}  // namespace loom

#endif  // LOOM_PIPELINE_H_
