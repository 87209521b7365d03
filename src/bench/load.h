// `loom bench load` and `loom bench shift`: the engine under offered load, with the fixed latency
// plan, the fixed throughput plan and the adaptive engine side by side in one run.
//
// load: for each level — closed loop (C clients, each waiting for its answer before sending the
// next) and open loop (Poisson arrivals at a fraction of the measured capacity; latency counted
// from the scheduled arrival, so a slow server cannot hide its queue) — every plan runs the same
// requests for the same time, repetitions interleaved across plans; medians of throughput and
// p50/p99 latency. A request is one inference (copies) or one frame's fan-out to every model
// (fanout), answered when all of them are.
//
// shift: two models, closed-loop clients, all traffic on the first model then all on the second;
// completions per time bucket for a static plan made for the first mix, one made for the second,
// and the adaptive engine.
#ifndef LOOM_BENCH_LOAD_H_
#define LOOM_BENCH_LOAD_H_

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/html_report.h"
#include "bench/workload.h"

namespace loom::bench {

inline const std::vector<std::string>& LoadPlans() {
  static const auto* plans = new std::vector<std::string>{"latency", "throughput", "adaptive"};
  return *plans;
}

struct LoadOptions {
  std::vector<int> clients = {1, 2, 4, 8, 16};
  std::vector<double> rates = {0.1, 0.5, 0.9};  // open loop, fractions of the capacity
  double seconds = 2.0;                         // per level, plan and repetition
  int reps = 3;
  int cores = 0;
};

struct PlanOutcome {
  std::vector<double> throughputs;   // requests/s, per repetition
  double throughput = 0;             // median
  double p50_ms = 0, p99_ms = 0;     // medians over repetitions
  int64_t failed = 0;                // answered with an error (all repetitions)
  std::vector<double> latencies_ms;  // the last repetition's, for distributions
};

struct LoadLevel {
  std::string loop;    // "closed" or "open"
  double level = 0;    // clients, or the fraction of capacity
  double offered = 0;  // open loop: requests/s offered
  std::map<std::string, PlanOutcome> plans;
};

struct LoadReport {
  WorkloadSpec spec;
  int usable_cores = 0;
  int reps = 0;
  double seconds = 0;
  double capacity = 0;  // requests/s: the throughput plan's best closed-loop level
  // The ideal in requests/s (ideal.h): usable cores x the single-thread rate of a request, its
  // cost measured on one core while the others idle, and with every core busy at once (what the
  // cores give when all compute); medians of `reps` passes after the levels.
  double ideal = 0;
  double busy_ideal = 0;
  std::map<std::string, std::string> plan_text;  // each plan as it stood at the end
  std::vector<LoadLevel> levels;
  std::string verdict;

  std::string Table() const;
  nlohmann::json ToJson() const;
  HtmlPage Html() const;
};

absl::StatusOr<LoadReport> RunLoad(const WorkloadSpec& spec, const LoadOptions& options);

struct ShiftOptions {
  double seconds_per_phase = 3.0;
  int clients = 8;
  double bucket_s = 0.25;
  int reps = 3;
  int cores = 0;
};

struct ShiftReport {
  WorkloadSpec spec;  // fanout of exactly two models: first, then second
  int usable_cores = 0;
  int reps = 0;
  double seconds_per_phase = 0, bucket_s = 0;
  // Requests/s per bucket (median over repetitions), per engine: "static (first mix)",
  // "static (second mix)", "adaptive".
  std::map<std::string, std::vector<double>> series;
  // Throughput of each engine in the second phase from 1 s after the change to its end.
  std::map<std::string, double> after_change;
  std::string adaptive_plan;  // with its history
  std::string verdict;

  std::string Table() const;
  nlohmann::json ToJson() const;
  HtmlPage Html() const;
};

absl::StatusOr<ShiftReport> RunShift(const WorkloadSpec& spec, const ShiftOptions& options);

}  // namespace loom::bench

#endif  // LOOM_BENCH_LOAD_H_
