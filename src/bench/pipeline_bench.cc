#include "bench/pipeline_bench.h"

#include <algorithm>
#include <functional>
#include <memory>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/cpu_set.h"
#include "core/stats.h"
#include "loom/engine.h"

namespace loom::bench {

namespace {

// Pins the calling thread to `cpu` and runs `f` there; an exception becomes an error.
template <typename T>
absl::StatusOr<T> PinnedCall(int cpu, const std::function<absl::StatusOr<T>()>& f) {
  try {
    absl::Status pinned = PinCurrentThread({cpu});
    return pinned.ok() ? f() : absl::StatusOr<T>(pinned);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("cpu ", cpu, ": ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat("cpu ", cpu, ": an unknown exception"));
  }
}

// Runs `f` on a thread of its own pinned to `cpu` (an engine made there takes that cpu as its
// first usable one), and returns its answer.
template <typename T>
absl::StatusOr<T> OnCpu(int cpu, const std::function<absl::StatusOr<T>()>& f) {
  absl::StatusOr<T> result = absl::InternalError("not run");
  {
    std::jthread thread([&] { result = PinnedCall(cpu, f); });
  }  // joined here
  return result;
}

// A one-core engine (one worker, one thread) on `cpu`, one frame in flight.
absl::StatusOr<std::unique_ptr<Pipeline>> LoadOneCore(const std::string& file, const PipelineBenchOptions& options,
                                                      int cpu) {
  return OnCpu<std::unique_ptr<Pipeline>>(cpu, [&]() -> absl::StatusOr<std::unique_ptr<Pipeline>> {
    PipelineOptions o = options.pipeline;
    o.strategy = PipelineStrategy::kLoom;
    o.sinks = false;
    o.cores = 1;
    o.in_flight = 1;
    LOOM_ASSIGN_OR_RETURN(auto pipeline, Pipeline::Load(file, o));
    if (!pipeline->engine()) return absl::InternalError("the one-core pipeline has no engine");
    const std::vector<WorkerStats> workers = pipeline->engine()->Workers();
    if (workers.size() != 1 || workers[0].cpus != std::vector<int>{cpu}) {
      return absl::InternalError(absl::StrCat("the one-core pipeline is not on cpu ", cpu));
    }
    return pipeline;
  });
}

// The models' cost per frame on one-core pipelines: one pass over the frames on per_core[0] while
// the other cores idle ("alone"), or on every one at once, each on its own core ("busy": the
// costs when every core computes, as at the compute limit; the mean of the cores).
absl::StatusOr<double> ModelMsPerFrame(Pipeline& pipeline) {
  pipeline.engine()->StartTrace();
  auto summary = pipeline.Run();
  const std::string trace = pipeline.engine()->StopTrace();
  LOOM_RETURN_IF_ERROR(summary.status());
  if (summary->frames == 0) return absl::FailedPreconditionError("the source gave no frame to time");
  // Model runs only: the trace also holds the pipeline's leases of the core for its host work.
  const nlohmann::json events = nlohmann::json::parse(trace, nullptr, /*allow_exceptions=*/false);
  if (events.is_discarded() || !events.contains("traceEvents") || !events["traceEvents"].is_array()) {
    return absl::InternalError("the engine's trace is not trace-event JSON");
  }
  double run_us = 0;
  for (const nlohmann::json& e : events["traceEvents"]) {
    if (e.is_object() && e.contains("cat") && e["cat"] == "run" && e.contains("dur") && e["dur"].is_number()) {
      run_us += e["dur"].get<double>();
    }
  }
  return run_us / 1000.0 / static_cast<double>(summary->frames);
}

absl::StatusOr<double> BusyModelMsPerFrame(const std::vector<std::unique_ptr<Pipeline>>& per_core,
                                           const std::vector<int>& cpus) {
  std::vector<absl::StatusOr<double>> ms(per_core.size(), absl::InternalError("not run"));
  {
    std::vector<std::jthread> threads;  // joined on every way out of this block
    threads.reserve(per_core.size());
    for (size_t i = 0; i < per_core.size(); ++i) {
      threads.emplace_back([&, i] {
        ms[i] = PinnedCall<double>(cpus[i], [&] { return ModelMsPerFrame(*per_core[i]); });
      });
    }
  }
  double sum = 0;
  for (const auto& m : ms) {
    LOOM_RETURN_IF_ERROR(m.status());
    sum += *m;
  }
  return sum / static_cast<double>(ms.size());
}

struct Strategy {
  const char* name;
  PipelineStrategy strategy;
  int in_flight;  // 0: the file's
};

// The sequential loop is one frame at a time on plain sessions; thread-per-model keeps frames in
// flight on plain sessions, each model on its own thread; loom is the engine (last: the verdict
// compares it with the others).
const std::vector<Strategy>& Strategies() {
  static const auto* strategies =
      new std::vector<Strategy>{{"sequential", PipelineStrategy::kSequential, 1},
                                {"thread-per-model", PipelineStrategy::kThreadPerModel, 0},
                                {"loom", PipelineStrategy::kLoom, 0}};
  return *strategies;
}

absl::StatusOr<std::vector<std::unique_ptr<Pipeline>>> LoadStrategies(
    const std::string& file, const PipelineBenchOptions& options) {
  std::vector<std::unique_ptr<Pipeline>> loaded;
  for (const Strategy& s : Strategies()) {
    PipelineOptions o = options.pipeline;
    o.strategy = s.strategy;
    o.sinks = false;
    if (s.in_flight > 0) o.in_flight = s.in_flight;
    LOOM_ASSIGN_OR_RETURN(auto p, Pipeline::Load(file, o));
    loaded.push_back(std::move(p));
  }
  return loaded;
}

// The cores the engine and the ideal use: the first `cores` usable ones (all when 0).
std::vector<int> BenchCpus(const PipelineBenchOptions& options) {
  std::vector<int> usable = UsableCpus();
  const int n =
      options.pipeline.cores > 0 ? options.pipeline.cores : static_cast<int>(usable.size());
  usable.resize(std::min(usable.size(), static_cast<size_t>(std::max(n, 1))));
  return usable;
}

// What the rounds measured (round 0, the warm-up, aside).
struct Rounds {
  std::vector<std::vector<double>> fps;  // [strategy][round]
  std::vector<double> host_share;        // Loom's, per round
};

// One run of strategy `i` (`rep` 0: the warm-up round, not kept): its frames/s and, for Loom, its
// host share, node timings and (the last round, when asked) its trace.
absl::Status RunStrategy(size_t i, int rep, Pipeline& pipeline, const PipelineBenchOptions& options,
                         PipelineBenchReport& report, Rounds& rounds) {
  const bool loom = Strategies()[i].strategy == PipelineStrategy::kLoom;
  // The trace: Loom's last repetition, every record's node timings and the engine's runs.
  const bool trace = options.trace && rep == options.reps && loom && pipeline.engine() != nullptr;
  std::vector<PipelineRecord> records;
  RunOptions run_options;
  if (trace) {
    run_options.on_record = [&records](const PipelineRecord& r) {
      records.push_back(r);
      records.back().json.clear();  // the timings are what the trace needs
    };
    pipeline.engine()->StartTrace();
  }
  auto run = pipeline.Run(run_options);
  if (trace) {
    const std::string engine_trace = pipeline.engine()->StopTrace();
    if (run.ok()) report.trace_json = PipelineTraceJson(engine_trace, records);
  }
  LOOM_ASSIGN_OR_RETURN(PipelineSummary summary, std::move(run));
  if (summary.frames == 0 || summary.wall_s <= 0) {
    return absl::FailedPreconditionError("the source gave no frame to time");
  }
  report.frames = summary.frames;
  if (rep == 0) return absl::OkStatus();
  rounds.fps[i].push_back(static_cast<double>(summary.frames) / summary.wall_s);
  if (loom) {
    rounds.host_share.push_back((summary.pipeline_cpu_s + summary.reader_cpu_s) /
                                (summary.wall_s * summary.usable_cores));
    report.loom_nodes = summary.node_mean;
  }
  return absl::OkStatus();
}

// The ideals from each round's passes, Loom's fraction of each round by round, and the verdict.
void Conclude(PipelineBenchReport& report) {
  report.model_ms_per_frame = Median(report.model_ms_runs);
  report.busy_model_ms_per_frame = Median(report.busy_model_ms_runs);
  if (report.model_ms_per_frame > 0) {
    report.ideal_fps = report.usable_cores * 1000.0 / report.model_ms_per_frame;
  }
  if (report.busy_model_ms_per_frame > 0) {
    report.busy_ideal_fps = report.usable_cores * 1000.0 / report.busy_model_ms_per_frame;
  }
  // Round by round: Loom's frames/s over the ideal's (cores x 1000 / that round's model ms).
  const std::vector<double>& loom_runs = report.strategies.back().fps;
  for (size_t r = 0; r < loom_runs.size() && r < report.model_ms_runs.size(); ++r) {
    const double cores = report.usable_cores;
    report.of_ideal_runs.push_back(loom_runs[r] * report.model_ms_runs[r] / (cores * 1000.0));
    report.of_busy_ideal_runs.push_back(loom_runs[r] * report.busy_model_ms_runs[r] /
                                        (cores * 1000.0));
  }
  report.of_ideal = Median(report.of_ideal_runs);
  report.of_busy_ideal = Median(report.of_busy_ideal_runs);
  std::vector<std::string> verdict;
  const double loom = report.strategies.back().median_fps;
  for (size_t i = 0; i + 1 < report.strategies.size(); ++i) {
    verdict.push_back(absl::StrFormat("%.2fx %s", loom / report.strategies[i].median_fps,
                                      report.strategies[i].name));
  }
  report.verdict = absl::StrCat("verdict: loom = ", absl::StrJoin(verdict, ", "));
  if (report.ideal_fps > 0) {
    absl::StrAppend(&report.verdict, absl::StrFormat("; %.2f of ideal", report.of_ideal));
  }
  if (report.busy_ideal_fps > 0) {
    absl::StrAppend(&report.verdict,
                    absl::StrFormat(" (%.2f of the ideal at costs measured with every core busy)",
                                    report.of_busy_ideal));
  }
  if (report.ideal_fps > 0) absl::StrAppend(&report.verdict, " (medians of each round's ratio)");
}

}  // namespace

absl::StatusOr<PipelineBenchReport> RunPipelineBench(const std::string& file,
                                                     const PipelineBenchOptions& options) {
  LOOM_ASSIGN_OR_RETURN(std::vector<std::unique_ptr<Pipeline>> loaded,
                        LoadStrategies(file, options));
  PipelineBenchReport report;
  report.file = file;
  report.reps = options.reps;
  // The ideal is measured in every round too, after the strategies, so that it sees the same
  // machine (a shared machine drifts: one pass alone at the end could be a lucky or an unlucky one).
  const std::vector<int> cpus = BenchCpus(options);
  report.usable_cores = static_cast<int>(cpus.size());  // the cores the engine and the ideal use
  std::vector<std::unique_ptr<Pipeline>> per_core;
  for (int cpu : cpus) {
    LOOM_ASSIGN_OR_RETURN(auto p, LoadOneCore(file, options, cpu));
    per_core.push_back(std::move(p));
  }
  Rounds rounds;
  rounds.fps.resize(Strategies().size());
  for (int rep = 0; rep <= options.reps; ++rep) {  // round 0 warms every strategy up
    for (size_t i = 0; i < Strategies().size(); ++i) {
      if (options.progress) options.progress(rep, Strategies()[i].name);
      LOOM_RETURN_IF_ERROR(RunStrategy(i, rep, *loaded[i], options, report, rounds));
    }
    if (options.progress) options.progress(rep, "ideal (one core)");
    LOOM_ASSIGN_OR_RETURN(double model_ms,
                          OnCpu<double>(cpus[0], [&] { return ModelMsPerFrame(*per_core[0]); }));
    if (options.progress) options.progress(rep, "ideal (every core)");
    LOOM_ASSIGN_OR_RETURN(double busy_ms, BusyModelMsPerFrame(per_core, cpus));
    if (rep > 0) {
      report.model_ms_runs.push_back(model_ms);
      report.busy_model_ms_runs.push_back(busy_ms);
    }
  }
  for (size_t i = 0; i < Strategies().size(); ++i) {
    report.strategies.push_back({Strategies()[i].name, rounds.fps[i], Median(rounds.fps[i])});
  }
  report.host_share = Median(rounds.host_share);
  report.plan = loaded.back()->DescribePlan();
  Conclude(report);
  return report;
}

std::string PipelineBenchReport::Table() const {
  std::ostringstream out;
  out << absl::StrFormat("pipeline %s: %d frames per run, %d repetitions interleaved, medians\n\n", file, frames, reps);
  out << absl::StrFormat("%-18s %10s %9s %12s\n", "strategy", "frames/s", "loom is", "ms/frame");
  const double loom = strategies.back().median_fps;
  for (const PipelineStrategyResult& s : strategies) {
    out << absl::StrFormat("%-18s %10.2f %9s %12.1f\n", s.name, s.median_fps,
                           &s == &strategies.back() ? "" : absl::StrFormat("%.2fx", loom / s.median_fps),
                           s.median_fps > 0 ? 1000.0 / s.median_fps : 0.0);
  }
  if (ideal_fps > 0) {
    out << absl::StrFormat("%-18s %10.2f %9s %12.1f  (the models' single-thread cost, %.1f ms per frame on one core while "
                           "the others idle, / %d cores)\n",
                           "ideal", ideal_fps, "", 1000.0 / ideal_fps, model_ms_per_frame, usable_cores);
  }
  if (busy_ideal_fps > 0) {
    out << absl::StrFormat("%-18s %10.2f %9s %12.1f  (the same, %.1f ms per frame measured on every core at once: "
                           "what the cores give when all compute)\n",
                           "ideal, busy cores", busy_ideal_fps, "", 1000.0 / busy_ideal_fps, busy_model_ms_per_frame);
  }
  if (!of_ideal_runs.empty()) {
    out << absl::StrFormat("loom of ideal      %s  (each round's Loom run over its ideal pass; median %.2f; the ideal "
                           "rows above are the medians of those passes)\n",
                           absl::StrJoin(of_ideal_runs, " ", [](std::string* o, double v) {
                             absl::StrAppend(o, absl::StrFormat("%.2f", v));
                           }),
                           of_ideal);
  }
  out << absl::StrFormat("\nwhere a frame's time goes in Loom (ms per frame):\n  %-14s %10s %10s %10s\n", "node",
                         "compute", "model wait", "core wait");
  for (const auto& [node, t] : loom_nodes) {
    out << absl::StrFormat("  %-14s %10.2f %10.2f %10.2f\n", node, t.compute_ms, t.model_wait_ms, t.core_wait_ms);
  }
  out << "\n" << plan;
  out << absl::StrFormat(
      "  host work (decoding, pre/post-processing) took %.0f%% of the cores' time, on leased cores; "
      "the model workers had the rest\n",
      100 * host_share);
  out << "\n" << verdict << "\n";
  return out.str();
}

nlohmann::json PipelineBenchReport::ToJson() const {
  nlohmann::json rows = nlohmann::json::array();
  for (const PipelineStrategyResult& s : strategies) {
    rows.push_back({{"strategy", s.name}, {"fps", s.median_fps}, {"fps_runs", s.fps}});
  }
  nlohmann::json nodes = nlohmann::json::object();
  for (const auto& [node, t] : loom_nodes) {
    nodes[node] = {{"compute_ms", t.compute_ms}, {"model_wait_ms", t.model_wait_ms}, {"core_wait_ms", t.core_wait_ms}};
  }
  return {{"file", file}, {"frames", frames}, {"repetitions", reps}, {"usable_cores", usable_cores},
          {"strategies", rows}, {"loom_nodes", nodes}, {"host_share", host_share}, {"plan", plan},
          {"model_ms_per_frame", model_ms_per_frame}, {"model_ms_runs", model_ms_runs}, {"ideal_fps", ideal_fps},
          {"busy_model_ms_per_frame", busy_model_ms_per_frame}, {"busy_model_ms_runs", busy_model_ms_runs},
          {"busy_ideal_fps", busy_ideal_fps}, {"of_ideal", of_ideal}, {"of_ideal_runs", of_ideal_runs},
          {"of_busy_ideal", of_busy_ideal}, {"of_busy_ideal_runs", of_busy_ideal_runs}, {"verdict", verdict}};
}

HtmlPage PipelineBenchReport::Html() const {
  HtmlPage page = NewPage(absl::StrCat("loom pipeline bench ", file), verdict, Table(), plan);
  std::vector<std::string> labels;
  std::vector<double> medians;
  std::vector<std::vector<double>> reps_fps;
  for (const PipelineStrategyResult& s : strategies) {
    labels.push_back(s.name);
    medians.push_back(s.median_fps);
    reps_fps.push_back(s.fps);
  }
  page.charts.push_back(BarChart(
      "Frames per second per strategy",
      absl::StrFormat("%d frames per run; bars: the median of %d repetitions; dots: each repetition. Sequential: one "
                      "frame at a time, its models one after another; thread-per-model: a plain session and a thread "
                      "per model, frames in flight; loom: the engine. The dashed line is the ideal.", frames, reps),
      "frames/s", labels, medians, reps_fps, ideal_fps,
      absl::StrFormat("ideal: the models' single-thread cost per frame (%.1f ms) over %d cores", model_ms_per_frame,
                      usable_cores)));
  std::vector<std::string> nodes;
  std::vector<double> compute, model_wait, core_wait;
  for (const auto& [node, t] : loom_nodes) {
    nodes.push_back(node);
    compute.push_back(t.compute_ms);
    model_wait.push_back(t.model_wait_ms);
    core_wait.push_back(t.core_wait_ms);
  }
  page.charts.push_back(StackedBarChart(
      "Where a frame's time goes in Loom, per node",
      "Mean per frame over Loom's last repetition: the node's own computation, waiting for a model's answer "
      "(queue and run), waiting for a leased core. Nodes of one frame may overlap (fan-out), so the bars do not add "
      "up to the frame's latency.",
      "ms per frame", nodes, {{"compute", compute}, {"model wait", model_wait}, {"core wait", core_wait}}));
  if (!trace_json.empty()) {
    const Timeline timeline = TimelineFromTrace(trace_json);
    if (!timeline.spans.empty()) {
      page.charts.push_back(GanttChart(
          "Timeline of Loom's last repetition",
          absl::StrFormat("Engine workers (a bar per model run) and pipeline threads (a bar per node per frame; a "
                          "node that waits for a model spans the wait). %d usable cores.", usable_cores),
          timeline));
    }
  }
  return page;
}

}  // namespace loom::bench
