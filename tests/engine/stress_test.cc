// Many submitters, two models, random deadlines, blocking and non-blocking submits, and real run
// failures (out-of-range Gather indices): every request is answered exactly once, the counters add
// up, and everything finishes in bounded time. Swept over worker layouts; run it under TSan too.
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

#include "loom/engine.h"
#include "runtime/synthetic_models.h"
#include "tests/test_util.h"

namespace loom {
namespace {

using std::chrono::microseconds;
using Clock = std::chrono::steady_clock;

struct Layout {
  int cores;
  PlanHint hint;
};

class Stress : public ::testing::TestWithParam<Layout> {};

TEST_P(Stress, EveryRequestIsAnsweredExactlyOnceAndCountersAddUp) {
  testing::ScratchDir dir;
  ASSERT_TRUE(WriteAddModel(dir.Path("add.onnx"), 16).ok());
  ASSERT_TRUE(WriteGatherModel(dir.Path("gather.onnx"), 10).ok());
  ModelConfig add{.name = "add", .path = dir.Path("add.onnx")};
  add.queue_capacity = 64;
  add.max_queue_delay_us = 200;
  // Fixed, not measured: an auto size of 1 or 2 (a slow sanitizer build) would refuse the 3-row
  // requests below as invalid, which this test does not mean to count.
  add.max_batch_size = 8;
  ModelConfig gather{.name = "gather", .path = dir.Path("gather.onnx")};
  gather.queue_capacity = 64;
  gather.max_batch_size = 4;
  EngineOptions options{.cores = GetParam().cores, .hint = GetParam().hint, .measure_runs = 1};
  auto engine = Engine::Create({add, gather}, options);
  ASSERT_TRUE(engine.ok()) << engine.status();

  constexpr int kThreads = 8, kPerThread = 2000, kTotal = kThreads * kPerThread;
  std::vector<std::atomic<int>> answers(kTotal);
  std::atomic<int> wrong_values{0}, answered{0}, run_failures{0};
  // Client-side tallies per model: [model][outcome]
  std::atomic<int64_t> ok[2] = {0, 0}, failed[2] = {0, 0}, refused[2] = {0, 0};

  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(1000 + t);
      for (int i = 0; i < kPerThread; ++i) {
        const int id = t * kPerThread + i;
        const int model = static_cast<int>(rng() % 2);
        SubmitOptions so;
        const int deadline_kind = static_cast<int>(rng() % 10);
        if (deadline_kind == 0) so.deadline = Clock::now() - microseconds(1);  // already past
        if (deadline_kind == 1) so.deadline = Clock::now() + microseconds(rng() % 2000);
        so.block_when_full = rng() % 2 == 0;
        NamedTensors inputs;
        float expected = 0;
        if (model == 0) {
          Tensor x = Tensor::Allocate(DType::kFloat32, {1 + static_cast<int64_t>(rng() % 3), 16});
          expected = static_cast<float>(id % 1000);
          for (int64_t k = 0; k < x.element_count(); ++k) x.data_as<float>()[k] = expected;
          inputs.push_back({"x", x});
        } else {
          Tensor index = Tensor::Allocate(DType::kInt64, {1, 1});
          // One in 20 is out of range: its whole batch fails in ONNX Runtime.
          index.data_as<int64_t>()[0] = rng() % 20 == 0 ? 1000 : static_cast<int64_t>(rng() % 10);
          expected = 10.0f * static_cast<float>(index.data_as<int64_t>()[0]);
          inputs.push_back({"index", index});
        }
        (*engine)->Submit(
            model == 0 ? "add" : "gather", std::move(inputs), so,
            [&, id, model, expected](absl::StatusOr<InferResult> r) {
              answers[id].fetch_add(1);
              if (r.ok()) {
                ++ok[model];
                const float got = r->outputs[0].tensor.data_as<float>()[0];
                if (got != (model == 0 ? expected + 1 : expected)) ++wrong_values;
              } else if (r.status().code() == absl::StatusCode::kResourceExhausted ||
                         (r.status().code() == absl::StatusCode::kDeadlineExceeded &&
                          r.status().message().find("queue stayed full") != std::string::npos)) {
                ++refused[model];
              } else {
                ++failed[model];
                // A run failed (not a deadline): only an out-of-range index makes one.
                if (r.status().code() != absl::StatusCode::kDeadlineExceeded) ++run_failures;
              }
              ++answered;
            });
      }
    });
  }
  for (auto& t : threads) t.join();
  // Bounded time: everything answered well within a minute even on a loaded 2-core machine.
  const auto limit = Clock::now() + std::chrono::seconds(120);
  while (answered.load() < kTotal && Clock::now() < limit) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(answered.load(), kTotal) << "requests left unanswered: the engine hung";
  for (int id = 0; id < kTotal; ++id) ASSERT_EQ(answers[id].load(), 1) << "request " << id;
  EXPECT_EQ(wrong_values.load(), 0);
  EXPECT_GT(run_failures.load(), 0) << "the injected bad indices failed their runs";
  EXPECT_EQ(failed[0].load() + failed[1].load() - run_failures.load(), [&] {
    int64_t n = 0;
    for (const char* m : {"add", "gather"}) n += (*engine)->Stats(m)->deadline_exceeded;
    return n;
  }()) << "every other failure is a deadline that passed in the queue";
  (*engine)->Shutdown();
  for (int m = 0; m < 2; ++m) {
    auto s = (*engine)->Stats(m == 0 ? "add" : "gather");
    ASSERT_TRUE(s.ok());
    SCOPED_TRACE(m);
    EXPECT_EQ(s->successes, ok[m].load());
    EXPECT_EQ(s->failures, failed[m].load());
    EXPECT_EQ(s->rejected, refused[m].load());
    EXPECT_EQ(s->requests, s->successes + s->failures);
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, Stress,
                         ::testing::Values(Layout{1, PlanHint::kThroughput},
                                           Layout{0, PlanHint::kThroughput},
                                           Layout{0, PlanHint::kLatency}),
                         [](const auto& info) {
                           return std::string(info.param.cores == 1 ? "OneCore" : "AllCores") +
                                  PlanHintName(info.param.hint);
                         });

}  // namespace
}  // namespace loom
