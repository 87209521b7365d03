// The ideal `loom bench` (copies, fanout, load) compares with: every usable core running
// single-thread inferences back to back, at the models' single-thread cost. That cost is measured
// twice, on the workload's own items with a single-thread session per model on each core:
//   alone: one core runs while the others idle (the cost a lone request sees);
//   busy:  every core runs its own session at once, as at the compute limit. On a machine whose
//          cores slow each other down (shared caches, memory bandwidth, SMT siblings, power) each
//          is slower, and this is what the cores can give.
// `loom pipeline bench` measures the same two with one-core pipelines (pipeline_bench.cc).
//
// Thread safety: one thread uses an IdealProbe at a time; Measure runs a pinned thread per core.
#ifndef LOOM_BENCH_IDEAL_H_
#define LOOM_BENCH_IDEAL_H_

#include <memory>
#include <vector>

#include "bench/workload.h"
#include "loom/session.h"
#include "loom/status.h"

namespace loom::bench {

// Milliseconds per inference of each model (by index into the workload's models).
struct SingleThreadCosts {
  std::vector<double> alone_ms;
  std::vector<double> busy_ms;
};

class IdealProbe {
 public:
  // Makes a single-thread session per model on each of `cpus` (made and warmed up on that core,
  // the cores in parallel). `w` must outlive the probe.
  static absl::StatusOr<std::unique_ptr<IdealProbe>> Create(const Workload& w,
                                                            std::vector<int> cpus);

  // One pass over the items per model (each item timed, the median): alone on the first core,
  // then on every core at once.
  absl::StatusOr<SingleThreadCosts> Measure();

 private:
  IdealProbe(const Workload& w, std::vector<int> cpus) : w_(w), cpus_(std::move(cpus)) {}
  // ms per inference of `model` on each of the first `cores` cores, all running at once (each
  // core's median over the items), averaged over the cores.
  absl::StatusOr<double> CostMs(int model, size_t cores);

  const Workload& w_;
  std::vector<int> cpus_;
  std::vector<std::vector<std::unique_ptr<Session>>> sessions_;  // [core][model]
};

// Inferences/s of `cores` cores each running inferences back to back at `ms_per_inference`
// (0 when that is unknown).
double IdealRate(int cores, double ms_per_inference);

// The mean over the workload's streams of each stream's model's cost in `ms` (by model): the
// cost of the average inference of a run.
double MeanStreamMs(const Workload& w, const std::vector<double>& ms);

}  // namespace loom::bench

#endif  // LOOM_BENCH_IDEAL_H_
