#include "bench/bench.h"

#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/ideal.h"
#include "core/cpu_set.h"
#include "core/stats.h"
#include "loom/engine.h"
#include "runtime/synthetic_models.h"

namespace loom::bench {
namespace {

struct Entry {
  std::string name;
  std::function<absl::StatusOr<StrategyRun>()> run;
  bool children = false;  // processes: also report with start-up
};

std::string Describe(const WorkloadSpec& spec, int64_t inferences) {
  std::vector<std::string> names;
  for (const BenchModel& m : spec.models) names.push_back(m.name);
  const std::string source =
      spec.video.empty()
          ? absl::StrCat(spec.items, " images (", spec.images.size(), " files, cycled)")
          : absl::StrCat(spec.items, " frames of ", spec.video);
  if (spec.kind == WorkloadKind::kCopies) {
    return absl::StrCat("copies: ", spec.copies, " copies of ", names[0], " over ", source, " = ",
                        inferences, " inferences per run");
  }
  return absl::StrCat("fanout: ", absl::StrJoin(names, " + "), " on every one of ", source, " = ",
                      inferences, " inferences per run");
}

}  // namespace

const StrategySummary* BenchReport::Find(const std::string& name) const {
  for (const auto& s : strategies) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

std::string BenchReport::Table() const {
  std::ostringstream out;
  out << Describe(spec, inferences_per_run) << "\n"
      << absl::StrFormat(
             "%d usable cores; %d repetitions interleaved across strategies; medians\n\n",
             usable_cores, repetitions);
  const StrategySummary* loom = Find("loom");
  out << absl::StrFormat("%-24s %9s %8s %8s %8s %8s %7s %9s\n", "strategy", "infer/s", "loom is",
                         "p50 ms", "p95 ms", "p99 ms", "CPU %", "peak MB");
  for (const StrategySummary& s : strategies) {
    const std::string ratio = loom && s.throughput > 0 && &s != loom
                                  ? absl::StrFormat("%.2fx", loom->throughput / s.throughput)
                                  : "";
    out << absl::StrFormat("%-24s %9.1f %8s %8.2f %8.2f %8.2f %7.0f %9.0f\n", s.name, s.throughput,
                           ratio, s.p50_ms, s.p95_ms, s.p99_ms, s.cpu_percent, s.peak_rss_mb);
  }
  if (ideal_throughput > 0) {
    out << absl::StrFormat(
        "%-24s %9.1f %8s  (usable cores x the single-thread rate on one core while the others "
        "idle)\n",
        "ideal", ideal_throughput, "");
  }
  if (busy_ideal_throughput > 0) {
    out << absl::StrFormat(
        "%-24s %9.1f %8s  (the same, the rate measured on every core at once: what the cores give "
        "when all compute)\n",
        "ideal, busy cores", busy_ideal_throughput, "");
  }
  out << "\n" << plan << "\n" << verdict << "\n";
  return out.str();
}

nlohmann::json BenchReport::ToJson() const {
  nlohmann::json rows = nlohmann::json::array();
  for (const StrategySummary& s : strategies) {
    rows.push_back({{"strategy", s.name},
                    {"throughput", s.throughput},
                    {"throughputs", s.throughputs},
                    {"p50_ms", s.p50_ms},
                    {"p95_ms", s.p95_ms},
                    {"p99_ms", s.p99_ms},
                    {"cpu_percent", s.cpu_percent},
                    {"peak_rss_mb", s.peak_rss_mb}});
  }
  return {{"workload", spec.ToJson()},
          {"usable_cores", usable_cores},
          {"repetitions", repetitions},
          {"inferences_per_run", inferences_per_run},
          {"strategies", rows},
          {"ideal_throughput", ideal_throughput},
          {"ideal_throughputs", ideal_throughputs},
          {"busy_ideal_throughput", busy_ideal_throughput},
          {"busy_ideal_throughputs", busy_ideal_throughputs},
          {"of_ideal", of_ideal},
          {"of_busy_ideal", of_busy_ideal},
          {"plan", plan},
          {"verdict", verdict}};
}

std::string BenchReport::Csv() const {
  std::ostringstream out;
  out << "strategy,throughput,p50_ms,p95_ms,p99_ms,cpu_percent,peak_rss_mb\n";
  for (const StrategySummary& s : strategies) {
    out << absl::StrFormat("%s,%.3f,%.3f,%.3f,%.3f,%.1f,%.1f\n", s.name, s.throughput, s.p50_ms,
                           s.p95_ms, s.p99_ms, s.cpu_percent, s.peak_rss_mb);
  }
  return out.str();
}

const std::vector<std::string>& StrategyNames() {
  static const std::vector<std::string> names = {"serial",
                                                 "threads",
                                                 "threads-all-cores",
                                                 "processes",
                                                 "batch",
                                                 "shared-pool-serial",
                                                 "shared-pool-threads",
                                                 "loom"};
  return names;
}

namespace {

// Every strategy `options` asks for, in the order they run in each round; loom always.
std::vector<Entry> StrategiesFor(const Workload& w, const BenchOptions& options, int cores,
                                 const EngineOptions& engine_options,
                                 const std::string& spec_path) {
  std::vector<Entry> entries;
  auto wanted = [&](const std::string& name) {
    return name == "loom" || options.only.empty() ||
           std::find(options.only.begin(), options.only.end(), name) != options.only.end();
  };
  auto add = [&](std::string name, std::function<absl::StatusOr<StrategyRun>()> run,
                 bool children = false) {
    if (wanted(name)) entries.push_back({std::move(name), std::move(run), children});
  };
  auto in_children = [&w, &options, &spec_path, cores](ChildMode mode) {
    return [&w, &options, &spec_path, cores, mode] {
      return RunInChildren(w, mode, options.self_exe, spec_path, cores);
    };
  };
  add("serial", [&w] { return RunSerial(w); });
  add("threads", [&w] { return RunThreads(w); });
  add("threads-all-cores", [&w, cores] { return RunThreadsAllCores(w, cores); });
  add("processes", in_children(ChildMode::kProcesses), true);
  if (w.batchable && w.spec.kind == WorkloadKind::kCopies) {
    add("batch", [&w] { return RunBatch(w); });
  }
  add("shared-pool-serial", in_children(ChildMode::kSharedPoolSerial));
  add("shared-pool-threads", in_children(ChildMode::kSharedPoolThreads));
  add("loom", [&w, engine_options, trace = options.trace] {
    return RunLoom(w, engine_options, std::nullopt, trace);
  });
  if (options.sweep) {
    for (int threads = 1; threads <= cores; ++threads) {
      for (int instances = 1; instances * threads <= cores; ++instances) {
        for (bool spin : {false, true}) {
          const StaticLayout layout{instances, threads, spin};
          entries.push_back({layout.Name(), [&w, engine_options, layout] {
                               return RunLoom(w, engine_options, layout);
                             }});
        }
      }
    }
  }
  return entries;
}

// What the rounds measured: every strategy's timed runs, and each round's ideal costs (mean ms per
// inference over the streams, alone and with every core busy).
struct Rounds {
  std::map<std::string, std::vector<StrategyRun>> runs;
  std::vector<double> alone_ms, busy_ms;
};

// Warm-up rounds, then the timed ones: every strategy in turn, then the ideal's passes, so that
// each round's ideal sees the same machine as its strategies (a shared machine drifts).
absl::StatusOr<Rounds> RunRounds(const Workload& w, const std::vector<Entry>& entries,
                                 const BenchOptions& options, IdealProbe& ideal) {
  Rounds rounds;
  const int count = options.warmup + options.repetitions;
  const int total = count * static_cast<int>(entries.size());
  int done = 0;
  for (int round = 0; round < count; ++round) {
    const bool timed = round >= options.warmup;
    for (const Entry& e : entries) {
      if (options.progress) {
        options.progress(done, total, absl::StrCat(timed ? "" : "warm-up ", e.name));
      }
      auto run = e.run();
      if (!run.ok()) {
        return absl::Status(run.status().code(),
                            absl::StrCat("strategy '", e.name, "': ", run.status().message()));
      }
      if (static_cast<int64_t>(run->latencies_ms.size()) != w.total_inferences()) {
        return absl::InternalError(absl::StrCat("strategy '", e.name, "' ran ",
                                                run->latencies_ms.size(), " inferences, expected ",
                                                w.total_inferences()));
      }
      if (timed) rounds.runs[e.name].push_back(std::move(*run));
      ++done;
    }
    if (!timed) continue;
    if (options.progress) options.progress(done, total, "ideal (one core, then every core)");
    LOOM_ASSIGN_OR_RETURN(SingleThreadCosts costs, ideal.Measure());
    rounds.alone_ms.push_back(MeanStreamMs(w, costs.alone_ms));
    rounds.busy_ms.push_back(MeanStreamMs(w, costs.busy_ms));
  }
  if (options.progress) options.progress(total, total, "done");
  return rounds;
}

// Throughput, latency, CPU and memory over a strategy's runs (medians; with_startup: a child
// strategy's wall time from spawn to the last exit).
StrategySummary SummarizeStrategy(const std::string& name, const std::vector<StrategyRun>& runs,
                                  bool with_startup, int64_t inferences, int cores) {
  StrategySummary s;
  s.name = with_startup ? name + " (+start-up)" : name;
  std::vector<double> p50, p95, p99, cpu;
  for (const StrategyRun& r : runs) {
    const double wall = with_startup ? r.wall_with_startup_s : r.wall_s;
    s.throughputs.push_back(static_cast<double>(inferences) / wall);
    const LatencySummary l = Summarize(r.latencies_ms);
    p50.push_back(l.p50);
    p95.push_back(l.p95);
    p99.push_back(l.p99);
    const double cpu_wall = r.wall_with_startup_s > 0 ? r.wall_with_startup_s : r.wall_s;
    cpu.push_back(100.0 * r.cpu_s / (cpu_wall * cores));
    s.peak_rss_mb = std::max(s.peak_rss_mb, r.peak_rss_mb);
    s.latencies_ms.insert(s.latencies_ms.end(), r.latencies_ms.begin(), r.latencies_ms.end());
  }
  s.throughput = Median(s.throughputs);
  s.p50_ms = Median(p50);
  s.p95_ms = Median(p95);
  s.p99_ms = Median(p99);
  s.cpu_percent = Median(cpu);
  return s;
}

// The ideals (medians of the rounds' passes) and Loom's fraction of each, round by round.
void SetIdeals(BenchReport& report, const Rounds& rounds) {
  const int cores = report.usable_cores;
  for (double ms : rounds.alone_ms) report.ideal_throughputs.push_back(IdealRate(cores, ms));
  for (double ms : rounds.busy_ms) report.busy_ideal_throughputs.push_back(IdealRate(cores, ms));
  report.ideal_throughput = Median(report.ideal_throughputs);
  report.busy_ideal_throughput = Median(report.busy_ideal_throughputs);
  const StrategySummary* loom = report.Find("loom");
  std::vector<double> of_ideal, of_busy_ideal;
  for (size_t r = 0; r < loom->throughputs.size() && r < rounds.alone_ms.size(); ++r) {
    if (report.ideal_throughputs[r] > 0) {
      of_ideal.push_back(loom->throughputs[r] / report.ideal_throughputs[r]);
    }
    if (report.busy_ideal_throughputs[r] > 0) {
      of_busy_ideal.push_back(loom->throughputs[r] / report.busy_ideal_throughputs[r]);
    }
  }
  report.of_ideal = Median(of_ideal);
  report.of_busy_ideal = Median(of_busy_ideal);
}

// "verdict: loom = 1.80x serial, ...; 0.71 of ideal (0.90 of the busy-cores ideal); ..."
std::string Verdict(const BenchReport& report) {
  const StrategySummary* loom = report.Find("loom");
  std::vector<std::string> ratios;
  const StrategySummary* best_static = nullptr;
  for (const StrategySummary& s : report.strategies) {
    if (&s == loom) continue;
    if (s.name.rfind("static ", 0) == 0) {
      if (!best_static || s.throughput > best_static->throughput) best_static = &s;
      continue;
    }
    ratios.push_back(absl::StrFormat("%.2fx %s", loom->throughput / s.throughput, s.name));
  }
  std::string verdict = absl::StrCat("verdict: loom = ", absl::StrJoin(ratios, ", "));
  if (report.ideal_throughput > 0) {
    absl::StrAppend(&verdict, absl::StrFormat("; %.2f of ideal", report.of_ideal));
  }
  if (report.busy_ideal_throughput > 0) {
    absl::StrAppend(&verdict,
                    absl::StrFormat(" (%.2f of the busy-cores ideal)", report.of_busy_ideal));
  }
  if (best_static) {
    absl::StrAppend(&verdict, absl::StrFormat("; %.2fx the best static layout (%s, %.1f/s)",
                                              loom->throughput / best_static->throughput,
                                              best_static->name, best_static->throughput));
  }
  return verdict;
}

}  // namespace

absl::StatusOr<BenchReport> RunBench(const WorkloadSpec& spec, const BenchOptions& options) {
  LOOM_ASSIGN_OR_RETURN(Workload w, PrepareWorkload(spec));
  std::vector<int> cpus = UsableCpus();
  if (options.cores > 0 && options.cores < static_cast<int>(cpus.size())) {
    cpus.resize(static_cast<size_t>(options.cores));
  }
  const int cores = options.cores > 0 ? options.cores : static_cast<int>(cpus.size());
  const std::string spec_path = options.scratch_dir + "/workload.json";
  std::ofstream(spec_path) << spec.ToJson().dump();
  EngineOptions engine_options;
  engine_options.cores = options.cores;
  const std::vector<Entry> entries = StrategiesFor(w, options, cores, engine_options, spec_path);
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<IdealProbe> ideal, IdealProbe::Create(w, cpus));
  LOOM_ASSIGN_OR_RETURN(Rounds rounds, RunRounds(w, entries, options, *ideal));

  BenchReport report;
  report.spec = spec;
  report.usable_cores = cores;
  report.repetitions = options.repetitions;
  report.inferences_per_run = w.total_inferences();
  for (const Entry& e : entries) {
    const auto& runs = rounds.runs[e.name];
    report.strategies.push_back(
        SummarizeStrategy(e.name, runs, false, w.total_inferences(), cores));
    if (e.children) {
      report.strategies.push_back(
          SummarizeStrategy(e.name, runs, true, w.total_inferences(), cores));
    }
  }
  const StrategyRun& last_loom = rounds.runs["loom"].back();
  report.plan = last_loom.plan;
  report.trace_json = last_loom.trace_json;
  for (const Entry& e : entries) {
    if (rounds.runs[e.name].empty()) continue;
    const StrategyRun& last = rounds.runs[e.name].back();
    if (!last.spans.empty()) {
      report.timelines[e.name] = TimelineFromSpans(last.lanes, last.spans, last.started);
    }
  }
  if (!last_loom.trace_json.empty()) {
    report.timelines["loom"] = TimelineFromTrace(last_loom.trace_json);
  }
  SetIdeals(report, rounds);
  report.verdict = Verdict(report);
  return report;
}

HtmlPage BenchReport::Html() const {
  HtmlPage page =
      NewPage(absl::StrCat("loom bench ", spec.kind == WorkloadKind::kCopies ? "copies" : "fanout"),
              verdict, Table(), plan);
  const std::string workload = Describe(spec, inferences_per_run);
  std::vector<std::string> labels;
  std::vector<double> medians;
  std::vector<std::vector<double>> reps;
  std::vector<std::pair<std::string, std::vector<double>>> latencies;
  for (const StrategySummary& s : strategies) {
    labels.push_back(s.name);
    medians.push_back(s.throughput);
    reps.push_back(s.throughputs);
    if (s.name.find("(+start-up)") == std::string::npos)
      latencies.push_back({s.name, s.latencies_ms});
  }
  page.charts.push_back(BarChart(
      "Throughput per strategy",
      absl::StrFormat(
          "%s. Bars: the median of %d repetitions; dots: each repetition. The dashed line is the "
          "ideal: %d usable cores each running single-thread inferences back to back at the "
          "cost measured on one core while the others idle (%.1f/s); with every core busy "
          "at once the cores give %.1f/s.",
          workload, repetitions, usable_cores, ideal_throughput, busy_ideal_throughput),
      "inferences/s", labels, medians, reps, ideal_throughput,
      absl::StrFormat("ideal (%.1f/s)", ideal_throughput)));
  page.charts.push_back(
      CdfChart("Latency distribution per strategy",
               "Every inference of every repetition, from its submission to its answer (a strategy "
               "that queues requests "
               "counts the wait). Further left is faster; a long tail to the right is jitter.",
               "latency per inference, ms (log scale)", latencies, /*log_x=*/true));
  std::vector<std::pair<std::string, Timeline>> concurrency;
  for (const char* name : {"loom", "threads", "threads-all-cores", "serial", "batch"}) {
    auto t = timelines.find(name);
    if (t == timelines.end() || t->second.spans.empty()) continue;
    const bool loom = t->first == "loom";
    page.charts.push_back(GanttChart(
        absl::StrCat("Timeline: ", t->first),
        loom ? absl::StrFormat("Loom's last repetition: a lane per engine worker (the cores it "
                               "owns in its name), "
                               "a bar per run (a batch of rows counts once), %d usable cores.",
                               usable_cores)
        : t->first == "serial" || t->first == "batch"
            ? absl::StrFormat(
                  "The last repetition of '%s': one thread, a bar per Session::Run; ONNX Runtime's "
                  "intra-op threads do the parallel work inside each bar.",
                  t->first)
            : absl::StrFormat(
                  "The last repetition of '%s': a lane per thread it starts, a bar per inference "
                  "(Session::Run). Lanes that overlap in time beyond %d cores share those cores: "
                  "each "
                  "bar then stretches.",
                  t->first, usable_cores),
        t->second));
    if (t->first != "serial" && t->first != "batch") concurrency.push_back({t->first, t->second});
  }
  if (!concurrency.empty()) {
    page.charts.push_back(ConcurrencyChart(
        "Inferences running at once",
        absl::StrFormat(
            "From the timelines above. Above the dashed line (%d usable cores) threads are "
            "oversubscribed: the OS time-slices them, and each session's own intra-op threads "
            "come on top of this count.",
            usable_cores),
        concurrency, usable_cores));
  }
  return page;
}

std::string OverheadReport::Table() const {
  return absl::StrFormat(
      "overhead: one Add over 1,000 floats, %d calls each, interleaved, one pinned core\n"
      "%-26s %9s %9s\n%-26s %9.1f %9.1f\n%-26s %9.1f %9.1f\n"
      "verdict: Infer() p50 - bare Run p50 = %.1f us\n",
      runs, "path", "p50 us", "p99 us", "Session::Run (bare)", bare_p50_us, bare_p99_us,
      "Engine::Infer()", engine_p50_us, engine_p99_us, overhead_p50_us());
}

nlohmann::json OverheadReport::ToJson() const {
  return {{"runs", runs},
          {"bare_p50_us", bare_p50_us},
          {"bare_p99_us", bare_p99_us},
          {"engine_p50_us", engine_p50_us},
          {"engine_p99_us", engine_p99_us},
          {"overhead_p50_us", overhead_p50_us()}};
}

HtmlPage OverheadReport::Html() const {
  HtmlPage page =
      NewPage("loom bench overhead",
              absl::StrFormat("Infer() p50 - bare Run p50 = %.1f us (p99: %.1f us vs %.1f us)",
                              overhead_p50_us(), engine_p99_us, bare_p99_us),
              Table(), "");
  page.charts.push_back(CdfChart(
      "Call latency: Engine::Infer() against a bare Session::Run",
      absl::StrFormat(
          "One Add over 1,000 floats, %d calls of each, interleaved in blocks of 100 on one pinned "
          "core. The horizontal gap between the curves is the engine's cost per call.",
          runs),
      "latency per call, us (log scale)",
      {{"Session::Run (bare)", bare_us}, {"Engine::Infer()", engine_us}},
      /*log_x=*/true));
  return page;
}

absl::StatusOr<OverheadReport> RunOverhead(int runs, const std::string& scratch_dir) {
  const std::string path = scratch_dir + "/add_1000.onnx";
  LOOM_RETURN_IF_ERROR(WriteAddModel(path, 1000));
  const std::vector<int> cpu = {UsableCpus().front()};
  SessionOptions bare_options;
  bare_options.intra_op_threads = 1;
  bare_options.allow_spinning = false;
  LOOM_ASSIGN_OR_RETURN(auto bare, CreateSession(path, bare_options));
  LOOM_ASSIGN_OR_RETURN(auto engine,
                        Engine::Create({{.name = "add", .path = path}}, EngineOptions{.cores = 1}));
  Tensor x = Tensor::Allocate(DType::kFloat32, {1, 1000});
  const NamedTensors inputs = {{"x", x}};
  std::vector<double> bare_us, engine_us;
  absl::Status status;
  constexpr int kBlock = 100;
  for (int done = 0; done < runs && status.ok(); done += kBlock) {
    // The bare runs happen on the core the engine's worker owns, as the worker's would.
    std::thread pinned([&] {
      status = PinCurrentThread(cpu);
      for (int i = 0; i < kBlock && status.ok(); ++i) {
        const auto start = Clock::now();
        status = bare->Run(inputs).status();
        bare_us.push_back(MillisecondsSince(start) * 1000);
      }
    });
    pinned.join();
    for (int i = 0; i < kBlock && status.ok(); ++i) {
      const auto start = Clock::now();
      status = engine->Infer("add", inputs).status();
      engine_us.push_back(MillisecondsSince(start) * 1000);
    }
  }
  LOOM_RETURN_IF_ERROR(status);
  OverheadReport report;
  report.runs = static_cast<int>(bare_us.size());
  report.bare_p50_us = Percentile(bare_us, 50);
  report.bare_p99_us = Percentile(bare_us, 99);
  report.engine_p50_us = Percentile(engine_us, 50);
  report.engine_p99_us = Percentile(engine_us, 99);
  report.bare_us = std::move(bare_us);
  report.engine_us = std::move(engine_us);
  return report;
}

}  // namespace loom::bench
