// The engine on real models and on synthetic graphs whose answers are known exactly.
#include "loom/engine.h"

#include <dirent.h>
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include "core/cpu_set.h"
#include "engine/engine_impl.h"
#include "runtime/synthetic_models.h"
#include "tests/held_workers.h"
#include "tests/test_util.h"
#include "vision/blob.h"
#include "vision/model_inputs.h"

namespace loom {
namespace {

using std::chrono::milliseconds;
using testing::ModelPath;
using testing::ScratchDir;

std::string AddModel(const ScratchDir& dir, int64_t width) {
  const std::string path = dir.Path("add.onnx");
  EXPECT_TRUE(WriteAddModel(path, width).ok());
  return path;
}

std::string GatherModel(const ScratchDir& dir) {
  const std::string path = dir.Path("gather.onnx");
  EXPECT_TRUE(WriteGatherModel(path, 10).ok());
  return path;
}

Tensor RandomRows(int64_t rows, int64_t width, std::mt19937& rng) {
  Tensor t = Tensor::Allocate(DType::kFloat32, {rows, width});
  std::uniform_real_distribution<float> dist(-100, 100);
  for (int64_t i = 0; i < rows * width; ++i) t.data_as<float>()[i] = dist(rng);
  return t;
}

Tensor Index(int64_t value) {
  Tensor t = Tensor::Allocate(DType::kInt64, {1, 1});
  t.data_as<int64_t>()[0] = value;
  return t;
}

TEST(Engine, OutputsAreBitIdenticalToADirectSession) {
  auto image = vision::ReadImage(testing::DataPath("messi5.jpg"));
  ASSERT_TRUE(image.ok());
  for (const char* file : {testing::kBlazeFaceBack, testing::kMlsdTiny320, testing::kOcrDet}) {
    SCOPED_TRACE(file);
    ModelConfig config{.name = "m", .path = ModelPath(file)};
    EngineOptions options;
    options.cores = 1;  // one worker, one thread: the direct session below runs the same way
    auto engine = Engine::Create({config}, options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    SessionOptions direct_options;
    direct_options.intra_op_threads = 1;
    auto direct = CreateSession(ModelPath(file), direct_options);
    ASSERT_TRUE(direct.ok());
    vision::InputSpec spec;
    spec.image = *image;
    spec.size = {320, 224};
    auto inputs = vision::MakeInputs((*direct)->info(), spec);
    ASSERT_TRUE(inputs.ok());
    auto want = (*direct)->Run(*inputs);
    auto got = (*engine)->Infer("m", *inputs);
    ASSERT_TRUE(want.ok() && got.ok()) << got.status();
    ASSERT_EQ(got->outputs.size(), want->size());
    for (size_t i = 0; i < want->size(); ++i) {
      const Tensor& a = got->outputs[i].tensor;
      const Tensor& b = (*want)[i].tensor;
      ASSERT_EQ(a.Describe(), b.Describe());
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.byte_size()), 0) << got->outputs[i].name;
    }
  }
}

TEST(Engine, BatchingReturnsEachRequestExactlyItsOwnRows) {
  ScratchDir dir;
  ModelConfig config{.name = "add", .path = AddModel(dir, /*width=*/0)};  // [batch, width]
  config.max_batch_size = 16;
  auto engine = Engine::Create({config});
  ASSERT_TRUE(engine.ok()) << engine.status();
  // Four threads submit while the workers are held, so the queue holds all 200 requests when
  // the workers come back: they are batched by construction.
  constexpr int kThreads = 4, kPerThread = 50;
  std::vector<std::vector<std::pair<Tensor, std::future<absl::StatusOr<InferResult>>>>> pending(
      kThreads);
  {
    loom::testing::HeldWorkers workers(**engine);
    ASSERT_TRUE(workers.held());
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        std::mt19937 rng(t);
        for (int i = 0; i < kPerThread; ++i) {
          // Sizes 1..5 rows, and two widths that must never share a batch.
          Tensor x = RandomRows(1 + rng() % 5, rng() % 2 ? 3 : 7, rng);
          pending[t].emplace_back(x, (*engine)->Submit("add", {{"x", x}}));
        }
      });
    }
    for (auto& t : threads) t.join();
  }
  int wrong = 0;
  for (auto& of_thread : pending) {
    for (auto& [x, future] : of_thread) {
      auto result = future.get();
      if (!result.ok()) {
        ADD_FAILURE() << result.status();
        ++wrong;
        continue;
      }
      const Tensor& y = result->outputs[0].tensor;
      if (y.shape() != x.shape()) {
        ++wrong;
        continue;
      }
      for (int64_t i = 0; i < x.element_count(); ++i) {
        if (y.data_as<float>()[i] != x.data_as<float>()[i] + 1.0f) {
          ++wrong;
          break;
        }
      }
    }
  }
  EXPECT_EQ(wrong, 0);
  auto stats = (*engine)->Stats("add");
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->requests, kThreads * kPerThread);
  EXPECT_EQ(stats->successes, kThreads * kPerThread);
  EXPECT_LT(stats->batches, stats->requests) << "requests were batched";
  EXPECT_GT(stats->mean_batch_rows, 1.0);
}

TEST(Engine, AFailingRunFailsOnlyTheRequestsOfItsBatch) {
  ScratchDir dir;
  ModelConfig config{.name = "gather", .path = GatherModel(dir)};
  config.max_batch_size = 4;
  config.max_queue_delay_us = 200000;
  config.preferred_batch_sizes = {4};
  auto engine = Engine::Create({config}, EngineOptions{.cores = 1});
  ASSERT_TRUE(engine.ok()) << engine.status();
  // Two full batches of 4: the second holds an index out of range. The worker is held while
  // they are submitted, so both batches are full however long the submitting takes.
  std::vector<std::future<absl::StatusOr<InferResult>>> futures;
  {
    loom::testing::HeldWorkers workers(**engine);
    ASSERT_TRUE(workers.held());
    for (int64_t index : {1, 2, 3, 4, 5, 99, 6, 7}) {
      futures.push_back((*engine)->Submit("gather", {{"index", Index(index)}}));
    }
  }
  for (int i = 0; i < 4; ++i) {
    auto r = futures[i].get();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->outputs[0].tensor.data_as<float>()[0], 10.0f * (i + 1));
    EXPECT_EQ(r->batch_rows, 4);
  }
  for (int i = 4; i < 8; ++i) {
    auto r = futures[i].get();
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("model 'gather'"), std::string::npos) << r.status();
    EXPECT_NE(r.status().message().find("99"), std::string::npos) << r.status();
  }
  // The engine goes on.
  auto after = (*engine)->Infer("gather", {{"index", Index(9)}});
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->outputs[0].tensor.data_as<float>()[0], 90.0f);
  auto stats = (*engine)->Stats("gather");
  EXPECT_EQ(stats->failures, 4);
  EXPECT_EQ(stats->successes, 5);
}

TEST(Engine, FullQueueFailsAtOnceOrBlocksWhenAsked) {
  ScratchDir dir;
  ModelConfig config{.name = "add", .path = AddModel(dir, 4)};
  config.queue_capacity = 2;
  config.max_batch_size = 64;
  config.max_queue_delay_us = 60'000'000;  // requests wait for a batch that never fills
  auto engine = Engine::Create({config}, EngineOptions{.cores = 1});
  ASSERT_TRUE(engine.ok());
  std::mt19937 rng(1);
  auto a = (*engine)->Submit("add", {{"x", RandomRows(1, 4, rng)}});
  auto b = (*engine)->Submit("add", {{"x", RandomRows(1, 4, rng)}});
  auto full = (*engine)->Infer("add", {{"x", RandomRows(1, 4, rng)}});
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(full.status().message(), "model 'add' queue is full (capacity 2 requests)");
  // Blocking with a deadline: waits, then gives up with DEADLINE_EXCEEDED (not accepted).
  SubmitOptions blocking{.deadline = std::chrono::steady_clock::now() + milliseconds(50),
                         .block_when_full = true};
  auto blocked = (*engine)->Infer("add", {{"x", RandomRows(1, 4, rng)}}, blocking);
  EXPECT_EQ(blocked.status().code(), absl::StatusCode::kDeadlineExceeded) << blocked.status();
  EXPECT_EQ((*engine)->Stats("add")->rejected, 2);
  // Shutdown runs the two accepted requests.
  (*engine)->Shutdown();
  EXPECT_TRUE(a.get().ok());
  EXPECT_TRUE(b.get().ok());
}

TEST(Engine, ExpiredRequestIsAnsweredWithoutRunning) {
  ScratchDir dir;
  ModelConfig config{.name = "add", .path = AddModel(dir, 4)};
  config.max_batch_size = 64;
  config.max_queue_delay_us = 60'000'000;
  auto engine = Engine::Create({config}, EngineOptions{.cores = 1});
  ASSERT_TRUE(engine.ok());
  std::mt19937 rng(1);
  const auto start = std::chrono::steady_clock::now();
  auto r = (*engine)->Infer("add", {{"x", RandomRows(1, 4, rng)}},
                            SubmitOptions{.deadline = start + milliseconds(30)});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  // Answered at its deadline, from the queue: the batch delay (a minute) would have run it.
  EXPECT_NE(r.status().message().find("deadline passed while it waited in the queue"),
            std::string::npos)
      << r.status();
  auto past = (*engine)->Infer("add", {{"x", RandomRows(1, 4, rng)}},
                               SubmitOptions{.deadline = start - milliseconds(1)});
  EXPECT_EQ(past.status().code(), absl::StatusCode::kDeadlineExceeded);
  auto stats = (*engine)->Stats("add");
  EXPECT_EQ(stats->batches, 0) << "nothing ran";
  EXPECT_EQ(stats->failures, 2);
}

TEST(Engine, DefaultTimeoutAppliesWhenNoDeadlineIsGiven) {
  ScratchDir dir;
  ModelConfig config{.name = "add", .path = AddModel(dir, 4)};
  config.max_batch_size = 64;
  config.max_queue_delay_us = 60'000'000;
  config.default_timeout_us = 20'000;
  auto engine = Engine::Create({config}, EngineOptions{.cores = 1});
  ASSERT_TRUE(engine.ok());
  std::mt19937 rng(1);
  EXPECT_EQ((*engine)->Infer("add", {{"x", RandomRows(1, 4, rng)}}).status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST(Engine, ShutdownAnswersEveryAcceptedRequestThenRefuses) {
  ModelConfig config{.name = "face", .path = ModelPath(testing::kBlazeFaceFront)};
  auto engine = Engine::Create({config});
  ASSERT_TRUE(engine.ok());
  Tensor input = Tensor::Allocate(DType::kFloat32, {1, 128, 128, 3});
  std::vector<std::future<absl::StatusOr<InferResult>>> futures;
  for (int i = 0; i < 40; ++i) futures.push_back((*engine)->Submit("face", {{"input:0", input}}));
  (*engine)->Shutdown();
  for (auto& f : futures) EXPECT_TRUE(f.get().ok());
  auto late = (*engine)->Infer("face", {{"input:0", input}});
  EXPECT_EQ(late.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(late.status().message(), "engine is shut down: request for model 'face' not accepted");
  auto stats = (*engine)->Stats("face");
  EXPECT_EQ(stats->requests, 40);
  EXPECT_EQ(stats->successes, 40);
  EXPECT_EQ(stats->rejected, 1);
}

TEST(Engine, BadRequestsFailAtSubmitNamingTheCulprit) {
  ScratchDir dir;
  auto engine = Engine::Create({{.name = "face", .path = ModelPath(testing::kBlazeFaceFront)},
                                {.name = "add", .path = AddModel(dir, 4)}});
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto unknown = (*engine)->Infer("faces", {});
  EXPECT_EQ(unknown.status().message(), "no model 'faces' in the engine (models: 'face', 'add')");
  auto shape =
      (*engine)->Infer("face", {{"input:0", Tensor::Allocate(DType::kFloat32, {1, 3, 128, 128})}});
  EXPECT_EQ(shape.status().message(),
            "model 'face' input 'input:0': expected [1,128,128,3] "
            "f32, got [1,3,128,128] f32 (wrong shape)");
  EXPECT_EQ((*engine)->Stats("face")->rejected, 1);
}

TEST(Engine, CreateErrorsNameTheModel) {
  auto missing = Engine::Create({{.name = "x", .path = "/nonexistent.onnx"}});
  EXPECT_EQ(missing.status().message(), "model 'x': model file '/nonexistent.onnx' does not exist");
  ModelConfig fixed{.name = "face", .path = ModelPath(testing::kBlazeFaceFront)};
  fixed.max_batch_size = 4;
  auto batch = Engine::Create({fixed});
  EXPECT_EQ(batch.status().message(),
            "model 'face': max_batch_size 4 needs a dynamic dim 0, but input 'input:0' is "
            "[1,128,128,3] f32: use instances for parallelism, or max_batch_size: 1");
  auto twice = Engine::Create({{.name = "a", .path = ModelPath(testing::kBlazeFaceFront)},
                               {.name = "a", .path = ModelPath(testing::kBlazeFaceBack)}});
  EXPECT_EQ(twice.status().message(), "model name 'a' used twice");
  const int usable = static_cast<int>(UsableCpus().size());
  auto too_many = Engine::Create({{.name = "a", .path = ModelPath(testing::kBlazeFaceFront)}},
                                 EngineOptions{.cores = usable + 1});
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kInvalidArgument);
}

// Cpus_allowed_list of one thread of this process.
std::string ThreadAffinity(int tid) {
  std::ifstream status("/proc/self/task/" + std::to_string(tid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("Cpus_allowed_list:", 0) == 0)
      return line.substr(line.find_first_not_of(" \t", 18));
  }
  return "";
}

// Cpus_allowed_list of every thread of this process.
std::multiset<std::string> ThreadAffinities() {
  std::multiset<std::string> out;
  DIR* dir = opendir("/proc/self/task");
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') out.insert(ThreadAffinity(std::atoi(e->d_name)));
  }
  closedir(dir);
  return out;
}

// Holds under `taskset -c 0` too (CTest runs this suite that way as well).
TEST(EnginePlan, NeverUsesMoreThreadsThanUsableCoresAndPinsThem) {
  const std::vector<int> usable = UsableCpus();
  for (PlanHint hint : {PlanHint::kAdaptive, PlanHint::kThroughput, PlanHint::kLatency}) {
    SCOPED_TRACE(PlanHintName(hint));
    auto engine = Engine::Create({{.name = "face", .path = ModelPath(testing::kBlazeFaceFront)},
                                  {.name = "lines", .path = ModelPath(testing::kMlsdTiny320)}},
                                 EngineOptions{.hint = hint, .measure_runs = 1});
    ASSERT_TRUE(engine.ok()) << engine.status();
    const EnginePlan plan = (*engine)->plan();
    EXPECT_EQ(plan.usable_cores, static_cast<int>(usable.size()));
    int threads = 0;
    std::set<int> cpus;
    for (const WorkerPlan& w : plan.workers) {
      threads += w.threads;
      for (int c : w.cpus) EXPECT_TRUE(cpus.insert(c).second);
      EXPECT_FALSE(w.allow_spinning) << "two models share each worker";
    }
    EXPECT_LE(threads, static_cast<int>(usable.size()));
    // Each worker's own thread is pinned to exactly its cores (read from that thread's /proc
    // entry, not from any thread's); intra-op threads of narrow sessions to one core each.
    const std::vector<WorkerStats> workers = (*engine)->Workers();
    ASSERT_EQ(workers.size(), plan.workers.size());
    const auto affinities = ThreadAffinities();
    for (size_t i = 0; i < workers.size(); ++i) {
      ASSERT_GT(workers[i].thread_id, 0);
      EXPECT_EQ(ThreadAffinity(workers[i].thread_id), FormatCpuList(plan.workers[i].cpus));
      for (size_t c = 1; c < plan.workers[i].cpus.size(); ++c) {
        EXPECT_GE(affinities.count(std::to_string(plan.workers[i].cpus[c])), 1u);
      }
    }
    EXPECT_NE(plan.Describe().find("models: face, lines"), std::string::npos) << plan.Describe();
  }
}

TEST(EnginePlan, ExplicitInstancesBeyondTheCoresAreRefused) {
  const int usable = static_cast<int>(UsableCpus().size());
  ModelConfig config{.name = "face", .path = ModelPath(testing::kBlazeFaceFront)};
  config.instances = usable + 1;
  auto engine = Engine::Create({config});
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(engine.status().message().find("but only " + std::to_string(usable) + " are usable"),
            std::string::npos)
      << engine.status();
}

}  // namespace
}  // namespace loom

namespace loom {
namespace {

// Whether batching pays is measured at load (the measured speed itself belongs to `loom bench`):
// the rule, on given figures, and that the engine applies its choice.
TEST(EnginePlan, AutoBatchSizeIsEightWhereABatchCostsAtMostFourFifthsPerRow) {
  using engine_internal::MaxBatchSizeFor;
  EXPECT_EQ(MaxBatchSizeFor(/*ms_per_row_at_1=*/1.0, /*ms_per_row_at_probe=*/0.5), 8);
  EXPECT_EQ(MaxBatchSizeFor(1.0, 0.8), 8);
  EXPECT_EQ(MaxBatchSizeFor(1.0, 0.81), 1);
  EXPECT_EQ(MaxBatchSizeFor(1.0, 1.2), 1);
}

TEST(EnginePlan, AutoBatchSizeIsMeasuredForDynamicBatchModelsAndApplied) {
  testing::ScratchDir dir;
  ASSERT_TRUE(WriteAddModel(dir.Path("add.onnx"), 16).ok());
  auto engine = Engine::Create({{.name = "add", .path = dir.Path("add.onnx")},
                                {.name = "face", .path = ModelPath(testing::kBlazeFaceFront)}},
                               EngineOptions{.measure_runs = 5});
  ASSERT_TRUE(engine.ok()) << engine.status();
  const auto batching = (*engine)->plan().batching;
  ASSERT_EQ(batching.size(), 1u) << "only the dynamic-batch model is measured";
  EXPECT_EQ(batching[0].model, "add");
  EXPECT_EQ(batching[0].probe_rows, 4);
  EXPECT_GT(batching[0].ms_per_row_at_1, 0);
  EXPECT_GT(batching[0].ms_per_row_at_probe, 0);
  const int chosen = batching[0].max_batch_size;
  EXPECT_TRUE(chosen == 1 || chosen == 8) << chosen;
  EXPECT_EQ(*(*engine)->MaxBatchSize("add"), chosen);
  // The choice bounds requests: one row more than it is refused.
  auto refused =
      (*engine)->Infer("add", {{"x", Tensor::Allocate(DType::kFloat32, {chosen + 1, 16})}});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
  EXPECT_TRUE(
      (*engine)->Infer("add", {{"x", Tensor::Allocate(DType::kFloat32, {chosen, 16})}}).ok());
  EXPECT_NE((*engine)->DescribePlan().find("batching add:"), std::string::npos);
}

TEST(Engine, WarmupInputsAreValidatedAtLoad) {
  ModelConfig config{.name = "face", .path = ModelPath(testing::kBlazeFaceFront)};
  config.warmup_inputs = {{"input:0", Tensor::Allocate(DType::kFloat32, {1, 3, 128, 128})}};
  auto engine = Engine::Create({config});
  ASSERT_FALSE(engine.ok());
  EXPECT_NE(engine.status().message().find("expected [1,128,128,3] f32, got [1,3,128,128] f32"),
            std::string::npos)
      << engine.status();
}

}  // namespace
}  // namespace loom

namespace loom {
namespace {

TEST(Engine, AThrowingCallbackDoesNotStopTheWorkers) {
  testing::ScratchDir dir;
  ASSERT_TRUE(WriteAddModel(dir.Path("add.onnx"), 4).ok());
  auto engine =
      Engine::Create({{.name = "add", .path = dir.Path("add.onnx")}}, EngineOptions{.cores = 1});
  ASSERT_TRUE(engine.ok()) << engine.status();
  std::promise<void> called;
  (*engine)->Submit("add", {{"x", Tensor::Allocate(DType::kFloat32, {1, 4})}}, {},
                    [&](absl::StatusOr<InferResult>) {
                      called.set_value();
                      throw std::runtime_error("careless caller");
                    });
  called.get_future().wait();
  auto after = (*engine)->Infer("add", {{"x", Tensor::Allocate(DType::kFloat32, {1, 4})}});
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->outputs[0].tensor.data_as<float>()[0], 1.0f);
}

}  // namespace
}  // namespace loom

namespace loom {
namespace {

// A test backend: the real Add model, except that a run whose first input value is `kThrow`
// throws (as a careless custom backend might) and one with `kBadShape` returns an output whose
// dim 0 does not follow the batch.
class ThrowingSession final : public Session {
 public:
  explicit ThrowingSession(std::unique_ptr<Session> inner) : inner_(std::move(inner)) {}
  const ModelInfo& info() const override { return inner_->info(); }
  Backend backend() const override { return inner_->backend(); }
  absl::StatusOr<NamedTensors> Run(const NamedTensors& inputs) override {
    const float first = inputs[0].tensor.data_as<float>()[0];
    if (first == kThrow) throw std::runtime_error("custom backend blew up");
    if (first == kBadAlloc) throw std::bad_alloc();
    return inner_->Run(inputs);
  }
  static constexpr float kThrow = 666, kBadAlloc = 777;

 private:
  std::unique_ptr<Session> inner_;
};

ModelConfig ThrowingAdd(const testing::ScratchDir& dir) {
  EXPECT_TRUE(WriteAddModel(dir.Path("add.onnx"), 4).ok());
  ModelConfig config{.name = "add", .path = dir.Path("add.onnx")};
  const std::string path = config.path;
  config.max_batch_size = 1;
  config.session_factory =
      [path](const SessionOptions& options) -> absl::StatusOr<std::unique_ptr<Session>> {
    LOOM_ASSIGN_OR_RETURN(auto inner, CreateSession(path, options));
    return std::unique_ptr<Session>(new ThrowingSession(std::move(inner)));
  };
  return config;
}

Tensor Filled(float value) {
  Tensor t = Tensor::Allocate(DType::kFloat32, {1, 4});
  for (int i = 0; i < 4; ++i) t.data_as<float>()[i] = value;
  return t;
}

TEST(EngineFaults, ABackendThatThrowsFailsItsRequestAndTheEngineGoesOn) {
  testing::ScratchDir dir;
  auto engine = Engine::Create({ThrowingAdd(dir)});
  ASSERT_TRUE(engine.ok()) << engine.status();
  // Inline on the caller (Infer), queued on a worker (Submit), inline in a callback Submit.
  for (const std::string way : {"infer", "submit", "submit-inline"}) {
    SCOPED_TRACE(way);
    auto run = [&](float v) -> absl::StatusOr<InferResult> {
      NamedTensors inputs = {{"x", Filled(v)}};
      if (way == "submit") return (*engine)->Submit("add", std::move(inputs)).get();
      if (way == "infer") return (*engine)->Infer("add", std::move(inputs));
      // Inline if a worker is idle (the last "submit" one may still be in its callback): queued if
      // not.
      auto answer = std::make_shared<std::promise<absl::StatusOr<InferResult>>>();
      (*engine)->Submit(
          "add", std::move(inputs), {.run_inline_when_idle = true},
          [answer](absl::StatusOr<InferResult> r) { answer->set_value(std::move(r)); });
      return answer->get_future().get();
    };
    auto thrown = run(ThrowingSession::kThrow);
    EXPECT_EQ(thrown.status().code(), absl::StatusCode::kInternal);
    EXPECT_EQ(thrown.status().message(), "model 'add': custom backend blew up");
    auto oom = run(ThrowingSession::kBadAlloc);
    EXPECT_EQ(oom.status().code(), absl::StatusCode::kResourceExhausted);
    auto fine = run(1);
    ASSERT_TRUE(fine.ok()) << fine.status();
    EXPECT_EQ(fine->outputs[0].tensor.data_as<float>()[0], 2.0f);
  }
  EXPECT_EQ((*engine)->Stats("add")->failures, 6);
}

TEST(Engine, ACallbackSubmitRunsOnTheCallersThreadOnlyWhenAskedAndAWorkerIsIdle) {
  testing::ScratchDir dir;
  ASSERT_TRUE(WriteAddModel(dir.Path("add.onnx"), 4).ok());
  auto engine = Engine::Create({{.name = "add", .path = dir.Path("add.onnx")}});
  ASSERT_TRUE(engine.ok()) << engine.status();
  for (bool ask : {true, false}) {
    SCOPED_TRACE(ask);
    struct Answer {
      std::thread::id thread;
      float value;
      bool inside_submit;  // answered before Submit returned
    };
    std::promise<Answer> answered;
    std::atomic<bool> submit_returned{false};
    (*engine)->Submit(
        "add", {{"x", Filled(2)}}, {.run_inline_when_idle = ask},
        [&](absl::StatusOr<InferResult> r) {
          answered.set_value({std::this_thread::get_id(),
                              r.ok() ? r->outputs[0].tensor.data_as<float>()[0] : -1.0f,
                              !submit_returned.load()});
        });
    submit_returned = true;
    const Answer answer = answered.get_future().get();
    // Nothing else runs: a worker is idle, so an inline answer came on this thread, inside Submit.
    if (ask) {
      EXPECT_TRUE(answer.inside_submit);
    }
    EXPECT_EQ(answer.thread == std::this_thread::get_id(), ask);
    EXPECT_EQ(answer.value, 3.0f);  // x + 1
  }
}

TEST(EngineFaults, ASessionFactoryThatThrowsIsALoadError) {
  testing::ScratchDir dir;
  ModelConfig config = ThrowingAdd(dir);
  config.session_factory = [](const SessionOptions&) -> absl::StatusOr<std::unique_ptr<Session>> {
    throw std::runtime_error("no sessions today");
  };
  auto engine = Engine::Create({config});
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().message(), "model 'add': making a session threw: no sessions today");
}

TEST(EngineFaults, ACallbackMayCallInferStatsAndShutdownButNotWhatWaitsForWorkers) {
  testing::ScratchDir dir;
  ASSERT_TRUE(WriteAddModel(dir.Path("add.onnx"), 4).ok());
  for (int cores : {1, 2}) {  // one worker, and two (the callback's worker joins no one)
    SCOPED_TRACE(cores);
    auto engine = Engine::Create({{.name = "add", .path = dir.Path("add.onnx")}},
                                 EngineOptions{.cores = std::min<int>(cores, UsableCpus().size())});
    ASSERT_TRUE(engine.ok()) << engine.status();
    std::promise<absl::StatusOr<InferResult>> nested;
    std::promise<int64_t> requests;
    std::promise<void> shut;
    std::promise<std::vector<absl::Status>> waiting;  // the calls that wait for workers
    (*engine)->Submit("add", {{"x", Filled(1)}}, {}, [&](absl::StatusOr<InferResult>) {
      nested.set_value((*engine)->Infer("add", {{"x", Filled(10)}}));
      requests.set_value((*engine)->Stats("add")->requests);
      waiting.set_value({(*engine)->AddModel({.name = "more", .path = dir.Path("add.onnx")}),
                         (*engine)->RemoveModel("add"), (*engine)->LeaseCores().status()});
      (*engine)->Shutdown();
      shut.set_value();
    });
    shut.get_future().get();
    auto r = nested.get_future().get();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->outputs[0].tensor.data_as<float>()[0], 11.0f);
    EXPECT_EQ(requests.get_future().get(), 2);
    for (const absl::Status& s : waiting.get_future().get()) {
      EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
      EXPECT_NE(s.message().find("from inside a completion callback"), std::string::npos) << s;
    }
    EXPECT_EQ((*engine)->ModelNames(), std::vector<std::string>{"add"}) << "nothing changed";
    EXPECT_EQ((*engine)->Infer("add", {{"x", Filled(1)}}).status().code(),
              absl::StatusCode::kUnavailable);
    engine->reset();  // joins every worker; none joins itself
  }
}

TEST(EngineLimits, SizesFromOutsideAreCheckedBeforeAnythingIsComputed) {
  testing::ScratchDir dir;
  ASSERT_TRUE(WriteAddModel(dir.Path("add.onnx"), 0).ok());  // [batch, width], both dynamic
  EngineOptions options;
  options.limits.max_elements = 1000;
  options.max_request_bytes = 2000;
  ModelConfig config{.name = "add", .path = dir.Path("add.onnx")};
  config.max_batch_size = 4;
  auto engine = Engine::Create({config}, options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  // A borrowed tensor claiming an absurd shape: refused from its shape alone, never read.
  float one = 1;
  auto huge = (*engine)->Infer(
      "add", {{"x", Tensor::Borrow(DType::kFloat32, {1, int64_t{1} << 40}, &one)}});
  EXPECT_EQ(huge.status().message(),
            "model 'add' input 'x': tensor [1,1099511627776] f32 has 1.1e+12 elements, over the "
            "limit of 1000 per tensor (max_elements)");
  auto overflow = (*engine)->Infer(
      "add", {{"x", Tensor::Borrow(DType::kFloat32, {int64_t{1} << 40, int64_t{1} << 40}, &one)}});
  EXPECT_EQ(overflow.status().code(), absl::StatusCode::kInvalidArgument);
  auto negative = (*engine)->Infer("add", {{"x", Tensor::Borrow(DType::kFloat32, {1, -4}, &one)}});
  EXPECT_EQ(negative.status().message(),
            "model 'add' input 'x': tensor [1,-4] f32 has a negative dim");
  auto bytes = (*engine)->Infer("add", {{"x", Tensor::Allocate(DType::kFloat32, {1, 600})}});
  EXPECT_EQ(bytes.status().message(),
            "model 'add': the request carries 2400 bytes of input, over the limit of 2000 "
            "(max_request_bytes)");
  auto rows = (*engine)->Infer("add", {{"x", Tensor::Allocate(DType::kFloat32, {5, 2})}});
  EXPECT_EQ(rows.status().message(),
            "model 'add': the request has 5 rows, more than the model's max_batch_size 4 (split "
            "it, or raise max_batch_size)");
  EXPECT_TRUE((*engine)->Infer("add", {{"x", Tensor::Allocate(DType::kFloat32, {4, 2})}}).ok());
  EXPECT_EQ((*engine)->Stats("add")->rejected, 5);
}

TEST(EngineLimits, ConfiguredNumbersAreBounded) {
  testing::ScratchDir dir;
  ASSERT_TRUE(WriteAddModel(dir.Path("add.onnx"), 4).ok());
  auto with = [&](auto change) {
    ModelConfig config{.name = "add", .path = dir.Path("add.onnx")};
    change(config);
    return Engine::Create({config}).status();
  };
  EXPECT_EQ(with([](ModelConfig& c) { c.instances = 1 << 30; }).message(),
            "model 'add': instances must be in [1, 4096], got 1073741824");
  EXPECT_EQ(with([](ModelConfig& c) {
              c.instances = 65536;
              c.threads = 65536;
            }).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(with([](ModelConfig& c) { c.queue_capacity = 0; }).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(with([](ModelConfig& c) { c.max_queue_delay_us = INT64_MAX; }).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(with([](ModelConfig& c) { c.default_timeout_us = INT64_MAX; }).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(with([](ModelConfig& c) { c.max_batch_size = 1 << 30; }).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(with([](ModelConfig& c) { c.weight = -1; }).code(), absl::StatusCode::kInvalidArgument);
  // Deadlines near the end of time saturate instead of wrapping.
  ModelConfig config{.name = "add", .path = dir.Path("add.onnx")};
  config.default_timeout_us = int64_t{3600} * 1'000'000;
  auto engine = Engine::Create({config});
  ASSERT_TRUE(engine.ok());
  SubmitOptions far{.deadline = std::chrono::steady_clock::time_point::max()};
  EXPECT_TRUE((*engine)->Infer("add", {{"x", Filled(1)}}, far).ok());
}

}  // namespace
}  // namespace loom
