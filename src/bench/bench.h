// `loom bench`: a workload run under every strategy, repetitions interleaved across strategies
// (A B C A B C ...) so that the machine's drift hits all alike; medians; a table, Loom's plan and
// a verdict with the ratios, all from one run.
#ifndef LOOM_BENCH_BENCH_H_
#define LOOM_BENCH_BENCH_H_

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/strategies.h"
#include "bench/workload.h"

namespace loom::bench {

struct BenchOptions {
  int repetitions = 5;
  int warmup = 1;                 // untimed rounds of every strategy first
  int cores = 0;                  // 0: all usable
  bool sweep = false;             // add every static workers × threads × spinning layout
  std::vector<std::string> only;  // strategy names to run (empty: all that apply); loom always runs
  std::string self_exe;           // this binary, for the child-process strategies
  std::string scratch_dir;        // for the workload spec the children read
  bool trace = false;             // record Loom's runs (BenchReport::trace_json, the timelines)
  // Progress callback: (done, total, what).
  std::function<void(int, int, const std::string&)> progress;
};

// The names `BenchOptions::only` may hold: every naive strategy a copies or fanout workload can run
// ("batch" only where the model's batch dim is dynamic), and "loom".
const std::vector<std::string>& StrategyNames();

struct StrategySummary {
  std::string name;
  std::vector<double> throughputs;            // inferences/s, one per repetition
  double throughput = 0;                      // median
  double p50_ms = 0, p95_ms = 0, p99_ms = 0;  // medians over repetitions
  double cpu_percent = 0;                     // of the usable cores, median
  double peak_rss_mb = 0;                     // max over repetitions
  std::vector<double> latencies_ms;           // every repetition's, for distributions
};

struct BenchReport {
  WorkloadSpec spec;
  int usable_cores = 0;
  int repetitions = 0;
  int64_t inferences_per_run = 0;
  std::vector<StrategySummary> strategies;
  std::string plan;        // Loom's plan (last repetition)
  std::string trace_json;  // BenchOptions::trace: Loom's last repetition, Chrome trace-event JSON
  // The ideal (ideal.h): usable cores × the single-thread inferences/s of the average inference,
  // its cost measured alone on one core ("idle": the others idle) and with every core running its
  // own single-thread session at once ("busy": what the cores give when all compute); medians of
  // the rounds' passes, and each round's.
  double ideal_throughput = 0;
  double busy_ideal_throughput = 0;
  std::vector<double> ideal_throughputs, busy_ideal_throughputs;
  // Loom's fraction of each ideal: the median over rounds of that round's Loom run over that
  // round's ideal pass.
  double of_ideal = 0, of_busy_ideal = 0;
  std::string verdict;
  // The last repetition as threads over time: the naive in-process strategies (a span per
  // inference) and, with BenchOptions::trace, Loom (a span per run on its workers).
  std::map<std::string, Timeline> timelines;

  const StrategySummary* Find(const std::string& name) const;
  std::string Table() const;
  nlohmann::json ToJson() const;
  std::string Csv() const;
  HtmlPage Html() const;
};

absl::StatusOr<BenchReport> RunBench(const WorkloadSpec& spec, const BenchOptions& options);

// Engine overhead: a one-Add model over 1,000 floats, Infer() against a bare Session::Run, both on
// one pinned core, interleaved in blocks; p50s and their difference.
struct OverheadReport {
  int runs = 0;
  double bare_p50_us = 0, bare_p99_us = 0;
  double engine_p50_us = 0, engine_p99_us = 0;
  std::vector<double> bare_us, engine_us;  // every call, for distributions
  double overhead_p50_us() const { return engine_p50_us - bare_p50_us; }
  std::string Table() const;
  nlohmann::json ToJson() const;
  HtmlPage Html() const;
};
absl::StatusOr<OverheadReport> RunOverhead(int runs, const std::string& scratch_dir);

}  // namespace loom::bench

#endif  // LOOM_BENCH_BENCH_H_
