#include "bench/ideal.h"

#include <functional>
#include <latch>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/cpu_set.h"
#include "core/guard.h"
#include "core/stats.h"

namespace loom::bench {
namespace {

// Runs fn(i) on a thread pinned to cpus[i] for each i < n, all at once (they start together), and
// returns the first error. Nothing leaves a thread: an exception becomes that core's error.
absl::Status OnEachCore(const std::vector<int>& cpus, size_t n,
                        const std::function<absl::Status(size_t)>& fn) {
  std::vector<absl::Status> status(n);
  std::latch start(static_cast<std::ptrdiff_t>(n));
  {
    std::vector<std::jthread> threads;  // joined at the end of this block
    threads.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      threads.emplace_back([&, i] {
        status[i] = PinCurrentThread({cpus[i]});
        start.arrive_and_wait();
        if (!status[i].ok()) return;
        status[i] = CatchAll(absl::StrCat("cpu ", cpus[i], ": "), [&] { return fn(i); });
      });
    }
  }
  for (const absl::Status& s : status) LOOM_RETURN_IF_ERROR(s);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<IdealProbe>> IdealProbe::Create(const Workload& w,
                                                               std::vector<int> cpus) {
  if (cpus.empty()) return absl::InvalidArgumentError("the ideal needs at least one core");
  std::unique_ptr<IdealProbe> probe(new IdealProbe(w, std::move(cpus)));
  probe->sessions_.resize(probe->cpus_.size());
  SessionOptions options;
  options.intra_op_threads = 1;
  options.allow_spinning = false;
  LOOM_RETURN_IF_ERROR(OnEachCore(probe->cpus_, probe->cpus_.size(), [&](size_t i) {
    for (size_t m = 0; m < w.spec.models.size(); ++m) {
      LOOM_ASSIGN_OR_RETURN(auto session, CreateSession(w.spec.models[m].path, options));
      LOOM_RETURN_IF_ERROR(session->Run(w.inputs[m][0]).status());  // warm-up
      probe->sessions_[i].push_back(std::move(session));
    }
    return absl::OkStatus();
  }));
  return probe;
}

absl::StatusOr<double> IdealProbe::CostMs(int model, size_t cores) {
  const auto& items = w_.inputs[static_cast<size_t>(model)];
  std::vector<double> ms(cores, 0);
  LOOM_RETURN_IF_ERROR(OnEachCore(cpus_, cores, [&](size_t i) -> absl::Status {
    Session& session = *sessions_[i][static_cast<size_t>(model)];
    // One untimed run first (the caches are the last strategy's), then each item timed; the
    // median, so that a moment another process took the core does not count as the model's cost.
    LOOM_RETURN_IF_ERROR(session.Run(items[0]).status());
    std::vector<double> runs;
    runs.reserve(items.size());
    for (const NamedTensors& inputs : items) {
      const auto start = Clock::now();
      LOOM_RETURN_IF_ERROR(session.Run(inputs).status());
      runs.push_back(MillisecondsSince(start));
    }
    ms[i] = Median(std::move(runs));
    return absl::OkStatus();
  }));
  double sum = 0;
  for (double v : ms) sum += v;
  return sum / static_cast<double>(cores);
}

absl::StatusOr<SingleThreadCosts> IdealProbe::Measure() {
  SingleThreadCosts costs;
  for (size_t m = 0; m < w_.spec.models.size(); ++m) {
    LOOM_ASSIGN_OR_RETURN(double alone, CostMs(static_cast<int>(m), 1));
    LOOM_ASSIGN_OR_RETURN(double busy, CostMs(static_cast<int>(m), cpus_.size()));
    costs.alone_ms.push_back(alone);
    costs.busy_ms.push_back(busy);
  }
  return costs;
}

double IdealRate(int cores, double ms_per_inference) {
  return ms_per_inference > 0 ? cores * 1000.0 / ms_per_inference : 0;
}

double MeanStreamMs(const Workload& w, const std::vector<double>& ms) {
  if (w.streams.empty()) return 0;
  double sum = 0;
  for (const Stream& s : w.streams) sum += ms[static_cast<size_t>(s.model)];
  return sum / static_cast<double>(w.streams.size());
}

}  // namespace loom::bench
