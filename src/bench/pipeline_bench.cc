#include "bench/pipeline_bench.h"

#include <algorithm>
#include <functional>
#include <memory>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/pipeline_strategies.h"
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
absl::StatusOr<std::unique_ptr<Pipeline>> LoadOneCore(const std::string& file,
                                                      const PipelineBenchOptions& options,
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

// One pass over the frames on a one-core pipeline: the models' cost per frame (every run summed
// from the engine's trace) and the whole time per frame (models and host work, all on that core).
struct OnePass {
  double model_ms = 0, full_ms = 0;
};

absl::StatusOr<OnePass> TimeOnePass(Pipeline& pipeline) {
  pipeline.engine()->StartTrace();
  auto summary = pipeline.Run();
  const std::string trace = pipeline.engine()->StopTrace();
  LOOM_RETURN_IF_ERROR(summary.status());
  if (summary->frames == 0)
    return absl::FailedPreconditionError("the source gave no frame to time");
  // Model runs only: the trace also holds the pipeline's leases of the core for its host work.
  const nlohmann::json events = nlohmann::json::parse(trace, nullptr, /*allow_exceptions=*/false);
  if (events.is_discarded() || !events.contains("traceEvents") ||
      !events["traceEvents"].is_array()) {
    return absl::InternalError("the engine's trace is not trace-event JSON");
  }
  double run_us = 0;
  for (const nlohmann::json& e : events["traceEvents"]) {
    if (e.is_object() && e.contains("cat") && e["cat"] == "run" && e.contains("dur") &&
        e["dur"].is_number()) {
      run_us += e["dur"].get<double>();
    }
  }
  const double frames = static_cast<double>(summary->frames);
  return OnePass{run_us / 1000.0 / frames, summary->wall_s * 1000.0 / frames};
}

// The same pass on every one-core pipeline at once, each on its own core: the mean over the cores.
absl::StatusOr<OnePass> TimeBusyPass(const std::vector<std::unique_ptr<Pipeline>>& per_core,
                                     const std::vector<int>& cpus) {
  std::vector<absl::StatusOr<OnePass>> passes(per_core.size(), absl::InternalError("not run"));
  {
    std::vector<std::jthread> threads;  // joined on every way out of this block
    threads.reserve(per_core.size());
    for (size_t i = 0; i < per_core.size(); ++i) {
      threads.emplace_back([&, i] {
        passes[i] = PinnedCall<OnePass>(cpus[i], [&] { return TimeOnePass(*per_core[i]); });
      });
    }
  }
  OnePass mean;
  for (const auto& p : passes) {
    LOOM_RETURN_IF_ERROR(p.status());
    mean.model_ms += p->model_ms / static_cast<double>(passes.size());
    mean.full_ms += p->full_ms / static_cast<double>(passes.size());
  }
  return mean;
}

// The strategies of one bench, loaded once, each run once per round.
struct Contenders {
  struct InProcess {
    const char* name;
    std::unique_ptr<Pipeline> pipeline;
  };
  std::vector<InProcess> pipelines;          // sequential, thread-per-model, loom (last)
  std::unique_ptr<ThreadsStrategy> threads;  // image files only
  bool processes = false;                    // image files and a self_exe
  std::vector<std::string> files;            // the image files (empty: a video)
  std::vector<std::string> child_args;       // the processes' --model/--set flags
  Pipeline& loom() { return *pipelines.back().pipeline; }
};

absl::StatusOr<Contenders> LoadContenders(const std::string& file,
                                          const PipelineBenchOptions& options, int cores) {
  struct Strategy {
    const char* name;
    PipelineStrategy strategy;
    int in_flight;  // 0: the file's
  };
  // The sequential loop is one frame at a time on plain sessions; thread-per-model keeps frames
  // in flight on plain sessions, each model on its own thread; loom is the engine.
  const Strategy strategies[] = {{"sequential", PipelineStrategy::kSequential, 1},
                                 {"thread-per-model", PipelineStrategy::kThreadPerModel, 0},
                                 {"loom", PipelineStrategy::kLoom, 0}};
  Contenders c;
  for (const Strategy& s : strategies) {
    PipelineOptions o = options.pipeline;
    o.strategy = s.strategy;
    o.sinks = false;
    if (s.in_flight > 0) o.in_flight = s.in_flight;
    LOOM_ASSIGN_OR_RETURN(auto p, Pipeline::Load(file, o));
    c.pipelines.push_back({s.name, std::move(p)});
  }
  LOOM_ASSIGN_OR_RETURN(c.files, c.loom().ImageFiles());
  if (c.files.size() > 1 && cores > 1) {  // one image has no shares to split
    LOOM_ASSIGN_OR_RETURN(c.threads, ThreadsStrategy::Load(file, options.pipeline, cores));
    c.processes = !options.self_exe.empty() && !options.scratch_dir.empty();
    for (const auto& [name, path] : options.pipeline.model_paths) {
      c.child_args.insert(c.child_args.end(), {"--model", absl::StrCat(name, "=", path)});
    }
    for (const auto& [target, value] : options.pipeline.overrides) {
      c.child_args.insert(c.child_args.end(), {"--set", absl::StrCat(target, "=", value)});
    }
  }
  return c;
}

// Runs every contender once; appends frames/s per strategy name (in the report's order) when
// `record`. Loom's run (the last) is traced when `trace`.
absl::Status RunRound(Contenders& c, const PipelineBenchOptions& options, int rep, int cores,
                      bool record, bool trace, PipelineBenchReport& report,
                      std::map<std::string, std::vector<double>>& fps,
                      std::vector<double>& host_share) {
  auto progress = [&](const std::string& name) {
    if (options.progress) options.progress(rep, name);
  };
  auto add = [&](const std::string& name, double frames, double seconds) {
    if (record && seconds > 0) fps[name].push_back(frames / seconds);
  };
  const double n_files = static_cast<double>(c.files.size());
  for (size_t i = 0; i < c.pipelines.size(); ++i) {
    const bool is_loom = i + 1 == c.pipelines.size();
    if (is_loom && c.threads) {  // the folder strategies run before Loom, after the others
      progress("threads");
      LOOM_ASSIGN_OR_RETURN(double wall, c.threads->Run(c.files));
      add("threads", n_files, wall);
      if (c.processes) {
        progress("processes");
        LOOM_ASSIGN_OR_RETURN(ProcessesRun run,
                              RunProcesses(options.self_exe, report.file, c.child_args, c.files,
                                           cores, options.scratch_dir));
        add("processes", n_files, run.wall_s);
        add("processes (with start-up)", n_files, run.wall_with_startup_s);
      }
    }
    progress(c.pipelines[i].name);
    Pipeline& p = *c.pipelines[i].pipeline;
    std::vector<PipelineRecord> records;
    RunOptions run_options;
    const bool tracing = trace && is_loom && p.engine() != nullptr;
    if (tracing) {
      run_options.on_record = [&records](const PipelineRecord& r) {
        records.push_back(r);
        records.back().json.clear();  // the timings are what the trace needs
      };
      p.engine()->StartTrace();
    }
    auto run = p.Run(run_options);
    if (tracing) {
      const std::string engine_trace = p.engine()->StopTrace();
      if (run.ok()) report.trace_json = PipelineTraceJson(engine_trace, records);
    }
    LOOM_ASSIGN_OR_RETURN(PipelineSummary summary, std::move(run));
    if (summary.frames == 0 || summary.wall_s <= 0)
      return absl::FailedPreconditionError("the source gave no frame to time");
    report.frames = summary.frames;
    add(c.pipelines[i].name, static_cast<double>(summary.frames), summary.wall_s);
    if (is_loom && record) {
      host_share.push_back((summary.pipeline_cpu_s + summary.reader_cpu_s) /
                           (summary.wall_s * summary.usable_cores));
      report.loom_nodes = summary.node_mean;
    }
  }
  return absl::OkStatus();
}

// The ratios and the verdict, from the rounds' figures.
void Conclude(PipelineBenchReport& report, const std::map<std::string, std::vector<double>>& fps,
              const std::vector<std::string>& order) {
  for (const std::string& name : order) {
    auto it = fps.find(name);
    if (it != fps.end()) report.strategies.push_back({name, it->second, Median(it->second)});
  }
  const double cores = report.usable_cores;
  auto ideal = [&](const std::vector<double>& ms_runs, double& ms, double& ideal_fps) {
    ms = Median(ms_runs);
    ideal_fps = ms > 0 ? cores * 1000.0 / ms : 0;
  };
  ideal(report.model_ms_runs, report.model_ms_per_frame, report.ideal_fps);
  ideal(report.busy_model_ms_runs, report.busy_model_ms_per_frame, report.busy_ideal_fps);
  ideal(report.full_ms_runs, report.full_ms_per_frame, report.full_ideal_fps);
  ideal(report.busy_full_ms_runs, report.busy_full_ms_per_frame, report.busy_full_ideal_fps);
  // Round by round: Loom's frames/s over the ideal's (cores x 1000 / that round's ms per frame).
  const std::vector<double>& loom = report.strategies.back().fps;
  auto ratios = [&](const std::vector<double>& ms_runs, std::vector<double>& runs, double& median) {
    for (size_t r = 0; r < loom.size() && r < ms_runs.size(); ++r)
      runs.push_back(loom[r] * ms_runs[r] / (cores * 1000.0));
    median = Median(runs);
  };
  ratios(report.model_ms_runs, report.of_ideal_runs, report.of_ideal);
  ratios(report.busy_model_ms_runs, report.of_busy_ideal_runs, report.of_busy_ideal);
  ratios(report.full_ms_runs, report.of_full_ideal_runs, report.of_full_ideal);
  ratios(report.busy_full_ms_runs, report.of_busy_full_ideal_runs, report.of_busy_full_ideal);
  std::vector<std::string> verdict;
  const double loom_fps = report.strategies.back().median_fps;
  for (size_t i = 0; i + 1 < report.strategies.size(); ++i) {
    verdict.push_back(absl::StrFormat("%.2fx %s", loom_fps / report.strategies[i].median_fps,
                                      report.strategies[i].name));
  }
  report.verdict = absl::StrCat("verdict: loom = ", absl::StrJoin(verdict, ", "));
  if (report.ideal_fps > 0) {
    absl::StrAppend(
        &report.verdict,
        absl::StrFormat("; %.2f of ideal (%.2f of the ideal at costs measured with every "
                        "core busy); with host work in the ideal: %.2f (%.2f busy) "
                        "(medians of each round's ratio)",
                        report.of_ideal, report.of_busy_ideal, report.of_full_ideal,
                        report.of_busy_full_ideal));
  }
}

}  // namespace

absl::StatusOr<PipelineBenchReport> RunPipelineBench(const std::string& file,
                                                     const PipelineBenchOptions& options) {
  const std::vector<int> cpus = [&] {
    std::vector<int> usable = UsableCpus();
    const int n =
        options.pipeline.cores > 0 ? options.pipeline.cores : static_cast<int>(usable.size());
    usable.resize(std::min(usable.size(), static_cast<size_t>(std::max(n, 1))));
    return usable;
  }();
  const int cores = static_cast<int>(cpus.size());
  LOOM_ASSIGN_OR_RETURN(Contenders contenders, LoadContenders(file, options, cores));
  // The ideal is measured in every round too, after the strategies, so that it sees the same
  // machine (a shared machine drifts: one pass alone at the end could be a lucky or an unlucky
  // one).
  std::vector<std::unique_ptr<Pipeline>> per_core;
  for (int cpu : cpus) {
    LOOM_ASSIGN_OR_RETURN(auto p, LoadOneCore(file, options, cpu));
    per_core.push_back(std::move(p));
  }
  PipelineBenchReport report;
  report.file = file;
  report.reps = options.reps;
  report.usable_cores = cores;  // the cores the engine and the ideal use
  std::map<std::string, std::vector<double>> fps;
  std::vector<double> host_share;
  for (int rep = 0; rep <= options.reps; ++rep) {  // round 0 warms every strategy up
    const bool record = rep > 0;
    LOOM_RETURN_IF_ERROR(RunRound(contenders, options, rep, cores, record,
                                  options.trace && rep == options.reps, report, fps, host_share));
    if (options.progress) options.progress(rep, "ideal (one core)");
    LOOM_ASSIGN_OR_RETURN(OnePass alone,
                          OnCpu<OnePass>(cpus[0], [&] { return TimeOnePass(*per_core[0]); }));
    if (options.progress) options.progress(rep, "ideal (every core)");
    LOOM_ASSIGN_OR_RETURN(OnePass busy, TimeBusyPass(per_core, cpus));
    if (record) {
      report.model_ms_runs.push_back(alone.model_ms);
      report.busy_model_ms_runs.push_back(busy.model_ms);
      report.full_ms_runs.push_back(alone.full_ms);
      report.busy_full_ms_runs.push_back(busy.full_ms);
    }
  }
  report.host_share = Median(host_share);
  report.plan = contenders.loom().DescribePlan();
  Conclude(report, fps,
           {"sequential", "thread-per-model", "threads", "processes", "processes (with start-up)",
            "loom"});
  return report;
}

std::string PipelineBenchReport::Table() const {
  std::ostringstream out;
  out << absl::StrFormat("pipeline %s: %d frames per run, %d repetitions interleaved, medians\n\n",
                         file, frames, reps);
  out << absl::StrFormat("%-26s %10s %9s %12s\n", "strategy", "frames/s", "loom is", "ms/frame");
  const double loom = strategies.back().median_fps;
  for (const PipelineStrategyResult& s : strategies) {
    out << absl::StrFormat(
        "%-26s %10.2f %9s %12.1f\n", s.name, s.median_fps,
        &s == &strategies.back() ? "" : absl::StrFormat("%.2fx", loom / s.median_fps),
        s.median_fps > 0 ? 1000.0 / s.median_fps : 0.0);
  }
  if (ideal_fps > 0) {
    out << absl::StrFormat(
        "%-26s %10.2f %9s %12.1f  (the models' single-thread cost, %.1f ms per frame on one core "
        "while "
        "the others idle, / %d cores)\n",
        "ideal", ideal_fps, "", 1000.0 / ideal_fps, model_ms_per_frame, usable_cores);
  }
  if (busy_ideal_fps > 0) {
    out << absl::StrFormat(
        "%-26s %10.2f %9s %12.1f  (the same, %.1f ms per frame measured on every core at once: "
        "what the cores give when all compute)\n",
        "ideal, busy cores", busy_ideal_fps, "", 1000.0 / busy_ideal_fps, busy_model_ms_per_frame);
  }
  if (full_ideal_fps > 0) {
    out << absl::StrFormat(
        "%-26s %10.2f %9s %12.1f  (models and host work: the one-core pipeline's whole time, %.1f "
        "ms per frame alone, %.1f with every core busy: %.2f frames/s)\n",
        "ideal, with host", full_ideal_fps, "", 1000.0 / full_ideal_fps, full_ms_per_frame,
        busy_full_ms_per_frame, busy_full_ideal_fps);
  }
  auto runs = [](const std::vector<double>& v) {
    return absl::StrJoin(
        v, " ", [](std::string* o, double x) { absl::StrAppend(o, absl::StrFormat("%.2f", x)); });
  };
  if (!of_ideal_runs.empty()) {
    out << absl::StrFormat(
        "loom of ideal              %s  (each round's Loom run over its ideal pass; median %.2f; "
        "the ideal "
        "rows above are the medians of those passes)\n",
        runs(of_ideal_runs), of_ideal);
    out << absl::StrFormat(
        "  ... with host work in it  %s  (median %.2f; %.2f against the busy cores' whole time)\n",
        runs(of_full_ideal_runs), of_full_ideal, of_busy_full_ideal);
  }
  out << absl::StrFormat(
      "\nwhere a frame's time goes in Loom (ms per frame):\n  %-14s %10s %10s %10s\n", "node",
      "compute", "model wait", "core wait");
  for (const auto& [node, t] : loom_nodes) {
    out << absl::StrFormat("  %-14s %10.2f %10.2f %10.2f\n", node, t.compute_ms, t.model_wait_ms,
                           t.core_wait_ms);
  }
  out << "\n" << plan;
  out << absl::StrFormat(
      "  host work (decoding, pre/post-processing) took %.0f%% of the cores' time, on leased "
      "cores; "
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
    nodes[node] = {{"compute_ms", t.compute_ms},
                   {"model_wait_ms", t.model_wait_ms},
                   {"core_wait_ms", t.core_wait_ms}};
  }
  return {{"file", file},
          {"frames", frames},
          {"repetitions", reps},
          {"usable_cores", usable_cores},
          {"strategies", rows},
          {"loom_nodes", nodes},
          {"host_share", host_share},
          {"plan", plan},
          {"model_ms_per_frame", model_ms_per_frame},
          {"model_ms_runs", model_ms_runs},
          {"ideal_fps", ideal_fps},
          {"busy_model_ms_per_frame", busy_model_ms_per_frame},
          {"busy_model_ms_runs", busy_model_ms_runs},
          {"busy_ideal_fps", busy_ideal_fps},
          {"of_ideal", of_ideal},
          {"of_ideal_runs", of_ideal_runs},
          {"of_busy_ideal", of_busy_ideal},
          {"of_busy_ideal_runs", of_busy_ideal_runs},
          {"full_ms_per_frame", full_ms_per_frame},
          {"full_ms_runs", full_ms_runs},
          {"busy_full_ms_per_frame", busy_full_ms_per_frame},
          {"busy_full_ms_runs", busy_full_ms_runs},
          {"full_ideal_fps", full_ideal_fps},
          {"busy_full_ideal_fps", busy_full_ideal_fps},
          {"of_full_ideal", of_full_ideal},
          {"of_full_ideal_runs", of_full_ideal_runs},
          {"of_busy_full_ideal", of_busy_full_ideal},
          {"of_busy_full_ideal_runs", of_busy_full_ideal_runs},
          {"verdict", verdict}};
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
      absl::StrFormat(
          "%d frames per run; bars: the median of %d repetitions; dots: each repetition. "
          "Sequential: one "
          "frame at a time, its models one after another; thread-per-model: a plain session and a "
          "thread "
          "per model, frames in flight; loom: the engine. The dashed line is the ideal.",
          frames, reps),
      "frames/s", labels, medians, reps_fps, ideal_fps,
      absl::StrFormat("ideal: the models' single-thread cost per frame (%.1f ms) over %d cores",
                      model_ms_per_frame, usable_cores)));
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
      "Mean per frame over Loom's last repetition: the node's own computation, waiting for a "
      "model's answer "
      "(queue and run), waiting for a leased core. Nodes of one frame may overlap (fan-out), so "
      "the bars do not add "
      "up to the frame's latency.",
      "ms per frame", nodes,
      {{"compute", compute}, {"model wait", model_wait}, {"core wait", core_wait}}));
  if (!trace_json.empty()) {
    const Timeline timeline = TimelineFromTrace(trace_json);
    if (!timeline.spans.empty()) {
      page.charts.push_back(GanttChart(
          "Timeline of Loom's last repetition",
          absl::StrFormat("Engine workers (a bar per model run) and pipeline threads (a bar per "
                          "node per frame; a "
                          "node that waits for a model spans the wait). %d usable cores.",
                          usable_cores),
          timeline));
    }
  }
  return page;
}

}  // namespace loom::bench
