// Run-time changes of the engine: models added and removed while others serve, dedicated cores
// re-planned, and a stress run of all of it at once (run under TSan too). Outcomes are decided by
// the order of operations, never by timing; the busy-thread bound is read from the engine's own
// accounting.
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

#include "core/cpu_set.h"
#include "loom/engine.h"
#include "runtime/synthetic_models.h"
#include "tests/test_util.h"

namespace loom {
namespace {

using Clock = std::chrono::steady_clock;
using testing::ModelPath;
using testing::ScratchDir;

Tensor Rows(int64_t rows, int64_t width, float value) {
  Tensor t = Tensor::Allocate(DType::kFloat32, {rows, width});
  for (int64_t i = 0; i < rows * width; ++i) t.data_as<float>()[i] = value;
  return t;
}

bool HistoryMentions(const Engine& engine, const std::string& text) {
  for (const PlanEvent& e : engine.plan().history) {
    if (e.what.find(text) != std::string::npos) return true;
  }
  return false;
}

TEST(EngineReplan, ASharedModelComesAndGoesWhileAnotherServes) {
  ScratchDir dir;
  ASSERT_TRUE(WriteAddModel(dir.Path("add.onnx"), 4).ok());
  auto engine = Engine::Create({{.name = "face", .path = ModelPath(testing::kBlazeFaceFront)}},
                               EngineOptions{.measure_runs = 1});
  ASSERT_TRUE(engine.ok()) << engine.status();
  Engine& e = **engine;
  // Traffic for 'face' the whole time; every one of its requests must succeed.
  std::atomic<bool> stop{false};
  std::atomic<int> face_ok{0}, face_failed{0};
  std::thread traffic([&] {
    const Tensor input = Tensor::Allocate(DType::kFloat32, {1, 128, 128, 3});
    while (!stop) {
      std::vector<std::future<absl::StatusOr<InferResult>>> batch;
      for (int i = 0; i < 4; ++i) batch.push_back(e.Submit("face", {{"input:0", input}}));
      for (auto& f : batch) (f.get().ok() ? face_ok : face_failed)++;
    }
  });
  // Each change is made once 'face' is seen answering (its answers grow just before it).
  const auto face_answers_grow = [&] {
    const int seen = face_ok + face_failed;
    const auto until = std::chrono::steady_clock::now() + std::chrono::minutes(1);
    while (face_ok + face_failed < seen + 4 && std::chrono::steady_clock::now() < until) {
      std::this_thread::yield();
    }
    EXPECT_GE(face_ok + face_failed, seen + 4) << "'face' stopped answering";
  };
  face_answers_grow();
  ASSERT_TRUE(e.AddModel({.name = "add", .path = dir.Path("add.onnx")}).ok());
  EXPECT_EQ(e.AddModel({.name = "add", .path = dir.Path("add.onnx")}).code(),
            absl::StatusCode::kAlreadyExists);
  auto r = e.Infer("add", {{"x", Rows(1, 4, 2)}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->outputs[0].tensor.data_as<float>()[0], 3.0f);
  EXPECT_EQ(e.ModelNames(), (std::vector<std::string>{"face", "add"}));
  EXPECT_TRUE(HistoryMentions(e, "model 'add' added (shared"));
  // Accepted requests of a removed model are run, not dropped; later ones are refused.
  std::vector<std::future<absl::StatusOr<InferResult>>> pending;
  for (int i = 0; i < 20; ++i) pending.push_back(e.Submit("add", {{"x", Rows(1, 4, i)}}));
  face_answers_grow();
  ASSERT_TRUE(e.RemoveModel("add").ok());
  for (auto& f : pending) EXPECT_TRUE(f.get().ok());
  EXPECT_EQ(e.Infer("add", {{"x", Rows(1, 4, 0)}}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(e.RemoveModel("add").code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(HistoryMentions(e, "model 'add' removed"));
  stop = true;
  traffic.join();
  EXPECT_GT(face_ok.load(), 0);
  EXPECT_EQ(face_failed.load(), 0);
  EXPECT_LE(e.MaxBusyThreads(), static_cast<int>(UsableCpus().size()));
}

TEST(EngineReplan, AnEngineWithNoModelTakesItsFirstAndLast) {
  // An engine made empty (a server whose repository failed to load) plans its cores at the
  // first AddModel, and can be emptied and filled again.
  ScratchDir dir;
  ASSERT_TRUE(WriteAddModel(dir.Path("add.onnx"), 4).ok());
  auto engine = Engine::Create({}, EngineOptions{.measure_runs = 1});
  ASSERT_TRUE(engine.ok()) << engine.status();
  Engine& e = **engine;
  for (int round = 0; round < 2; ++round) {
    ASSERT_TRUE(e.AddModel({.name = "add", .path = dir.Path("add.onnx")}).ok());
    auto r = e.Infer("add", {{"x", Rows(1, 4, 2)}});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->outputs[0].tensor.data_as<float>()[0], 3.0f);
    ASSERT_TRUE(e.RemoveModel("add").ok());
    EXPECT_TRUE(e.ModelNames().empty());
  }
}

TEST(EngineReplan, ADedicatedModelTakesCoresFromThePoolAndGivesThemBack) {
  if (UsableCpus().size() < 2) GTEST_SKIP() << "needs two cores: one dedicated, one shared";
  ScratchDir dir;
  ASSERT_TRUE(WriteAddModel(dir.Path("add.onnx"), 4).ok());
  auto engine = Engine::Create({{.name = "face", .path = ModelPath(testing::kBlazeFaceFront)}},
                               EngineOptions{.cores = 2, .measure_runs = 1});
  ASSERT_TRUE(engine.ok()) << engine.status();
  Engine& e = **engine;
  ModelConfig dedicated{.name = "add", .path = dir.Path("add.onnx")};
  dedicated.instances = 1;
  dedicated.threads = 1;
  ASSERT_TRUE(e.AddModel(dedicated).ok());
  EnginePlan plan = e.plan();
  ASSERT_EQ(plan.workers.size(), 2u) << plan.Describe();
  EXPECT_EQ(plan.workers[0].models, (std::vector<std::string>{"add"}));
  EXPECT_EQ(plan.workers[1].models, (std::vector<std::string>{"face"}));
  EXPECT_TRUE(e.Infer("add", {{"x", Rows(1, 4, 1)}}).ok());
  EXPECT_TRUE(
      e.Infer("face", {{"input:0", Tensor::Allocate(DType::kFloat32, {1, 128, 128, 3})}}).ok());
  // A second dedicated model would leave no core for the shared one.
  ModelConfig greedy = dedicated;
  greedy.name = "add2";
  EXPECT_EQ(e.AddModel(greedy).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(e.Infer("add2", {{"x", Rows(1, 4, 1)}}).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(e.RemoveModel("add").ok());
  plan = e.plan();
  int face_workers = 0;
  for (const WorkerPlan& w : plan.workers)
    face_workers += w.models == std::vector<std::string>{"face"};
  EXPECT_EQ(face_workers, static_cast<int>(plan.workers.size())) << plan.Describe();
  EXPECT_TRUE(
      e.Infer("face", {{"input:0", Tensor::Allocate(DType::kFloat32, {1, 128, 128, 3})}}).ok());
}

// Everything at once: submitters with random deadlines on two resident models, a third model
// added and removed over and over, a dedicated one re-planning the cores. Every request is
// answered exactly once, the engine's accounting never shows more busy threads than cores.
TEST(EngineReplan, StressAddRemoveAndSubmitAtOnce) {
  ScratchDir dir;
  ASSERT_TRUE(WriteAddModel(dir.Path("add.onnx"), 8).ok());
  ASSERT_TRUE(WriteGatherModel(dir.Path("gather.onnx"), 10).ok());
  ModelConfig a{.name = "a", .path = dir.Path("add.onnx")};
  a.queue_capacity = 64;
  ModelConfig g{.name = "g", .path = dir.Path("gather.onnx")};
  g.max_batch_size = 4;
  auto engine = Engine::Create({a, g}, EngineOptions{.measure_runs = 1});
  ASSERT_TRUE(engine.ok()) << engine.status();
  Engine& e = **engine;
  const int cores = static_cast<int>(UsableCpus().size());

  constexpr int kThreads = 8, kEach = 400;
  std::atomic<int> answered{0}, twice{0}, submitted{0};
  std::atomic<bool> stop_admin{false};
  std::thread admin([&] {
    int round = 0;
    while (!stop_admin) {
      ModelConfig c{.name = "c", .path = dir.Path("add.onnx")};
      if (round % 3 == 2 && cores >= 2) {  // now and then a dedicated one: the cores are re-planned
        c.instances = 1;
        c.threads = 1;
      }
      (void)e.AddModel(c);
      (void)e.RemoveModel("c");
      ++round;
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(100 + t);
      std::vector<std::shared_ptr<std::atomic<int>>> seen;
      for (int i = 0; i < kEach; ++i) {
        const int which = static_cast<int>(rng() % 3);
        SubmitOptions options;
        if (rng() % 4 == 0)
          options.deadline = Clock::now() + std::chrono::microseconds(rng() % 3000);
        options.block_when_full = rng() % 2 == 0;
        NamedTensors inputs;
        std::string model = which == 0 ? "a" : which == 1 ? "g" : "c";
        if (which == 1) {
          Tensor index = Tensor::Allocate(DType::kInt64, {1, 1});
          index.data_as<int64_t>()[0] = static_cast<int64_t>(rng() % 12);  // 10, 11: run failures
          inputs = {{"index", index}};
        } else {
          inputs = {{"x", Rows(1, 8, 1)}};
        }
        auto count = std::make_shared<std::atomic<int>>(0);
        seen.push_back(count);
        ++submitted;
        e.Submit(model, std::move(inputs), options, [&, count](absl::StatusOr<InferResult>) {
          if (count->fetch_add(1) > 0) ++twice;
          ++answered;
        });
      }
    });
  }
  for (auto& t : threads) t.join();
  stop_admin = true;
  admin.join();
  e.Shutdown();
  EXPECT_EQ(answered.load(), submitted.load());
  EXPECT_EQ(twice.load(), 0);
  EXPECT_LE(e.MaxBusyThreads(), cores);
  EXPECT_GT(e.MaxBusyThreads(), 0);
}

}  // namespace
}  // namespace loom
