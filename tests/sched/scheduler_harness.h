// The scheduler tests' harness: fake sessions whose cost is fake time, a FakeClock that moves
// only when a test says so, and a scheduler of single-core workers built on them. Every outcome
// in these tests is decided by the order of events a test creates, never by how long something
// took: a test waits on futures (which the scheduler must resolve) or for the worker to settle
// (Harness::Settle), and asserts on what cannot have happened yet (a batch waiting for time that
// has not passed).
#ifndef LOOM_TESTS_SCHED_SCHEDULER_HARNESS_H_
#define LOOM_TESTS_SCHED_SCHEDULER_HARNESS_H_

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/clock.h"
#include "sched/scheduler.h"

namespace loom::sched {

using std::chrono::microseconds;
using std::chrono::milliseconds;

inline ModelInfo AddInfo() {
  ModelInfo info;
  info.name = "fake";
  TensorInfo x{"x", DType::kFloat32, {Dim{-1, "batch"}, Dim{-1, "width"}}};
  TensorInfo y{"y", DType::kFloat32, {Dim{-1, "batch"}, Dim{-1, "width"}}};
  info.inputs = {x};
  info.outputs = {y};
  info.dynamic_batch = true;
  return info;
}

// y = x + 1. Each run advances the fake clock by `cost` (its "compute time"), records the rows,
// and can block on a gate or throw when told to.
class FakeSession final : public Session {
 public:
  FakeSession(FakeClock* clock, microseconds cost, std::string tag = "narrow")
      : info_(AddInfo()), clock_(clock), cost_(cost), tag_(std::move(tag)) {}

  const ModelInfo& info() const override { return info_; }
  Backend backend() const override { return Backend::kOnnxRuntime; }

  absl::StatusOr<NamedTensors> Run(const NamedTensors& inputs) override {
    std::optional<std::shared_future<void>> gate;  // read under the lock: Unblock() resets it
    microseconds cold{0};
    {
      std::lock_guard<std::mutex> lock(mu_);
      runs_.push_back(inputs[0].tensor.dim(0));
      if (shapes_seen_.insert(inputs[0].tensor.element_count()).second) cold = first_run_extra_;
      if (entered_) {
        entered_->set_value();
        entered_.reset();
      }
      gate = gate_;
    }
    if (gate) gate->wait();
    const float first = inputs[0].tensor.data_as<float>()[0];
    if (first == kThrow) throw std::runtime_error("backend exploded");
    if (first == kFail) return absl::InternalError("model 'fake': run failed on purpose");
    if (const microseconds cost = cost_.load(); cost.count() > 0) {
      clock_->Advance(
          cold + (per_element_ ? fixed_.load() + cost * inputs[0].tensor.element_count() : cost));
    }
    Tensor y = inputs[0].tensor.Clone();
    for (int64_t i = 0; i < y.element_count(); ++i) y.data_as<float>()[i] += 1;
    return NamedTensors{{"y", y}};
  }

  std::vector<int64_t> runs() const {
    std::lock_guard<std::mutex> lock(mu_);
    return runs_;
  }
  // The next run signals `entered` and then waits for the gate to open.
  std::future<void> BlockNextRun(std::shared_future<void> gate) {
    std::lock_guard<std::mutex> lock(mu_);
    entered_.emplace();
    gate_ = std::move(gate);
    return entered_->get_future();
  }
  void Unblock() {
    std::lock_guard<std::mutex> lock(mu_);
    gate_.reset();
  }
  void set_cost(microseconds cost) { cost_ = cost; }
  // From now on a run costs `fixed` plus `cost` per input element (a model with dynamic dims).
  void set_cost_per_element(microseconds cost, microseconds fixed = microseconds(0)) {
    per_element_ = true;
    fixed_ = fixed;
    cost_ = cost;
  }
  // From now on the first run at each input size costs `extra` more (a runtime planning a shape).
  void set_first_run_extra(microseconds extra) {
    std::lock_guard<std::mutex> lock(mu_);
    first_run_extra_ = extra;
  }
  const std::string& tag() const { return tag_; }

  static constexpr float kThrow = -1000, kFail = -2000;

 private:
  ModelInfo info_;
  FakeClock* clock_;
  std::atomic<microseconds> cost_;
  std::atomic<bool> per_element_{false};
  std::atomic<microseconds> fixed_{microseconds(0)};
  std::string tag_;
  mutable std::mutex mu_;
  std::vector<int64_t> runs_;
  std::set<int64_t> shapes_seen_;
  microseconds first_run_extra_{0};
  std::optional<std::promise<void>> entered_;
  std::optional<std::shared_future<void>> gate_;
};

inline Tensor Rows(int64_t rows, int64_t width, float value) {
  Tensor t = Tensor::Allocate(DType::kFloat32, {rows, width});
  for (int64_t i = 0; i < rows * width; ++i) t.data_as<float>()[i] = value;
  return t;
}

using Answer = std::future<absl::StatusOr<InferResult>>;

// A scheduler of `workers` single-core workers (one wide group if `group`), a FakeClock, and the
// helpers the tests share.
struct Harness {
  explicit Harness(int workers = 1, bool group = false, SchedulerOptions options = {}) {
    std::vector<WorkerConfig> configs;
    std::vector<GroupConfig> groups;
    GroupConfig g;
    for (int w = 0; w < workers; ++w) {
      configs.push_back({{w}, group ? 0 : -1});
      g.workers.push_back(w);
    }
    if (group) groups.push_back(g);
    options.clock = &clock;
    options.pin_workers = false;
    scheduler = std::make_shared<Scheduler>(std::move(configs), std::move(groups), options);
  }

  // A model served by every worker with fake narrow sessions (and a wide one per group).
  int Model(const std::string& name, BatchingConfig batching, int capacity = 1024,
            microseconds narrow_cost = microseconds(0), microseconds wide_cost = microseconds(0),
            bool wide = false, int64_t measured_elements = 0) {
    ModelSpec spec;
    spec.measured_elements = measured_elements;
    spec.name = name;
    spec.batching = batching;
    spec.capacity = capacity;
    for (size_t w = 0; w < scheduler->Workers().size(); ++w) {
      auto s = std::make_shared<FakeSession>(&clock, narrow_cost, "narrow");
      narrow.push_back(s);
      spec.narrow.push_back(s);
    }
    if (wide) {
      wide_session = std::make_shared<FakeSession>(&clock, wide_cost, "wide");
      spec.wide.push_back(wide_session);
      spec.narrow_ms = static_cast<double>(narrow_cost.count()) / 1000;
      spec.wide_ms = static_cast<double>(wide_cost.count()) / 1000;
    }
    return scheduler->AddModel(std::move(spec));
  }

  // Runs one row of `width` inline on the calling thread (TryRunInline: every worker idle, so the
  // request is alone) and returns the intra-op threads it ran with; 0, failing the test, if it
  // did not run.
  int RunInline(int model, int64_t width) {
    Request r;
    r.inputs = {{"x", Rows(1, width, 1)}};
    r.rows = 1;
    r.batch_key = BatchKey(r.inputs);
    r.deadline = TimePoint::max();
    auto answer = scheduler->TryRunInline(model, r);
    EXPECT_TRUE(answer.has_value() && answer->ok());
    return answer.has_value() && answer->ok() ? (*answer)->threads : 0;
  }

  // Enqueues rows of `width` filled with `value`; the answer arrives in the future.
  Answer Submit(int model, int64_t rows, int64_t width, float value = 1,
                TimePoint deadline = TimePoint::max(), bool block = false,
                std::shared_ptr<const std::atomic<bool>> cancelled = nullptr,
                absl::Status* refused = nullptr) {
    auto promise = std::make_shared<std::promise<absl::StatusOr<InferResult>>>();
    Answer answer = promise->get_future();
    auto request = std::make_unique<Request>();
    request->inputs = {{"x", Rows(rows, width, value)}};
    request->rows = rows;
    request->batch_key = BatchKey(request->inputs);
    request->deadline = deadline;
    request->cancelled = std::move(cancelled);
    request->done = [promise](absl::StatusOr<InferResult> r) { promise->set_value(std::move(r)); };
    absl::Status s = scheduler->Enqueue(model, request, block);
    if (!s.ok()) {
      if (refused) *refused = s;
      promise->set_value(s);
    }
    return answer;
  }

  // Returns once the scheduler's one worker has looked at the state as it is now and gone back
  // to sleep: what it has not done by then (run a batch, answer a request), it will not do until
  // something changes (time, a request, a release). Wakes it to make sure it looks. For harnesses
  // of one worker with no other thread waiting on the clock (a blocked submitter, say).
  void Settle() {
    const int64_t before = clock.sleeps();
    clock.Advance(std::chrono::nanoseconds(0));  // wakes every waiter; time stands still
    clock.AwaitSleeps(before + 1);
  }

  int64_t TotalRuns() const {
    int64_t n = 0;
    for (const auto& s : narrow) n += static_cast<int64_t>(s->runs().size());
    if (wide_session) n += static_cast<int64_t>(wide_session->runs().size());
    return n;
  }

  FakeClock clock;
  std::shared_ptr<Scheduler> scheduler;
  std::vector<std::shared_ptr<FakeSession>> narrow;
  std::shared_ptr<FakeSession> wide_session;
};

// Whether `a` has its answer. Asserting that it has not is meaningful only once the scheduler has
// had its chance to answer (Harness::Settle).
inline bool Ready(Answer& a) {
  return a.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
}

inline BatchingConfig Batching(int max, microseconds delay, std::vector<int> preferred = {}) {
  return BatchingConfig{max, std::move(preferred), delay};
}

}  // namespace loom::sched

#endif  // LOOM_TESTS_SCHED_SCHEDULER_HARNESS_H_
