// The planner's arithmetic on given costs (the engine tests cover measured ones).
#include "sched/core_planner.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

namespace loom::sched {
namespace {

// Cost table: model -> threads -> ms.
CostFn Costs(std::map<std::string, std::map<int, double>> table, int* calls = nullptr) {
  return [table, calls](const std::string& model, int threads,
                        const std::vector<int>& cpus) -> absl::StatusOr<double> {
    if (calls) ++*calls;
    EXPECT_EQ(static_cast<int>(cpus.size()), threads);
    return table.at(model).at(threads);
  };
}

void ExpectDisjointAndWithinBudget(const EnginePlan& plan, const std::vector<int>& cpus) {
  std::set<int> used;
  int threads = 0;
  for (const WorkerPlan& w : plan.workers) {
    EXPECT_EQ(static_cast<int>(w.cpus.size()), w.threads);
    threads += w.threads;
    for (int c : w.cpus) {
      EXPECT_TRUE(used.insert(c).second) << "cpu " << c << " given twice";
      EXPECT_NE(std::find(cpus.begin(), cpus.end(), c), cpus.end()) << "cpu " << c << " not usable";
    }
  }
  EXPECT_LE(threads, static_cast<int>(cpus.size()));
}

TEST(CorePlanner, LightModelGetsOneWorkerPerCore) {
  // Scales badly: 1 thread 4 ms, 4 threads 3 ms -> 4 workers x 1 thread.
  const std::vector<int> cpus = {0, 1, 2, 3};
  auto plan = PlanCores(cpus, PlanHint::kThroughput, {{"face", {}, {}, 1.0}}, std::nullopt,
                        Costs({{"face", {{1, 4.0}, {2, 3.5}, {4, 3.0}}}}));
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->workers.size(), 4u);
  EXPECT_EQ(plan->workers[0].threads, 1);
  EXPECT_FALSE(plan->workers[0].allow_spinning);
  ExpectDisjointAndWithinBudget(*plan, cpus);
  EXPECT_NE(plan->Describe().find("4x1: 1000.0"), std::string::npos) << plan->Describe();
}

TEST(CorePlanner, ScalingModelGetsOneWideWorkerOnANearTie) {
  // Scales perfectly: 1 thread 20 ms, 2 threads 10 ms -> same throughput; the wider wins.
  const std::vector<int> cpus = {0, 1};
  auto plan = PlanCores(cpus, PlanHint::kThroughput, {{"lines", {}, {}, 1.0}}, std::nullopt,
                        Costs({{"lines", {{1, 20.0}, {2, 10.0}}}}));
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->workers.size(), 1u);
  EXPECT_EQ(plan->workers[0].threads, 2);
  EXPECT_TRUE(plan->workers[0].allow_spinning) << "one model on its own cores may spin";
  ExpectDisjointAndWithinBudget(*plan, cpus);
}

TEST(CorePlanner, MixIsWeighted) {
  // a scales, b does not. Equal weights: 2x1 gives 2 / (10 + 2) * 1000 = 166.7/s,
  // 1x2 gives 1 / (5 + 2) * 1000 = 142.9/s -> 2x1. With weight(a) = 10: 1x2 wins.
  const std::vector<int> cpus = {0, 1};
  auto costs = Costs({{"a", {{1, 10.0}, {2, 5.0}}}, {"b", {{1, 2.0}, {2, 2.0}}}});
  auto equal = PlanCores(cpus, PlanHint::kThroughput, {{"a", {}, {}, 1.0}, {"b", {}, {}, 1.0}},
                         std::nullopt, costs);
  ASSERT_TRUE(equal.ok());
  EXPECT_EQ(equal->workers.size(), 2u);
  EXPECT_EQ(equal->workers[0].models, (std::vector<std::string>{"a", "b"}));
  auto weighted = PlanCores(cpus, PlanHint::kThroughput, {{"a", {}, {}, 10.0}, {"b", {}, {}, 1.0}},
                            std::nullopt, costs);
  ASSERT_TRUE(weighted.ok());
  EXPECT_EQ(weighted->workers.size(), 1u);
  EXPECT_FALSE(weighted->workers[0].allow_spinning) << "two models share the worker's cores";
}

TEST(CorePlanner, LatencyHintUsesOneWorkerAndMeasuresNothing) {
  int calls = 0;
  const std::vector<int> cpus = {0, 1, 2};
  auto plan =
      PlanCores(cpus, PlanHint::kLatency, {{"a", {}, {}, 1.0}}, std::nullopt, Costs({}, &calls));
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->workers.size(), 1u);
  EXPECT_EQ(plan->workers[0].threads, 3);
  EXPECT_EQ(calls, 0);
}

TEST(CorePlanner, DedicatedInstancesComeFirstAndSharedGetTheRest) {
  const std::vector<int> cpus = {0, 1, 2, 3, 4};
  auto plan = PlanCores(cpus, PlanHint::kLatency,
                        {{"det", 2, 1, 1.0}, {"rec", {}, {}, 1.0}, {"cls", 1, 2, 1.0}},
                        std::nullopt, Costs({}));
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->workers.size(), 4u);
  EXPECT_EQ(plan->workers[0].models, (std::vector<std::string>{"det"}));
  EXPECT_EQ(plan->workers[2].models, (std::vector<std::string>{"cls"}));
  EXPECT_EQ(plan->workers[2].cpus, (std::vector<int>{2, 3}));
  EXPECT_EQ(plan->workers[3].models, (std::vector<std::string>{"rec"}));
  EXPECT_EQ(plan->workers[3].cpus, (std::vector<int>{4}));
  ExpectDisjointAndWithinBudget(*plan, cpus);
}

TEST(CorePlanner, RefusesToOversubscribe) {
  auto plan = PlanCores({0, 1}, PlanHint::kThroughput, {{"a", 2, 2, 1.0}}, std::nullopt, Costs({}));
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(
      plan.status().message(),
      "the plan needs 4 cores for dedicated instances ('a' 2x2), but only 2 are usable (0-1): "
      "lower instances or threads");
  auto no_room = PlanCores({0, 1}, PlanHint::kThroughput, {{"a", 2, {}, 1.0}, {"b", {}, {}, 1.0}},
                           std::nullopt, Costs({}));
  ASSERT_FALSE(no_room.ok());
  EXPECT_NE(no_room.status().message().find("plus at least 1 for the shared models"),
            std::string::npos);
}

TEST(CorePlanner, UnevenCoresGoToTheFirstWorkers) {
  // 3 cores, T = 2 candidate -> 1 worker of 2 + leftover given to it; T = 1 -> 3 workers.
  auto plan = PlanCores({0, 1, 2}, PlanHint::kThroughput, {{"a", {}, {}, 1.0}}, false,
                        Costs({{"a", {{1, 9.0}, {2, 4.0}, {3, 2.0}}}}));
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->workers.size(), 1u);  // 3 threads: 500/s beats 3x1 (333/s) and 1x2 (250/s)
  EXPECT_EQ(plan->workers[0].threads, 3);
  EXPECT_FALSE(plan->workers[0].allow_spinning) << "explicitly off";
}

}  // namespace
}  // namespace loom::sched

namespace loom::sched {
namespace {

TEST(CorePlanner, FixedSharedLayoutIsUsedAsGivenAndChecked) {
  int calls = 0;
  auto plan = PlanCores(
      {0, 1, 2, 3}, PlanHint::kThroughput, {{"a", {}, {}, 1.0}}, true,
      [&](const std::string&, int, const std::vector<int>&) -> absl::StatusOr<double> {
        ++calls;
        return 1.0;
      },
      FixedLayout{1, 2});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(calls, 0) << "a fixed layout measures nothing";
  ASSERT_EQ(plan->workers.size(), 1u);
  EXPECT_EQ(plan->workers[0].cpus, (std::vector<int>{0, 1}));
  EXPECT_TRUE(plan->workers[0].allow_spinning);
  auto too_big = PlanCores({0, 1}, PlanHint::kThroughput, {{"a", {}, {}, 1.0}}, std::nullopt,
                           nullptr, FixedLayout{2, 2});
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.status().message(),
            "shared layout 2x2 needs 4 cores, but 2 remain for shared models (0-1)");
}

}  // namespace
}  // namespace loom::sched
