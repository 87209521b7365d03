// `loom pipeline bench`: a pipeline as a sequential loop (one frame at a time, models one after
// another, plain sessions), a thread per model (plain sessions), and Loom — repetitions
// interleaved, medians, the plan and where each frame's time went.
#ifndef LOOM_BENCH_PIPELINE_BENCH_H_
#define LOOM_BENCH_PIPELINE_BENCH_H_

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/html_report.h"
#include "loom/pipeline.h"

namespace loom::bench {

struct PipelineBenchOptions {
  PipelineOptions
      pipeline;        // input, limit, in_flight, cores, model_paths, overrides (sinks are off)
  int reps = 3;        // after one untimed round of every strategy
  bool trace = false;  // record Loom's last repetition (PipelineBenchReport::trace_json)
  // For a source of image files: the `loom` binary whose `pipeline bench-child` runs the process
  // strategy (empty: no process strategy), and a folder for its file lists.
  std::string self_exe;
  std::string scratch_dir;
  std::function<void(int round, const std::string& strategy)> progress = nullptr;
};

struct PipelineStrategyResult {
  std::string name;
  std::vector<double> fps;  // frames/s per repetition
  double median_fps = 0;
};

struct PipelineBenchReport {
  std::string file;
  int64_t frames = 0;  // per run
  int reps = 0;
  int usable_cores = 0;
  // sequential, thread-per-model, [threads, processes, processes (with start-up): image files],
  // loom
  std::vector<PipelineStrategyResult> strategies;
  std::map<std::string, NodeTiming> loom_nodes;  // Loom's per-node split, last run
  double host_share = 0;  // Loom's own threads' CPU / the cores' time (median)
  // The chain's ideal: its models' single-thread cost per frame (every run of one pass over the
  // frames on a one-core engine, one frame at a time, summed from the engine's trace; a pass in
  // every round, after the strategies; the median), spread over the usable cores:
  // usable_cores x 1000 / model_ms_per_frame frames/s.
  double model_ms_per_frame = 0;
  std::vector<double> model_ms_runs;  // per repetition
  // The same costs measured on every usable core at once (a one-core pipeline per core, each over
  // the frames): on a machine whose cores share caches and memory bandwidth a run is slower when
  // its neighbours compute too, and no schedule can beat that. busy_ideal_fps likewise.
  double busy_model_ms_per_frame = 0;
  std::vector<double> busy_model_ms_runs;
  double busy_ideal_fps = 0;
  double ideal_fps = 0;
  // The ideal with the host work in it: the one-core pipeline's whole time per frame (decoding,
  // pre/post-processing and the models, all on its one core), alone and on every core at once.
  // Where host work is a large share (a folder of large photos), this is what the cores can give.
  double full_ms_per_frame = 0, busy_full_ms_per_frame = 0;
  std::vector<double> full_ms_runs, busy_full_ms_runs;
  double full_ideal_fps = 0, busy_full_ideal_fps = 0;
  // Loom's fraction of each ideal, per round (that round's Loom run over that round's ideal pass,
  // measured a few seconds apart, so that a machine drifting between rounds drifts out of the
  // ratio) and its median: the figure the verdict quotes.
  std::vector<double> of_ideal_runs, of_busy_ideal_runs, of_full_ideal_runs,
      of_busy_full_ideal_runs;
  double of_ideal = 0, of_busy_ideal = 0, of_full_ideal = 0, of_busy_full_ideal = 0;
  std::string plan;
  std::string verdict;
  // PipelineBenchOptions::trace: Loom's last repetition as Chrome trace-event JSON (engine runs
  // per worker and every node of every frame per pipeline thread).
  std::string trace_json;

  std::string Table() const;
  nlohmann::json ToJson() const;
  HtmlPage Html() const;
};

absl::StatusOr<PipelineBenchReport> RunPipelineBench(const std::string& file,
                                                     const PipelineBenchOptions& options);

}  // namespace loom::bench

#endif  // LOOM_BENCH_PIPELINE_BENCH_H_
