// `loom pipeline run FILE.yaml`, `loom pipeline bench FILE.yaml`, and `loom pipeline nodes` (the
// node types a pipeline file may use, one per line; docs/pipelines.md is checked against it).
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "apps/loom/commands.h"
#include "apps/loom/options.h"
#include "bench/pipeline_bench.h"
#include "bench/pipeline_strategies.h"
#include "core/stats.h"
#include "loom/engine.h"
#include "loom/pipeline.h"
#include "pipeline/node.h"

namespace loom::cli {
namespace {

struct PipelineArgs {
  std::string file, input, output = "out", json, trace, html;
  std::vector<std::string> models;  // NAME=PATH
  std::vector<std::string> sets;    // NODE.KEY=VALUE
  bool resume = false;
  int in_flight = 0, cores = 0, reps = 3;
  int64_t limit = 0;
};

absl::StatusOr<PipelineOptions> Options(const PipelineArgs& a) {
  PipelineOptions o;
  LOOM_ASSIGN_OR_RETURN(o.model_paths, ParseNamePaths("--model", a.models));
  LOOM_ASSIGN_OR_RETURN(o.overrides, ParseNamePaths("--set", a.sets, "NODE.KEY=VALUE"));
  o.resume = a.resume;
  o.input = a.input;
  o.output_dir = a.output;
  if (a.in_flight > 0) o.in_flight = a.in_flight;
  if (a.limit > 0) o.limit = a.limit;
  o.cores = a.cores;
  return o;
}

int Fail(const char* what, const absl::Status& s) {
  std::cerr << "\nloom pipeline " << what << ": " << s.message() << "\n";
  return kExitRuntimeError;
}

int Run(const PipelineArgs& a) {
  absl::StatusOr<PipelineOptions> parsed = Options(a);
  if (!parsed.ok()) return Fail("run", parsed.status());
  PipelineOptions options = *std::move(parsed);
  std::vector<PipelineRecord> records;  // --trace: every frame's node timings
  if (!a.trace.empty()) options.on_record = [&](const PipelineRecord& r) { records.push_back(r); };
  auto p = Pipeline::Load(a.file, options);
  if (!p.ok()) return Fail("run", p.status());
  if (!a.trace.empty() && (*p)->engine()) (*p)->engine()->StartTrace();
  const bool tty = isatty(STDERR_FILENO);
  const auto start = Clock::now();
  auto summary = (*p)->Run([&](int64_t done, int64_t total) {
    const double s = MillisecondsSince(start) / 1000.0, fps = s > 0 ? done / s : 0;
    if (!tty && done % 25 != 0 && done != total) return;
    std::cerr << absl::StrFormat("%sframes %d%s  %.1f frames/s%s%s", tty ? "\r" : "", done,
                                 total > 0 ? absl::StrFormat("/%d", total) : "", fps,
                                 total > 0 && fps > 0
                                     ? absl::StrFormat("  ETA %.0fs", (total - done) / fps)
                                     : "",
                                 tty ? "   " : "\n")
              << std::flush;
  });
  if (tty) std::cerr << "\n";
  if (!summary.ok()) return Fail("run", summary.status());
  if (!a.trace.empty()) {
    const std::string engine_trace = (*p)->engine() ? (*p)->engine()->StopTrace() : "";
    for (PipelineRecord& r : records) r.json.clear();  // the trace needs the timings only
    if (!(std::ofstream(a.trace) << PipelineTraceJson(engine_trace, records))) {
      return Fail("run", absl::InternalError("cannot write the trace '" + a.trace + "'"));
    }
    std::cerr << "trace (Perfetto, chrome://tracing): " << a.trace << "\n";
  }
  if (summary->skipped > 0) {
    std::cerr << absl::StrFormat(
        "%d images already recorded by an earlier run were left out (--resume)\n",
        summary->skipped);
  }
  std::cerr << absl::StrFormat("%d frames in %.2f s (%.1f frames/s), %d failed; output in %s/\n",
                               summary->frames, summary->wall_s,
                               summary->frames / std::max(summary->wall_s, 1e-9), summary->failed,
                               a.output);
  std::cerr << absl::StrFormat("  %-14s %10s %10s %10s  (ms per frame)\n", "node", "compute",
                               "model wait", "core wait");
  for (const auto& [node, t] : summary->node_mean) {
    std::cerr << absl::StrFormat("  %-14s %10.2f %10.2f %10.2f\n", node, t.compute_ms,
                                 t.model_wait_ms, t.core_wait_ms);
  }
  const double budget = summary->wall_s * summary->usable_cores;
  std::cerr << absl::StrFormat(
      "Loom's own threads: pre/post-processing %.2f s CPU, decoding %.2f s CPU = %.1f%% of the "
      "%d cores over the run (the rest is the engine's workers)\n",
      summary->pipeline_cpu_s, summary->reader_cpu_s,
      budget > 0 ? 100.0 * (summary->pipeline_cpu_s + summary->reader_cpu_s) / budget : 0.0,
      summary->usable_cores);
  std::cerr << (*p)->DescribePlan();
  for (const std::string& e : summary->errors) std::cerr << "error: " << e << "\n";
  if (!summary->source_error.empty()) std::cerr << "error: " << summary->source_error << "\n";
  return summary->failed > 0 || !summary->source_error.empty() ? kExitRuntimeError : kExitOk;
}

int Bench(const PipelineArgs& a) {
  bench::PipelineBenchOptions options;
  absl::StatusOr<PipelineOptions> parsed = Options(a);
  if (!parsed.ok()) return Fail("bench", parsed.status());
  options.pipeline = *std::move(parsed);
  options.reps = a.reps;
  options.trace = !a.trace.empty() || !a.html.empty();  // the report's timeline needs the trace
  std::error_code ec;
  options.self_exe = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  const std::filesystem::path scratch = std::filesystem::temp_directory_path(ec) /
                                        ("loom-pipeline-bench-" + std::to_string(getpid()));
  std::filesystem::create_directories(scratch, ec);
  options.scratch_dir = ec ? "" : scratch.string();
  struct RemoveScratch {
    std::filesystem::path dir;
    ~RemoveScratch() {
      std::error_code ignored;
      std::filesystem::remove_all(dir, ignored);
    }
  } remove_scratch{scratch};
  options.progress = [&](int round, const std::string& strategy) {
    std::cerr << absl::StrFormat("\rround %d/%d  %-18s", round, a.reps, strategy) << std::flush;
  };
  auto report = bench::RunPipelineBench(a.file, options);
  std::cerr << "\n";
  if (!report.ok()) return Fail("bench", report.status());
  if (a.json != "-") std::cout << report->Table();
  if (!Emit(a.json, report->ToJson().dump(2) + "\n")) {
    return Fail("bench", absl::InternalError("cannot write '" + a.json + "'"));
  }
  if (!a.trace.empty()) {
    if (!Emit(a.trace, report->trace_json)) {
      return Fail("bench", absl::InternalError("cannot write the trace '" + a.trace + "'"));
    }
    std::cerr << "trace (Perfetto, chrome://tracing): " << a.trace << "\n";
  }
  if (!a.html.empty()) {
    if (absl::Status s = bench::WriteHtml(a.html, report->Html()); !s.ok()) return Fail("bench", s);
    std::cerr << "report: " << a.html << "\n";
  }
  return kExitOk;
}

}  // namespace

CommandFn AddPipelineCommand(CLI::App& app) {
  auto a = std::make_shared<PipelineArgs>();
  app.require_subcommand(1);
  auto* run = app.add_subcommand("run", "Run a pipeline over its source (or --input)");
  auto* bench = app.add_subcommand(
      "bench", "The pipeline as a sequential loop, a thread per model, and with Loom");
  // Internal: a process of `bench`'s process strategy.
  auto* child = app.add_subcommand("bench-child", "")->group("");
  child->add_option("FILE", a->file)->required();
  child->add_option("--files", a->input)->required();
  child->add_option("--model", a->models);
  child->add_option("--set", a->sets);
  auto* nodes = app.add_subcommand("nodes", "List the node types a pipeline file may use");
  for (CLI::App* sub : {run, bench}) {
    sub->add_option("FILE", a->file, "Pipeline YAML")->required();
    sub->add_option("--input", a->input,
                    "Image, folder, glob or video (overrides the file's source)");
    sub->add_option("--limit", a->limit, "At most this many frames")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
    sub->add_option("--in-flight", a->in_flight, "Frames in flight (overrides the file's)")
        ->check(CLI::Range(1, 64));
    sub->add_option("--cores", a->cores, "Cores for the engine (0: all usable)")
        ->check(CLI::Range(0, 4096));
    sub->add_option("--model", a->models,
                    "NAME=PATH: replace the file's model NAME by this file (repeatable)");
    sub->add_option(
        "--set", a->sets,
        "NODE.KEY=VALUE: replace a node's parameter, e.g. det_in.size=640 (repeatable)");
  }
  run->add_flag(
      "--resume", a->resume,
      "Continue an interrupted run over image files: keep its jsonl records, run only the images "
      "not recorded yet (or recorded with an error), append their records");
  run->add_option("--output", a->output, "Folder for the sinks' files")->capture_default_str();
  run->add_option(
      "--trace", a->trace,
      "Write a Chrome trace-event JSON of the run to FILE (Perfetto, chrome://tracing): the "
      "engine's runs and queue waits per worker, every node of every frame per pipeline thread");
  bench->add_option("--reps", a->reps, "Timed repetitions")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  bench->add_option("--json", a->json, "Write the report as JSON to FILE (- for stdout)");
  bench->add_option("--trace", a->trace,
                    "Write Loom's last repetition as Chrome trace-event JSON to FILE (engine runs "
                    "per worker, every node of every frame per pipeline thread)");
  bench->add_option("--html", a->html,
                    "Write a self-contained HTML report to FILE: frames/s per strategy, where a "
                    "frame's time goes per node, Loom's timeline");
  return [a, run, child, nodes]() {
    if (nodes->parsed()) {
      for (const std::string& name : pipeline::NodeTypeNames()) std::cout << name << "\n";
      return kExitOk;
    }
    if (child->parsed()) {
      absl::StatusOr<PipelineOptions> options = Options(*a);
      if (!options.ok()) return Fail("bench-child", options.status());
      options->input.clear();
      return bench::PipelineChildMain(a->file, *options, a->input);
    }
    return run->parsed() ? Run(*a) : Bench(*a);
  };
}

}  // namespace loom::cli
